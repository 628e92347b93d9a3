"""How REALM scales over processes (torch.distributed): REALM steps/s and the index build with 1 process against
N data-parallel ranks, each rank given an equal part of the machine's cores.

    python bench/data_parallel.py                       # the shipped model (world-cpu), 1 and 2 processes
    python bench/data_parallel.py --ranks 1 2 4         # on a machine with more cores
    python bench/data_parallel.py --quick               # the quick preset from scratch, a few steps: a smoke run
    python bench/data_parallel.py --device cuda         # one GPU a rank (NCCL): --ranks up to the GPU count

Each setting starts `ranks` fresh processes (torch.multiprocessing, a gloo group on CPUs, NCCL on GPUs), each
loading the same model (`--model`, default the shipped world-cpu: 2,002 blocks) and recipe (`cpu`: k = 8, batch
16, both towers trained, the reader frozen), then timing, between barriers:

  index build   every rank embeds its 1/N of the blocks (refresh.build_sharded): what a synchronous refresh costs
  REALM steps   `--steps` steps after `--warmup` untimed ones, as train_realm takes them: each rank its share of the
                same global batch of 16, DistributedDataParallel averaging the gradients, the index sharded and
                searched together (ShardedIndex: the ranks' queries gathered, each shard's top k, merged)
                once for each of `--refresh`: "none" (the starting index throughout), "sync" (every
                `--refresh-every` steps each rank re-embeds its shard between steps) and "async" (each rank's
                builder process re-embeds its shard, one thread, while the ranks train on; all swap together)

On a CPU the rows are (ranks x threads a rank): 1 x 1, 1 x all cores, and N x cores/N for each N > 1, so that a
process's gain over one thread and the gain of processes over threads are told apart. Columns:

  landed        refreshes swapped in during the window (async: one still building at the end does not count)
  steps/s       timed REALM steps over the window's wall time (rank 0's clock, ranks started together)
  speed-up      steps/s over the 1-process row with all the cores and the same refresh (on GPUs: over 1 rank)
  efficiency    speed-up / ranks (on a CPU the cores are shared: 1 x all cores uses them all too)
  build s       the sharded index build, the slowest rank's time; its speed-up over 1 process
  comm ms       a step's collectives measured alone: DDP's gradient all-reduce (the trained parameters) and the
                search's gathers, timed as the step would issue them, without the compute

A speed-up below the cores' ratio is what a small model on shared cores shows: 2 CPU processes share one memory
bus and a machine's 2 cores, so this measures torch.distributed's overhead and the data-parallel split, not GPU
scaling (where each rank has its own device and the all-reduce is NVLink's). Prints a table and writes JSON
(default bench/results/data_parallel-<tag>.json). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, also when loaded by path (tests)
from common import device_arg, machine, sync, write  # noqa: E402


def _parts(args, device, rank: int):
    """(cfg, model, blocks, tokenizer, world) that every rank starts from."""
    from realm_lite.config import get_config

    if args.quick:
        from realm_lite.corpus import prepare_corpus
        from realm_lite.realm import Realm

        cfg = get_config("quick")
        prep = prepare_corpus("world", cfg, Path(args.tmp) / f"corpus-{rank}")  # the same on every rank
        torch.manual_seed(cfg.seed)
        return cfg, Realm(cfg, len(prep.tokenizer)).to(device), prep.blocks, prep.tokenizer, prep.world
    from realm_lite.export import load_pretrained

    pre = load_pretrained(args.model, device)
    return pre.cfg, pre.model, pre.blocks, pre.tokenizer, pre.world


def _worker(rank: int, ranks: int, threads: int, args, result_path: str) -> None:
    """One rank of a setting: join the group, time the sharded index build, the collectives and REALM steps."""
    import torch.distributed as td

    from realm_lite.distributed import Dist, barrier
    from realm_lite.pretrain import freeze_untrained
    from realm_lite.queries import QueryPool
    from realm_lite.realm import BlockInputs
    from realm_lite.refresh import build_sharded

    torch.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    if ranks > 1:
        td.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{args.rdzv}",
                              rank=rank, world_size=ranks)
    dist = Dist(rank, ranks, rank, device)
    try:
        cfg, model, blocks, tokenizer, world = _parts(args, device, rank)
        cfg = cfg.replace(progress=False, log_every=10 ** 9)
        pool, inputs = QueryPool(blocks, tokenizer, cfg, world), BlockInputs(blocks, tokenizer, cfg.block_len)
        model.train()

        barrier(dist)
        t0 = time.perf_counter()
        index = build_sharded(model.retriever.embed_doc, blocks, tokenizer, cfg, device, dist)
        sync(device)
        build = time.perf_counter() - t0
        build = _slowest(build, dist)

        with freeze_untrained(model, cfg):
            comm = _collectives(model, index, cfg, dist, device)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        windows = []
        for mode in args.refresh:
            model.load_state_dict(state)  # every window from the same weights and index
            windows.append(_window(model, pool, inputs, blocks, tokenizer, cfg, dist, device, args, mode, index))
        if rank == 0:
            Path(result_path).write_text(json.dumps([{
                "ranks": ranks, "threads_per_rank": threads, **w, "build_seconds": round(build, 3), **comm,
                "blocks": len(blocks), "k": cfg.k, "batch_size": cfg.batch_size, "preset": cfg.preset}
                for w in windows]))
    finally:
        if ranks > 1:
            td.destroy_process_group()


def _window(model, pool, inputs, blocks, tokenizer, cfg, dist, device, args, mode: str, index) -> dict:
    """`args.steps` timed REALM steps after `args.warmup`, as train_realm takes them, with the index refreshed every
    `args.refresh_every` steps `mode` ("none", "sync": each rank re-embeds its shard between steps, "async": each
    rank's builder process does, while training goes on)."""
    from realm_lite.distributed import barrier, data_parallel, my_share
    from realm_lite.pretrain import autocast, freeze_untrained
    from realm_lite.realm import realm_loss
    from realm_lite.refresh import IndexRefresher
    from realm_lite.training import Loop

    params = [{"params": model.retriever.parameters(), "lr": cfg.retriever_lr},
              {"params": model.reader.parameters(), "lr": cfg.reader_lr}]
    loop = Loop("realm", args.warmup + args.steps, params, cfg, weight_decay=cfg.weight_decay,
                warmup=cfg.warmup_steps, clip=cfg.clip_norm, rng=random.Random(cfg.seed), device=device,
                log=lambda s: None)
    refresher = None
    if mode != "none":
        refresher = IndexRefresher(blocks, tokenizer, cfg.replace(builder_threads=1),
                                   Path(args.tmp) / f"{mode}-{dist.rank}", mode=mode, device=device,
                                   log=lambda s: None, dist=dist)
        refresher.adopt(getattr(index, "local", index), 0)
    try:
        with freeze_untrained(model, cfg):
            step_loss = data_parallel(model, realm_loss, dist)
            for step in loop:
                t = step - 1 - args.warmup  # updates in the timed window so far (negative: untimed)
                if t == 0:
                    sync(device)
                    barrier(dist)
                    t0 = time.perf_counter()
                if refresher is not None and t >= 0:
                    if t > 0 and t % args.refresh_every == 0:
                        refresher.request(model.retriever.embed_doc, t)
                    refresher.poll(t)
                    index = refresher.index
                queries, share = my_share(pool.sample(loop.rng, cfg.batch_size), dist)
                with autocast(cfg, device):
                    out = step_loss(queries, index, inputs, cfg.k, device)
                loop.opt.zero_grad(set_to_none=True)
                loop.backward(out["loss"] * (dist.world * share))
                loop.step()
                loop.record(loss=out["loss"].detach())  # the loop's last row averages it
            sync(device)
            barrier(dist)
            seconds = time.perf_counter() - t0
    finally:
        if refresher is not None:
            refresher.close()
    landed = refresher.refreshes if refresher is not None else 0  # adopt() does not count, each swap does
    return {"refresh": mode, "refresh_every": args.refresh_every if mode != "none" else None, "steps": args.steps,
            "seconds": round(seconds, 3), "steps_per_s": round(args.steps / seconds, 3), "landed": landed,
            "failures": refresher.failures if refresher is not None else 0}


def _slowest(seconds: float, dist) -> float:
    """The largest of the ranks' times (the others wait for it)."""
    if dist.world == 1:
        return seconds
    import torch.distributed as td

    t = torch.tensor([seconds], dtype=torch.float64, device=dist.device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return t.item()


def _collectives(model, index, cfg, dist, device, repeats: int = 20) -> dict:
    """Milliseconds of a step's collectives alone: the all-reduce of the trained parameters' gradients (DDP's
    buckets, here one flat tensor) and a search of this rank's share of the batch (the gathers with each shard's
    top k)."""
    if dist.world == 1:
        return {"allreduce_ms": 0.0, "search_ms": None, "grad_mib": None}
    import torch.distributed as td

    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flat = torch.zeros(numel, device=device)
    q = torch.randn(max(1, cfg.batch_size // dist.world), index.dim, device=device)

    def timed(fn) -> float:
        fn()
        sync(device)
        td.barrier()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
        return 1000 * (time.perf_counter() - t0) / repeats

    return {"allreduce_ms": round(timed(lambda: td.all_reduce(flat)), 2),
            "search_ms": round(timed(lambda: index.search(q, cfg.k - 1)), 2),
            "grad_mib": round(numel * 4 / 2 ** 20, 2)}


def settings(ranks: list[int], cpus: int, device: torch.device) -> list[tuple[int, int]]:
    """(ranks, threads a rank): on a CPU 1 x 1, 1 x cpus and N x cpus // N; on GPUs N x 1 for each N."""
    if device.type == "cuda":
        return [(n, 1) for n in ranks]
    out = [(1, 1), (1, cpus)] if cpus > 1 else [(1, 1)]
    return out + [(n, max(1, cpus // n)) for n in ranks if n > 1]


def table(rows: list[dict]) -> str:
    lines = [f"{'ranks':>6}{'threads':>8}{'refresh':>8}{'landed':>7}{'steps/s':>9}{'speed-up':>9}{'efficiency':>11}"
             f"{'build s':>9}{'speed-up':>9}{'all-reduce ms':>14}{'search ms':>10}"]
    for r in rows:
        lines.append(f"{r['ranks']:>6}{r['threads_per_rank']:>8}{r['refresh']:>8}{r['landed']:>7}"
                     f"{r['steps_per_s']:>9.3f}{r['speedup']:>9.2f}"
                     f"{r['efficiency']:>11.2f}{r['build_seconds']:>9.2f}{r['build_speedup']:>9.2f}"
                     f"{r['allreduce_ms']:>14.2f}{'-' if r['search_ms'] is None else format(r['search_ms'], '.2f'):>10}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-cpu", help="a shipped model, export or run directory (default world-cpu)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[2], help="numbers of processes beside 1 (default 2)")
    ap.add_argument("--steps", type=int, default=60, help="timed REALM steps per setting (default 60)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each window (default 3)")
    ap.add_argument("--refresh", nargs="+", default=["none", "sync", "async"], choices=["none", "sync", "async"],
                    help="how the index is refreshed in each window (default: none sync async)")
    ap.add_argument("--refresh-every", type=int, default=20, help="steps between refreshes (default 20)")
    ap.add_argument("--quick", action="store_true", help="the quick preset from scratch, 4 steps")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (one GPU a rank)")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    if args.quick:
        args.steps, args.warmup, args.refresh_every = min(args.steps, 4), min(args.warmup, 1), min(args.refresh_every, 2)
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit("--steps: 1 or more; --warmup: 0 or more")
    if not 1 <= args.refresh_every < args.steps and set(args.refresh) != {"none"}:
        raise SystemExit(f"--refresh-every {args.refresh_every}: 1 or more and less than --steps {args.steps}")
    if any(n < 1 for n in args.ranks):
        raise SystemExit(f"--ranks {args.ranks}: each 1 or more")
    if device.type == "cuda" and max(args.ranks) > torch.cuda.device_count():
        raise SystemExit(f"--ranks {max(args.ranks)}: torch sees {torch.cuda.device_count()} GPU(s)")
    if not args.quick:
        from realm_lite.export import resolve

        try:
            resolve(args.model)
        except FileNotFoundError as e:
            raise SystemExit(f"--model {args.model}: {e}") from None
    import torch.multiprocessing as mp

    cpus = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="data_parallel-") as tmp:
        args.tmp = tmp
        for i, (ranks, threads) in enumerate(settings(sorted(set(args.ranks)), cpus, device)):
            args.rdzv = str(Path(tmp) / f"rdzv-{i}")
            result = Path(tmp) / f"result-{i}.json"
            mp.spawn(_worker, args=(ranks, threads, args, str(result)), nprocs=ranks, join=True)
            rows += json.loads(result.read_text())
            for r in rows[-len(args.refresh):]:
                print(f"  {ranks} rank(s) x {threads} thread(s), refresh {r['refresh']}: {r['steps_per_s']:.3f} "
                      f"steps/s, index build {r['build_seconds']:.2f} s", flush=True)
    for r in rows:
        base = next(b for b in rows if b["ranks"] == 1 and b["refresh"] == r["refresh"]
                    and (device.type == "cuda" or b["threads_per_rank"] == cpus))
        r["speedup"] = round(r["steps_per_s"] / base["steps_per_s"], 3)
        r["efficiency"] = round(r["speedup"] / r["ranks"], 3)
        r["build_speedup"] = round(base["build_seconds"] / r["build_seconds"], 3)
    info = {**machine(device), "threads": None, "model": "quick preset, from scratch" if args.quick else args.model,
            "steps": args.steps, "warmup": args.warmup, "refresh_every": args.refresh_every, "rows": rows}
    where = info.get("gpu") or f"{info['cpu']} ({info['cpu_capability']})"
    print(f"\n{where}, {cpus} logical CPUs, torch {info['torch']}; {info['model']}: {rows[0]['blocks']} blocks, "
          f"k {rows[0]['k']}, global batch {rows[0]['batch_size']}, {args.steps} steps after {args.warmup} untimed, "
          f"a refresh every {args.refresh_every}")
    print(table(rows))
    write("data_parallel", info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
