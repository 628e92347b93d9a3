"""How much of the index refresh the asynchronous builder hides (paper 3.3): REALM steps/s with no refresh, with
refreshes built inside the training loop, and with refreshes built by a separate process while training goes on.

    python bench/refresh_hidden.py                      # the shipped model (world-cpu): about 15 min on 2 cores
    python bench/refresh_hidden.py --refresh-every 50   # fewer refreshes in the window
    python bench/refresh_hidden.py --quick              # the quick preset from scratch, 6 steps: a smoke run
    python bench/refresh_hidden.py --device cuda        # the builder then embeds the corpus on the GPU too

REALM trains while an index builder re-embeds every block z with a snapshot of Embed_doc; meanwhile training
retrieves from the stale index. From the shipped trained model (`--model`; its corpus of 2,002 blocks), with the
`cpu` recipe (reader frozen and in eval mode, both towers trained, k = 8, batch 16, AdamW with its schedule and
clipping, as realm_lite.pretrain.train_realm takes its steps, but without checkpoints), it times `--steps` steps
after `--warmup` untimed ones, requesting a refresh every `--refresh-every` steps, in these settings:

  none   no refresh: the index built from the starting weights serves every step
  sync   IndexRefresher(mode="sync"): each request re-embeds every block inside the loop
  async  IndexRefresher(mode="async"): each request snapshots Embed_doc and hands it to the builder process
         (started at the first request with the corpus tokenized once, kept alive; `--builder-threads` torch
         threads); requests made while it builds are skipped; each step polls for a finished index

async runs twice: the trainer with torch's default threads (all cores), and with one core fewer, left to the
builder (when there is more than one); `none` is also timed at that thread count, for reference. Each row is one
timed run (the refreshes make the whole window the unit, so there is no best-of), each setting starting from the
same weights and the same starting index. Columns:

  steps/s      timed steps over the window's wall time (perf_counter; a GPU waited for at the end)
  requests     refresh requests in the window (steps t > 0 with t % refresh_every == 0)
  started      builds started (async: requests made while a builder was running are skipped)
  landed       new indexes swapped in during the window (an async build still running at the end does not count)
  build s      mean seconds of a build: sync, inside the loop; async, from the request to the swap
  stale        mean staleness: steps between the snapshot that built the index in use and the step using it
  hidden       (t_sync - t_async) / (t_sync - t_none), with t_none and t_sync at torch's default threads: 1 = the
               refresh cost the trainer nothing, 0 = as much as building it in the loop. Printed clipped to
               [0, 1]; the JSON keeps the raw value (below 0: async slower than sync, above 1: faster than none)
  peak MiB     the trainer's peak memory (common.PeakMemory; on a CPU the process's high-water mark so far). The
               builder is another process, so its memory is not in this figure: `builder MiB` is the largest
               resident-set high-water mark of a builder (VmHWM, read each step while one runs; Linux only), host
               memory only: on a GPU the builder's device memory is not measured

Also printed: what the result implies at the cpu preset's own refresh_every (100): a sync refresh costs the trainer
(t_sync - t_none) / landed seconds, an async one (t_async - t_none) / started; at refresh_every R the slowdown is
that cost over R steps of `none`, and the fraction hidden per refresh stays the same while a build lands within R
steps. A time ratio has no FLOP or byte count, so no figure is read against bench/machine_limit.py here.

With --device cuda the trainer and the builder both run on the GPU (IndexRefresher passes its device to the
builder, which loads the snapshot there, embeds and saves the index; the trainer loads it onto the device).

Prints a table and writes JSON (default bench/results/refresh_hidden-<tag>.json). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, also when loaded by path (tests)
from common import PeakMemory, device_arg, machine, sync, write  # noqa: E402

PRESET_REFRESH = 100  # the cpu preset's refresh_every


class Parts:
    """The model, its corpus, training queries, starting index and config that every setting starts from."""

    def __init__(self, args, device):
        from realm_lite.config import get_config
        from realm_lite.queries import QueryPool
        from realm_lite.realm import BlockInputs, Realm
        from realm_lite.refresh import build_index

        if args.quick:
            from realm_lite.corpus import prepare_corpus

            cfg = get_config("quick")
            self.tmp = tempfile.TemporaryDirectory(prefix="refresh_hidden-")
            prep = prepare_corpus("world", cfg, self.tmp.name)
            self.blocks, self.tokenizer, world = prep.blocks, prep.tokenizer, prep.world
            torch.manual_seed(cfg.seed)
            self.model = Realm(cfg, len(self.tokenizer)).to(device)
            self.index = build_index(self.model.retriever.embed_doc, self.blocks, self.tokenizer, cfg, device)
            self.source = "quick preset, from scratch"
        else:
            from realm_lite.export import load_pretrained

            pre = load_pretrained(args.model, device)
            cfg, self.model, self.blocks, self.tokenizer, world, self.index = (
                pre.cfg, pre.model, pre.blocks, pre.tokenizer, pre.world, pre.index)
            self.source = f"{args.model} (weights after REALM)"
        self.cfg = cfg.replace(progress=False, log_every=10 ** 9, builder_threads=args.builder_threads)
        if self.cfg.retriever_lr == 0:
            raise SystemExit(f"{self.source}: retriever_lr is 0, Embed_doc never changes and no refresh is needed")
        self.pool = QueryPool(self.blocks, self.tokenizer, self.cfg, world)
        self.inputs = BlockInputs(self.blocks, self.tokenizer, self.cfg.block_len)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.device = device


def run_setting(parts: Parts, mode: str, steps: int, refresh_every: int, warmup: int, trainer_threads: int) -> dict:
    """One timed window of REALM steps with refreshes built `mode` ("none", "sync", "async"); its counts."""
    from realm_lite.pretrain import autocast, freeze_untrained
    from realm_lite.realm import realm_loss
    from realm_lite.refresh import IndexRefresher
    from realm_lite.training import Loop, scalars

    cfg, device, model = parts.cfg, parts.device, parts.model
    before = torch.get_num_threads()
    torch.set_num_threads(trainer_threads)
    model.load_state_dict(parts.state)
    model.train()
    params = [{"params": model.retriever.parameters(), "lr": cfg.retriever_lr},
              {"params": model.reader.parameters(), "lr": cfg.reader_lr}]
    loop = Loop("realm", warmup + steps, params, cfg, weight_decay=cfg.weight_decay, warmup=cfg.warmup_steps,
                clip=cfg.clip_norm, rng=random.Random(cfg.seed), device=device, log=lambda s: None)
    messages = []
    tmp = tempfile.TemporaryDirectory(prefix="refresh_hidden-run-")
    refresher = None
    if mode != "none":
        refresher = IndexRefresher(parts.blocks, parts.tokenizer, cfg, tmp.name, mode=mode, device=device,
                                   log=messages.append)
    requests = started = 0
    build_seconds, build_steps, stale, requested_at = [], [], [], None
    index, index_step, builder_kib = parts.index, 0, 0
    try:
        with freeze_untrained(model, cfg), PeakMemory(device) as mem:
            t0 = None
            for step in loop:
                t = step - 1 - warmup  # updates so far in the timed window (negative: untimed warm-up)
                if t == 0:
                    if refresher is not None:
                        refresher.adopt(parts.index, 0)
                    sync(device)
                    t0 = time.perf_counter()
                if refresher is not None and t >= 0:
                    if t % refresh_every == 0 and t > 0:
                        requests += 1
                        if not refresher.busy:
                            started += 1
                            r0 = time.perf_counter()
                            refresher.request(model.retriever.embed_doc, t)  # snapshot of Embed_doc after t updates
                            if mode == "sync":
                                build_seconds.append(time.perf_counter() - r0)
                            else:
                                requested_at = (r0, t)
                    if refresher.busy:  # the builder's high-water mark so far (Linux), before it can exit
                        builder_kib = max(builder_kib, _hwm_kib(refresher._proc.pid))
                    if refresher.poll(t):  # an async build landed
                        build_seconds.append(time.perf_counter() - requested_at[0])
                        build_steps.append(t - requested_at[1])
                    index, index_step = refresher.index, refresher.index_step
                queries = parts.pool.sample(loop.rng, cfg.batch_size)
                with autocast(cfg, device):
                    out = realm_loss(model, queries, index, parts.inputs, cfg.k, device)
                loop.opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                loop.step()
                loop.record(**scalars(out), staleness=t - index_step)  # as train_realm logs (one sync per step)
                if t >= 0:
                    stale.append(t - index_step)
            sync(device)
            seconds = time.perf_counter() - t0
        in_flight = refresher is not None and refresher.busy
    finally:
        if refresher is not None:
            refresher.close()  # a builder still running is killed (and waited for)
        tmp.cleanup()
        torch.set_num_threads(before)
    landed = refresher.refreshes if refresher is not None else 0  # adopt() does not count, each swap does
    builder_mib = round(builder_kib / 1024, 1) if builder_kib else None
    return {"mode": mode, "trainer_threads": trainer_threads,
            "builder_threads": {"none": None, "sync": trainer_threads, "async": cfg.builder_threads}[mode],
            "cpus": os.cpu_count(), "steps": steps, "refresh_every": refresh_every,
            "seconds": round(seconds, 3), "steps_per_s": round(steps / seconds, 3),
            "requests": requests, "started": started, "skipped_busy": requests - started, "landed": landed,
            "in_flight_at_end": in_flight, "failures": refresher.failures if refresher is not None else 0,
            "failure_messages": messages,
            "mean_build_seconds": round(sum(build_seconds) / len(build_seconds), 3) if build_seconds else None,
            "mean_build_steps": round(sum(build_steps) / len(build_steps), 2) if build_steps else None,
            "mean_staleness": round(sum(stale) / len(stale), 2), "max_staleness": max(stale),
            "peak_mib": mem.mib, "builder_peak_mib": builder_mib}


def _hwm_kib(pid: int) -> int:
    """A process's resident-set high-water mark in KiB (VmHWM of /proc/<pid>/status; 0 where unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def summarize(rows: list[dict], default_threads: int, steps: int) -> dict:
    """The fraction hidden of each async row (raw), and what the rows imply at refresh_every = 100."""
    def pick(mode, threads):
        return next((r for r in rows if r["mode"] == mode and r["trainer_threads"] == threads), None)

    none, sync_row = pick("none", default_threads), pick("sync", default_threads)
    t_none, t_sync = none["seconds"], sync_row["seconds"]
    cost_sync = (t_sync - t_none) / sync_row["landed"] if sync_row["landed"] else None  # s per refresh
    step_s = t_none / steps
    out = {"t_none": t_none, "t_sync": t_sync, "sync_seconds_per_refresh": _round(cost_sync),
           "at_refresh_every": PRESET_REFRESH,
           "sync_slowdown_at_preset": _round(cost_sync / (PRESET_REFRESH * step_s)) if cost_sync is not None else None,
           "async": []}
    for r in rows:
        if r["mode"] != "async":
            continue
        hidden = (t_sync - r["seconds"]) / (t_sync - t_none) if t_sync != t_none else None
        r["fraction_hidden"] = _round(hidden)
        cost = (r["seconds"] - t_none) / r["started"] if r["started"] else None  # s per build, to the trainer
        per_build = 1 - cost / cost_sync if cost is not None and cost_sync else None
        lands_in_time = None if r["mean_build_steps"] is None else r["mean_build_steps"] < PRESET_REFRESH
        out["async"].append({"trainer_threads": r["trainer_threads"], "builder_threads": r["builder_threads"],
                             "fraction_hidden": _round(hidden), "seconds_per_build": _round(cost),
                             "fraction_hidden_per_build": _round(per_build),
                             "slowdown_at_preset": _round(cost / (PRESET_REFRESH * step_s)) if cost is not None
                             else None, "lands_within_preset_interval": lands_in_time})
    return out


def _round(x, nd: int = 4):
    return None if x is None else round(x, nd)


def _clip(x):
    return None if x is None else min(1.0, max(0.0, x))


def table(rows: list[dict]) -> str:
    head = (f"{'mode':<7}{'trainer':>8}{'builder':>8}{'steps/s':>9}{'requests':>9}{'started':>8}{'landed':>7}"
            f"{'build s':>8}{'stale':>7}{'hidden':>8}{'peak MiB':>9}{'builder MiB':>12}")
    lines = [head]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for r in rows:
        hidden = _clip(r.get("fraction_hidden"))
        lines.append(f"{r['mode']:<7}{r['trainer_threads']:>8}{fmt(r['builder_threads'], 'd'):>8}"
                     f"{r['steps_per_s']:>9.3f}{r['requests']:>9}{r['started']:>8}{r['landed']:>7}"
                     f"{fmt(r['mean_build_seconds'], '.2f'):>8}{r['mean_staleness']:>7.1f}"
                     f"{fmt(None if hidden is None else 100 * hidden, '.0f') + ('%' if hidden is not None else ''):>8}"
                     f"{fmt(r['peak_mib'], '.0f'):>9}{fmt(r['builder_peak_mib'], '.0f'):>12}")
    return "\n".join(lines)


def notes(summary: dict, rows: list[dict], cpus: int, default_threads: int) -> str:
    """What the rows imply at the preset's refresh_every, and what the >= 80% target asks of the machine."""
    s = summary
    out = []
    if s["sync_seconds_per_refresh"] is not None:
        out.append(f"a sync refresh costs the trainer {s['sync_seconds_per_refresh']:.2f} s; at refresh_every "
                   f"{PRESET_REFRESH} (the cpu preset's) sync is {100 * s['sync_slowdown_at_preset']:.1f}% slower "
                   f"than no refresh")
    for a in s["async"]:
        if a["seconds_per_build"] is None:
            out.append(f"async, trainer {a['trainer_threads']} threads: no build started in the window")
            continue
        fh = a["fraction_hidden_per_build"]
        out.append(f"async, trainer {a['trainer_threads']} + builder {a['builder_threads']} threads: "
                   f"{a['seconds_per_build']:.2f} s per build to the trainer; at refresh_every {PRESET_REFRESH}: "
                   f"{100 * a['slowdown_at_preset']:.1f}% slower than no refresh, "
                   + (f"{100 * _clip(fh):.0f}% hidden per refresh" if fh is not None else "hidden: -")
                   + {True: "", None: " (no build landed in the window: its build time is unknown)",
                      False: f" (but builds took {PRESET_REFRESH} steps or more: requests would be skipped)"}[
                       a["lands_within_preset_interval"]])
    spare = next((r for r in rows if r["mode"] == "none" and r["trainer_threads"] != default_threads), None)
    base = next(r for r in rows if r["mode"] == "none" and r["trainer_threads"] == default_threads)
    builder = next(r["builder_threads"] for r in rows if r["mode"] == "async")
    out.append(f"the >= 80% hidden target applies to a machine with cores to spare: the builder's {builder} "
               f"thread{'s' if builder > 1 else ''} on cores the trainer does not use. This machine has {cpus} "
               f"logical CPU{'s' if cpus > 1 else ''}:")
    if cpus <= 2:
        out.append("  with the trainer on all of them the builder takes its core time from the trainer, so only the "
                   "cores' idle moments (Python between operators, serial work) hide it;")
    if spare is not None:
        loss = 1 - spare["steps_per_s"] / base["steps_per_s"]
        if loss > 0:
            out.append(f"  giving the builder a core costs the trainer itself {100 * loss:.0f}% of its steps/s "
                       f"without any refresh ({spare['trainer_threads']} against {default_threads} threads), a cost "
                       f"paid at every step, which only refreshes costlier than that repay.")
        else:
            out.append(f"  the trainer is {100 * -loss:.0f}% faster on {spare['trainer_threads']} than on "
                       f"{default_threads} threads without any refresh: giving the builder a core costs it nothing.")
    out.append("peak MiB is the trainer's alone: the builder process's memory is not in it (builder MiB: its host "
               "memory, VmHWM on Linux; its GPU memory is not measured).")
    return "\n".join(textwrap.fill(line, 118, subsequent_indent="    ") for line in out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-cpu", help="a shipped model, export or run directory (default world-cpu)")
    ap.add_argument("--steps", type=int, default=200, help="timed REALM steps per setting (default 200)")
    ap.add_argument("--refresh-every", type=int, default=25, help="steps between refresh requests (default 25)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each window (default 2)")
    ap.add_argument("--builder-threads", type=int, default=1, help="torch threads of the builder process (default 1)")
    ap.add_argument("--quick", action="store_true", help="the quick preset from scratch, 6 steps, a refresh every 2")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    if args.quick:
        args.steps, args.refresh_every = min(args.steps, 6), min(args.refresh_every, 2)
        args.warmup = min(args.warmup, 1)
    for name in ("steps", "refresh_every", "builder_threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: 1 or more")
    if args.warmup < 0:
        raise SystemExit(f"--warmup {args.warmup}: 0 or more")
    if args.refresh_every >= args.steps:
        raise SystemExit(f"--refresh-every {args.refresh_every}: less than --steps {args.steps}, so that a refresh "
                         f"falls in the window")
    if not args.quick:
        from realm_lite.export import resolve

        try:
            resolve(args.model)
        except FileNotFoundError as e:
            raise SystemExit(f"--model {args.model}: {e}") from None

    parts = Parts(args, device)
    cpus, default_threads = os.cpu_count() or 1, torch.get_num_threads()
    settings = [("none", default_threads), ("sync", default_threads), ("async", default_threads)]
    fewer = cpus - 1 if cpus > 1 else None
    if fewer is not None and fewer != default_threads:
        settings += [("none", fewer), ("async", fewer)]
    print(f"{parts.source}: {len(parts.blocks)} blocks, k {parts.cfg.k}, batch {parts.cfg.batch_size}; "
          f"{args.steps} steps after {args.warmup} untimed, a refresh every {args.refresh_every}; device {device}",
          flush=True)
    rows = []
    for mode, threads in settings:
        rows.append(run_setting(parts, mode, args.steps, args.refresh_every, args.warmup, threads))
        r = rows[-1]
        print(f"  {mode:<5} trainer {threads} threads: {r['steps_per_s']:.3f} steps/s, {r['landed']} landed",
              flush=True)
    summary = summarize(rows, default_threads, args.steps)
    info = {**machine(device), "source": parts.source, "preset": parts.cfg.preset, "blocks": len(parts.blocks),
            "k": parts.cfg.k, "batch_size": parts.cfg.batch_size, "steps": args.steps,
            "refresh_every": args.refresh_every, "warmup": args.warmup, "builder_threads": args.builder_threads,
            "default_threads": default_threads, "summary": summary, "rows": rows}
    where = info.get("gpu") or f"{info['cpu']} ({info['cpu_capability']})"
    print(f"\n{where}, {cpus} logical CPUs, torch {info['torch']}; {parts.source}")
    print(table(rows))
    print()
    print(notes(summary, rows, cpus, default_threads))
    write("refresh_hidden", info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
