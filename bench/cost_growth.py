"""How the cost of REALM grows with the corpus (N blocks) and with k, the candidates read per masked sentence x.

    python bench/cost_growth.py                   # the shipped model (world-cpu), N up to 100k: about 10 min, 2 cores
    python bench/cost_growth.py --quick           # sizes 500 1000, k 2 4, 2 steps, quick preset: a smoke run
    python bench/cost_growth.py --sizes 1000 10000 --ks 8 16 --steps 5
    python bench/cost_growth.py --preset full --device cuda --plot /tmp/cost_growth-full.png

From the shipped trained model (`--model`, or any export or run directory: the cpu preset, batch 16, k = 8, reader
4 x 128, towers 2 x 128, 2,002 blocks), or with `--preset` from-scratch encoders at that preset's sizes (`full`:
12 x 768, since bert-base-uncased is not available offline; random weights time the same as trained ones) over the
same model's blocks, tokenizer and masked training sentences. Every REALM step is the cpu recipe's: reader frozen
(reader_lr = 0 under freeze_untrained), both towers trained, exact search (torch matmul and top-k; no FAISS).

(a) Corpus size N (`--sizes`, default 1k 3k 10k 30k 100k). There is no corpus of 100k blocks to draw on, so the
corpus of N blocks is the real one repeated (block i is real block i mod 2,002; N below 2,002 takes the first N):
each block keeps its real length, so per block everything costs what a real block costs, and the index holds N
rows. For each N:
  build    the index build as the refresh does it (realm_lite.refresh.build_index: every block tokenized and
           embedded with Embed_doc, batches of 256, bf16 where the run's embed_bf16 says so), one build after an
           untimed warm-up build; its GFLOP/s read against the matching matmul limit
  search   MipsIndex.search of one batch of cfg.batch_size embedded x for the top k-1 (source excluded), alone;
           its bytes (the (N, D) float32 matrix read once) per second against the machine's read bandwidth
  step     a whole REALM step with the index of N rows (its reader reads the repeated blocks' pre-tokenized ids)
The repeated corpus puts copies of one block at several rows, so a block may be retrieved more than once for the
same x, and the copies of x's own block are not excluded (only row `source` is): the blocks read are real blocks
of real lengths, so the timing holds, but these steps are not training.

(b) k (`--ks`, default 2 4 8 16 32) at the real corpus: the REALM step, and its parts, taken one by one from the
same calls realm_loss makes (without its logged statistics), each waited for before the clock is read:
  sample x            drawing and masking cfg.batch_size sentences (Python)
  embed x             Embed_input(x), forward
  search              the top k-1 from the index
  candidate scores    f(x, z) of [∅, z_1..z_{k-1}] with the live Embed_doc, forward
  reader              p(y|z,x) for the k candidates of every x (frozen: forward only), and log p(y|z,x)
  backward + step     the marginal -log p(y|x), backward through both towers, AdamW

Rates: the step is the mean over --steps steps after 2 untimed (bench/realm_timing.rate, each step synced), the
parts the mean over --steps steps after 1 untimed, the search the mean over max(10, 5 x --steps) calls after 2
untimed. GFLOP counts as bench/retrieval_price.py does (shapes of what runs, padding included; backward 2x forward
of what trains). Peak memory is common.PeakMemory around each row (on a CPU the process's high-water mark so far: sizes
and k run in increasing order). Prints both tables, plots both (left: N, log-log; right: k) to --plot (default
docs/images/cost_growth.png; with --quick beside the JSON) and writes JSON (default
bench/results/cost_growth-<tag>.json, cost_growth-<preset>-<tag>.json with --preset). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.config import ConfigError, parse_overrides  # noqa: E402
from realm_lite.marginal import marginal_log_likelihood, sequence_log_prob  # noqa: E402
from realm_lite.pretrain import freeze_untrained  # noqa: E402
from realm_lite.realm import BlockInputs, candidate_scores, embed_queries, read  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.retriever import embed_in_bf16  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, realm_timing, retrieval_price, also when loaded by path
from common import RESULTS, PeakMemory, device_arg, limit, machine, sync, tag, write  # noqa: E402
from retrieval_price import (STEP_KEYS, FlopCounter, _check_model, free, out_of_memory, preset_config,  # noqa: E402
                             realm_stepper, sig, timed)

SIZES = (1000, 3000, 10000, 30000, 100000)
KS = (2, 4, 8, 16, 32)
PARTS = ("sample x", "embed x", "search", "candidate scores", "reader", "backward + step")


class Parts:
    """The model and its starting weights, the real corpus (blocks, tokenizer, inputs, index), x and the configs."""

    def __init__(self, args, overrides: dict, device):
        from realm_lite.config import Config
        from realm_lite.export import load_pretrained, resolve
        from realm_lite.pretrain import load_run
        from realm_lite.queries import QueryPool
        from realm_lite.realm import Realm

        name = args.model or "world-cpu"
        if args.preset:
            _, self.blocks, self.tokenizer, world = load_run(resolve(name))
            cfg = preset_config(args.preset, **overrides)
            torch.manual_seed(cfg.seed)
            self.model = Realm(cfg, len(self.tokenizer)).to(device)
            self.inputs = BlockInputs(self.blocks, self.tokenizer, cfg.block_len)
            self.build_cfg = cfg
            self.index = build_index(self.model.retriever.embed_doc, self.blocks, self.tokenizer, cfg, device)
            self.source = f"{cfg.preset} preset from scratch over the blocks of {name}"
        else:
            pre = load_pretrained(name, device)
            cfg = pre.cfg.replace(progress=False, **overrides)
            self.blocks, self.tokenizer, world, self.model = pre.blocks, pre.tokenizer, pre.world, pre.model
            self.inputs, self.index = pre.inputs, pre.index
            # load_pretrained embeds in fp32 on a CPU; the refresh of the run embeds as the run's config says
            self.build_cfg = cfg.replace(embed_bf16=Config.load(pre.path).embed_bf16)
            self.source = f"{name} (trained)"
        self.cfg = cfg.replace(reader_lr=0.0, retriever_lr=cfg.retriever_lr or 1e-4)  # the cpu recipe
        self.pool = QueryPool(self.blocks, self.tokenizer, self.cfg, world)
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.device = device

    def fresh(self):
        """The model back at its starting weights."""
        self.model.load_state_dict(self.state)
        return self.model

    def repeated(self, n: int) -> tuple[list, BlockInputs]:
        """A corpus of n blocks, the real ones repeated (row i is block i mod the corpus size): the blocks, and
        inputs sharing the real blocks' pre-tokenized id lists."""
        m = len(self.blocks)
        inputs = copy.copy(self.inputs)
        inputs.doc_ids = [self.inputs.doc_ids[i % m] for i in range(n)]
        inputs.body_ids = [self.inputs.body_ids[i % m] for i in range(n)]
        return [self.blocks[i % m] for i in range(n)], inputs


def timed_parts(model, cfg, pool, index, inputs: BlockInputs, device, steps: int) -> dict:
    """Mean seconds per part of a REALM step (PARTS), over `steps` steps after 1 untimed, each part waited for."""
    sums = dict.fromkeys(PARTS, 0.0)
    model.train()
    with freeze_untrained(model, cfg):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=cfg.retriever_lr or cfg.reader_lr, weight_decay=cfg.weight_decay)
        rng = random.Random(cfg.seed)
        for i in range(steps + 1):
            sync(device)
            laps, last = {}, [time.perf_counter()]

            def lap(part):
                sync(device)
                now = time.perf_counter()
                laps[part], last[0] = now - last[0], now

            queries = pool.sample(rng, cfg.batch_size)
            lap("sample x")
            q = embed_queries(model, queries, inputs.pad, device)  # (B, D)
            lap("embed x")
            _, top = index.search(q.detach(), cfg.k - 1, exclude=[x.source for x in queries])  # (B, K-1)
            top = top.cpu()
            lap("search")
            scores = candidate_scores(model, q, top, inputs, device)  # (B, K)
            lap("candidate scores")
            tok_logp, tgt = read(model, queries, [[-1] + row for row in top.tolist()], inputs, device)  # (B, K, M, V)
            log_p_y_zx = sequence_log_prob(tok_logp.flatten(0, 1), tgt.flatten(0, 1)).view(len(queries), cfg.k)
            lap("reader")
            loss = -marginal_log_likelihood(scores, log_p_y_zx).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lap("backward + step")
            if i:  # the first step is untimed
                for part in PARTS:
                    sums[part] += laps[part]
    return {part: seconds / steps for part, seconds in sums.items()}


def _step_rate(parts: Parts, cfg, index, inputs, steps: int, counter: FlopCounter) -> tuple[float, dict]:
    """steps/s of REALM steps (the cpu recipe) and their FLOPs per step."""
    counter.reset()
    with realm_stepper(parts.fresh(), cfg, parts.pool, index, inputs, parts.device, counter) as step:
        per_s = timed(step, steps, parts.device, counter)
    return per_s, counter.totals(steps)


def corpus_row(parts: Parts, n: int, steps: int, counter: FlopCounter, lim: dict, q, sources) -> dict:
    """Sweep (a) at N = n: index build, search alone, REALM step."""
    device, cfg = parts.device, parts.cfg
    blocks, inputs = parts.repeated(n)
    bf16 = embed_in_bf16(parts.build_cfg, device)
    with PeakMemory(device) as mem:
        counter.reset()
        counter.on = True
        try:
            sync(device)
            t0 = time.perf_counter()
            index = build_index(parts.fresh().retriever.embed_doc, blocks, parts.tokenizer, parts.build_cfg, device)
            sync(device)
            build_s = time.perf_counter() - t0
        finally:
            counter.on = False
        build_flops = counter.totals()["total"]
        search_per_s = timed(lambda: index.search(q, cfg.k - 1, exclude=sources), max(10, 5 * steps), device)
        step_per_s, flops = _step_rate(parts, cfg, index, inputs, steps, counter)
    search_s, search_bytes = 1 / search_per_s, len(index) * index.dim * 4
    build_gflops = build_flops / build_s / 1e9
    return {"sweep": "N", "n": n, "index_rows": len(index), "build_seconds": sig(build_s),
            "build_blocks_per_s": sig(n / build_s), "build_gflop": sig(build_flops / 1e9),
            "build_gflops": sig(build_gflops), "build_embed_bf16": bf16,
            "build_fraction_of_limit": sig(build_gflops / lim["matmul_bf16_gflops" if bf16 else "matmul_fp32_gflops"],
                                           3),
            "search_seconds": sig(search_s), "search_gbs": sig(search_bytes / search_s / 1e9),
            "search_fraction_of_read": sig(search_bytes / search_s / 1e9 / lim["read_gbs"], 3),
            "search_gflop": sig(2 * len(q) * len(index) * index.dim / 1e9),
            "step_seconds": sig(1 / step_per_s), "steps_per_s": sig(step_per_s),
            "step_gflop": sig(flops["total"] / 1e9),
            "step_gflops": sig(flops["total"] / 1e9 * step_per_s),
            "step_fraction_of_limit": sig(flops["total"] / 1e9 * step_per_s / lim["matmul_fp32_gflops"], 3),
            "search_share_of_step": sig(search_s * step_per_s, 3), "peak_mib": mem.mib}


def k_row(parts: Parts, k: int, steps: int, counter: FlopCounter, lim: dict) -> dict:
    """Sweep (b) at k: the REALM step at the real corpus, and its parts."""
    cfg = parts.cfg.replace(k=k)
    with PeakMemory(parts.device) as mem:
        per_s, flops = _step_rate(parts, cfg, parts.index, parts.inputs, steps, counter)
        split = timed_parts(parts.fresh(), cfg, parts.pool, parts.index, parts.inputs, parts.device, steps)
    gflops = flops["total"] / 1e9 * per_s
    return {"sweep": "k", "k": k, "reader_rows": cfg.batch_size * k, "step_seconds": sig(1 / per_s),
            "steps_per_s": sig(per_s), "step_gflop": sig(flops["total"] / 1e9), "step_gflops": sig(gflops),
            "step_fraction_of_limit": sig(gflops / lim["matmul_fp32_gflops"], 3),
            "parts_seconds": {p: sig(s) for p, s in split.items()}, "parts_sum_seconds": sig(sum(split.values())),
            "peak_mib": mem.mib}


def guarded(fn, *a, **key) -> dict:
    """fn(...)'s row, or {"error": "out of memory"} when the GPU ran out (the sweep goes on)."""
    try:
        return fn(*a, **key)
    except (RuntimeError, torch.OutOfMemoryError) as e:
        if not out_of_memory(e):
            raise
        return {"error": "out of memory"}
    finally:
        free(a[0].device, a[0].model)


def corpus_table(rows: list[dict]) -> str:
    """Sweep (a) as printed."""
    lines = [f"{'N':>8}{'build s':>9}{'blocks/s':>10}{'GFLOP/s':>9}{'% limit':>8}{'search ms':>11}{'GB/s':>7}"
             f"{'% read':>8}{'step s':>9}{'search %':>9}{'peak MiB':>10}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['n']:>8}  {r['error']}")
            continue
        lines.append(f"{r['n']:>8}{r['build_seconds']:>9.2f}{r['build_blocks_per_s']:>10.0f}{r['build_gflops']:>9.1f}"
                     f"{100 * r['build_fraction_of_limit']:>7.1f}%{1e3 * r['search_seconds']:>11.3f}"
                     f"{r['search_gbs']:>7.1f}{100 * r['search_fraction_of_read']:>7.1f}%{r['step_seconds']:>9.4f}"
                     f"{100 * r['search_share_of_step']:>8.1f}%{r['peak_mib']:>10.1f}")
    return "\n".join(lines)


def k_table(rows: list[dict]) -> str:
    """Sweep (b) as printed, the parts in milliseconds."""
    lines = [f"{'k':>4}{'step s':>9}{'GFLOP':>9}{'GFLOP/s':>9}{'% limit':>8}  " + "".join(f"{p:>17}" for p in PARTS)
             + f"{'peak MiB':>10}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['k']:>4}  {r['error']}")
            continue
        lines.append(f"{r['k']:>4}{r['step_seconds']:>9.4f}{r['step_gflop']:>9.2f}{r['step_gflops']:>9.1f}"
                     f"{100 * r['step_fraction_of_limit']:>7.1f}%  "
                     + "".join(f"{1e3 * r['parts_seconds'][p]:>14.1f} ms" for p in PARTS) + f"{r['peak_mib']:>10.1f}")
    return "\n".join(lines)


def plot(corpus_rows: list[dict], k_rows: list[dict], title: str, path: Path) -> Path:
    """Two panels: seconds against N (log-log) and seconds per step and per part against k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    ok = [r for r in corpus_rows if "error" not in r]
    n = [r["n"] for r in ok]
    for key, label, style in (("build_seconds", "index build (all N blocks)", "o-"),
                              ("step_seconds", "REALM step", "s-"), ("search_seconds", "search alone", "^-")):
        left.plot(n, [r[key] for r in ok], style, label=label)
    left.set(xscale="log", yscale="log", xlabel="corpus size N (blocks, index rows)", ylabel="seconds",
             title="(a) cost against the corpus size")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    ok = [r for r in k_rows if "error" not in r]
    ks = [r["k"] for r in ok]
    if ok:
        right.stackplot(ks, *[[r["parts_seconds"][part] for r in ok] for part in PARTS], labels=PARTS, alpha=0.75)
        right.plot(ks, [r["step_seconds"] for r in ok], "ks-", label="REALM step (timed whole)")
    right.set(xlabel="k (candidates per x, ∅ included)", ylabel="seconds per step",
              title="(b) cost against k: the step, and its parts stacked")
    right.set_xscale("log", base=2)
    if ks:
        right.set_xticks(ks, [str(k) for k in ks])
    right.set_ylim(bottom=0)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a shipped model, export or run directory (default world-cpu); "
                    "with --preset, only its blocks, tokenizer and sentences are used")
    ap.add_argument("--preset", default=None, help="from-scratch encoders at a preset's sizes over the model's blocks")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help=f"config overrides (a trained model: {', '.join(STEP_KEYS)})")
    ap.add_argument("--sizes", type=int, nargs="+", help="corpus sizes N in blocks (default 1000 3000 10000 30000 "
                    "100000)")
    ap.add_argument("--ks", type=int, nargs="+", help="candidates per x, ∅ included (default 2 4 8 16 32)")
    ap.add_argument("--steps", type=int, default=10, help="timed REALM steps per setting (default 10)")
    ap.add_argument("--quick", action="store_true", help="sizes 500 1000, k 2 4, 2 steps, the quick preset")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--json", help="where the results go")
    ap.add_argument("--plot", help="where the figure goes (default docs/images/cost_growth.png)")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    args.sizes = args.sizes or ([500, 1000] if args.quick else list(SIZES))
    args.ks = args.ks or ([2, 4] if args.quick else list(KS))
    if args.quick:
        args.steps = min(args.steps, 2)
        if not args.model and not args.preset:
            args.preset = "quick"
    if args.steps < 1:
        raise SystemExit(f"--steps {args.steps}: 1 or more")
    try:
        overrides = parse_overrides(args.set)
    except ConfigError as e:
        raise SystemExit(f"--set: {e}") from None
    if args.preset:
        cfg = preset_config(args.preset, **overrides)
    else:
        if bad := sorted(set(overrides) - set(STEP_KEYS)):
            raise SystemExit(f"--set {', '.join(bad)}: a trained model takes only {', '.join(STEP_KEYS)}")
        cfg = None
    name = args.model or "world-cpu"
    _check_model(name, {} if args.preset else overrides)
    from realm_lite.config import Config
    from realm_lite.export import resolve

    path = resolve(name)
    cfg = cfg or Config.load(path).replace(**overrides)
    n_blocks = sum(1 for line in (path / "blocks.jsonl").open() if line.strip())
    if bad := [n for n in args.sizes if n < cfg.k]:
        raise SystemExit(f"--sizes {' '.join(map(str, bad))}: fewer blocks than k = {cfg.k}")
    if bad := [k for k in args.ks if not 2 <= k <= n_blocks]:
        raise SystemExit(f"--ks {' '.join(map(str, bad))}: k from 2 (∅ and one block) to the {n_blocks} blocks")
    args.sizes, args.ks = sorted(set(args.sizes)), sorted(set(args.ks))

    parts = Parts(args, overrides, device)
    cfg, lim = parts.cfg, limit(device)
    counter = FlopCounter(parts.model)
    with torch.no_grad():  # one fixed batch of x for the search alone
        queries = parts.pool.sample(random.Random(cfg.seed + 1), cfg.batch_size)
        q = embed_queries(parts.fresh(), queries, parts.inputs.pad, device).float()  # (B, D)
    sources = [x.source for x in queries]
    warm, _ = parts.repeated(min(256, len(parts.blocks)))
    build_index(parts.model.retriever.embed_doc, warm, parts.tokenizer, parts.build_cfg, device)  # untimed warm-up
    corpus_rows, k_rows = [], []
    for n in args.sizes:
        corpus_rows.append({"sweep": "N", "n": n, **guarded(corpus_row, parts, n, args.steps, counter, lim, q,
                                                             sources)})
        print(f"N = {n}: done", flush=True)
    for k in args.ks:
        k_rows.append({"sweep": "k", "k": k, **guarded(k_row, parts, k, args.steps, counter, lim)})
        print(f"k = {k}: done", flush=True)
    counter.close()

    reader = parts.model.reader.bert.config
    towers = parts.model.retriever.embed_input.bert.config
    info = {**machine(device), "source": parts.source, "preset": cfg.preset, "steps": args.steps,
            "batch_size": cfg.batch_size, "k": cfg.k, "reader": f"{reader.num_hidden_layers} x {reader.hidden_size}",
            "towers": f"{towers.num_hidden_layers} x {towers.hidden_size}", "real_blocks": len(parts.blocks),
            "proj_dim": parts.index.dim, "sizes": args.sizes, "ks": args.ks, "limit": lim,
            "timing": "means: steps over --steps after 2 untimed, parts over --steps after 1, search over "
                      "max(10, 5 x --steps) after 2; index build: one build after a warm-up",
            "rows": corpus_rows + k_rows}
    where = info.get("gpu") or f"{info['cpu']} ({info['cpu_capability']})"
    title = (f"{where}, {info['threads']} threads, torch {info['torch']}; {parts.source}; batch {cfg.batch_size}, "
             f"reader {info['reader']} (frozen), towers {info['towers']}")
    print(f"\n{title}")
    print(f"(a) corpus size N, k = {cfg.k}, exact search; the real {len(parts.blocks)} blocks repeated")
    print(corpus_table(corpus_rows))
    print(f"\n(b) k at the real corpus ({len(parts.blocks)} blocks); parts: mean seconds of each")
    print(k_table(k_rows))
    out_name = f"cost_growth-{cfg.preset}" if args.preset and not args.quick else "cost_growth"
    if args.plot:
        figure = Path(args.plot)
    elif args.quick:
        json_path = Path(args.json) if args.json else RESULTS / f"{out_name}-{tag(device)}-quick.json"
        figure = json_path.with_suffix(".png")
    else:
        figure = Path(__file__).parents[1] / "docs" / "images" / "cost_growth.png"
    info["plot"] = str(plot(corpus_rows, k_rows, title, figure))
    write(out_name, info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
