"""How fast Embed_doc embeds a corpus: the work of every MIPS index refresh (paper section 3.3), fp32 and bf16.

    python bench/embed_speed.py                       # quick, cpu, cpu-paper and full towers; minutes on 2 cores
    python bench/embed_speed.py --presets cpu         # one preset's tower, and the shipped world-cpu refresh
    python bench/embed_speed.py --quick               # a smoke run: the quick tower, a few dozen blocks
    python bench/embed_speed.py --device cuda         # on a GPU (more blocks timed by default)
    python bench/embed_speed.py --presets cpu --world-blocks 256   # the refresh rows over the corpus's first 256

REALM's index builder takes a snapshot of Embed_doc and re-embeds every block z of the corpus, every refresh; how
long that takes sets how stale the index gets. For each preset's document tower, built from scratch at the preset's
sizes (`Tower(build_bert(cfg, cfg.retriever_layers, vocab), cfg.proj_dim, cfg.pooling)`; random weights take the same
time as trained ones), it times, in fp32 and under bf16 autocast (`torch.autocast(device.type, torch.bfloat16)`, as
realm_lite.retriever.embed_blocks runs it):

  synthetic   pre-tokenized blocks of random wordpiece ids, every row the preset's full block_len, in batches of
              --batch (256, embed_blocks' batch), eval mode, torch.no_grad(): the tower alone
  refresh     (the cpu preset only) the real refresh as the library runs it: realm_lite.refresh.build_index on the
              shipped world-cpu model's Embed_doc and corpus (2,002 blocks of variable length, sorted by length and
              padded per batch to the batch's longest, tokenization, the fingerprint and the MipsIndex wrapper
              included), with
              embed_bf16 off and on. Its mean real block length sits beside the synthetic rows' full length

The full preset names bert-base-uncased, which is not read here: its tower is a from-scratch bert-base (hidden 768,
12 heads, 12 layers, vocabulary 30,522, block_len 288, the paper's). Each figure is the best of --repeats timed
passes over --blocks blocks (refresh: over the corpus) after one untimed warm-up batch. Columns:

  blocks/s, tokens/s   blocks (wordpieces) embedded per second; refresh rows count real, unpadded wordpieces
  GFLOP/s, of limit    forward FLOPs per block from the shapes: per layer and token 4*2*H*H (Q, K, V, O projections)
                       + 2*2*H*4H (feed-forward) + 2*2*L*H (attention scores and weighted sum), plus 2*H*d for the
                       projection to d; refresh rows count the padded batches actually computed. The fraction is of
                       bench/common.limit: fp32 rows against matmul_fp32_gflops, bf16 rows against matmul_bf16_gflops
  corpus s             seconds for the preset's corpus where it is known: the cpu and cpu-paper presets build the
                       shipped world-cpu's corpus (same world and block settings), 2,002 blocks
  13M h                full preset only, an extrapolation: hours for the paper's Wikipedia, 13M blocks of 288
                       wordpieces, at the measured rate (REALM refreshed it with a separate job on many accelerators)
  peak MiB             common.PeakMemory: on a CPU the process's high-water mark so far (the towers run smallest
                       first), on a GPU torch's peak allocation

On a CPU without AVX-512 there is no bf16 arithmetic: bf16 is emulated and slow, and the bench says so in a note
(torch.backends.cpu.get_cpu_capability(); an AVX-512 CPU without AVX512_BF16 or AMX gets a note too).
Prints a table and writes JSON to --json (default bench/results/embed_speed-<cpu capability>.json).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.config import PRESETS, ConfigError, get_config  # noqa: E402
from realm_lite.retriever import Tower, build_bert, embed_in_bf16, encode_blocks  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, also when loaded by path (tests)
from common import PeakMemory, device_arg, limit, machine, sync, write  # noqa: E402

DEFAULT_PRESETS = ("quick", "cpu", "cpu-paper", "full")
FULL_SIZES = dict(backbone="", tokenizer="", hidden=768, heads=12, retriever_layers=12, reader_layers=12)
WIKIPEDIA_BLOCKS = 13_000_000  # the paper's corpus: English Wikipedia in blocks of up to 288 wordpieces
SHIPPED = "world-cpu"
# The keys that decide a world's corpus of blocks: a preset equal to the shipped model's on all of them builds it.
CORPUS_KEYS = ("seed", "world_entities", "heldout_fraction", "question_splits", "world_phrasings", "world_restate",
               "tokenizer", "vocab_size", "lowercase", "span_words", "block_len")
# Blocks timed per pass when --blocks is not given: a few seconds of fp32 on 2 AVX-512 cores; a GPU gets more.
CPU_BLOCKS = {"quick": 8192, "cpu": 4096, "cpu-paper": 8192, "full": 8}
CUDA_BLOCKS = {"quick": 131072, "cpu": 131072, "cpu-paper": 131072, "full": 4096}
QUICK = {"blocks": 48, "batch": 16, "repeats": 2, "world_blocks": 48}
DTYPES = {"fp32": ("matmul_fp32_gflops", False), "bf16": ("matmul_bf16_gflops", True)}


def preset_config(name: str):
    """The preset's config; for full, its from-scratch bert-base sizes (bert-base-uncased is not read here)."""
    return get_config(name, **FULL_SIZES) if name == "full" else get_config(name)


def doc_tower(cfg, device) -> Tower:
    """Embed_doc at cfg's sizes, from scratch, in eval mode on `device`."""
    torch.manual_seed(cfg.seed)
    return Tower(build_bert(cfg, cfg.retriever_layers, cfg.vocab_size), cfg.proj_dim, cfg.pooling).to(device).eval()


def flops_per_block(hidden: int, layers: int, length: int, proj_dim: int) -> int:
    """Forward FLOPs of one block of `length` wordpieces (see the module docstring): layers x tokens x per token."""
    per_token = 4 * 2 * hidden * hidden + 2 * 2 * hidden * 4 * hidden + 2 * 2 * length * hidden
    return layers * length * per_token + 2 * hidden * proj_dim


def bf16_note(device) -> tuple[bool | None, str | None]:
    """Whether this CPU has bf16 arithmetic (None on a GPU), and a note to print when it has not."""
    if torch.device(device).type != "cpu":
        return None, None
    cap = torch.backends.cpu.get_cpu_capability()
    if not cap.upper().startswith(("AVX512", "AMX")):
        return False, (f"note: this CPU has no AVX-512 (torch's capability: {cap}): bf16 is emulated, converted to "
                       f"and from fp32 around every product, and slow; the bf16 rows measure that slow path")
    try:
        flags = " ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except OSError:
        return True, None
    if flags and "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False, ("note: this AVX-512 CPU has neither AVX512_BF16 nor AMX: bf16 has no native arithmetic here "
                       "and may be slower than fp32")
    return True, None


def best_pass(run_pass, warm_up, repeats: int, device) -> float:
    """The fastest of `repeats` timed calls of run_pass, after one untimed warm_up call (GPU work waited for)."""
    warm_up()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_pass()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def synthetic_batches(cfg, blocks: int, batch: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`blocks` full-length blocks of random ids as (ids, mask) batches of `batch`: one (B, L) pair, reused."""
    g = torch.Generator().manual_seed(cfg.seed)
    b = min(batch, blocks)
    ids = torch.randint(0, cfg.vocab_size, (b, cfg.block_len), generator=g).to(device)  # (B, L)
    mask = torch.ones_like(ids)  # (B, L): every row full length
    sizes = [b] * (blocks // b) + ([blocks % b] if blocks % b else [])
    return [(ids[:n], mask[:n]) for n in sizes]


@torch.no_grad()
def embed(tower: Tower, batches, device, bf16: bool) -> torch.Tensor:
    """Embed_doc(z) of the batches as embed_blocks computes it: (N, D) float32."""
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        return torch.cat([tower(ids, mask).float() for ids, mask in batches])  # (N, D)


def rates(flops: float, tokens: int, blocks: int, seconds: float, dtype: str, lim: dict) -> dict:
    """blocks/s, tokens/s, GFLOP/s and its fraction of the limit that fits the dtype."""
    key = DTYPES[dtype][0]
    gflops = flops / seconds / 1e9
    return {"blocks_per_s": round(blocks / seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "gflops": round(gflops, 2), "limit_key": key, "frac_of_limit": round(gflops / lim[key], 4)}


def synthetic_rows(name: str, cfg, blocks: int, args, device, lim: dict, corpus: int | None) -> list[dict]:
    """The preset's tower on full-length random blocks, fp32 then bf16: one row each."""
    tower = doc_tower(cfg, device)
    batches = synthetic_batches(cfg, blocks, args.batch, device)
    per_block = flops_per_block(cfg.hidden, cfg.retriever_layers, cfg.block_len, cfg.proj_dim)
    rows = []
    for dtype, (_, bf16) in DTYPES.items():
        with PeakMemory(device) as mem:
            seconds = best_pass(lambda: embed(tower, batches, device, bf16),
                                lambda: embed(tower, batches[:1], device, bf16), args.repeats, device)
        r = {"preset": name, "kind": "synthetic", "dtype": dtype, "hidden": cfg.hidden,
             "layers": cfg.retriever_layers, "block_len": cfg.block_len, "mean_len": float(cfg.block_len),
             "blocks": blocks, "seconds": round(seconds, 4),
             **rates(per_block * blocks, blocks * cfg.block_len, blocks, seconds, dtype, lim),
             "flops_per_block": per_block, "corpus_blocks": corpus}
        r["corpus_s"] = None if corpus is None else round(corpus / r["blocks_per_s"], 2)
        r["hours_13m_extrapolated"] = (round(WIKIPEDIA_BLOCKS / r["blocks_per_s"] / 3600, 2) if name == "full"
                                       else None)
        r["peak_mib"] = mem.mib
        rows.append(r)
    return rows


def block_lengths(blocks, tokenizer, max_len: int, batch: int) -> tuple[list[int], list[int]]:
    """Each block's real length in wordpieces, and each batch's padded length as embed_blocks pads it: the corpus
    sorted by length, each batch padded to its own longest block."""
    mask = encode_blocks([b.title for b in blocks], [b.text for b in blocks], tokenizer, max_len)["attention_mask"]
    real = mask.sum(1).tolist()
    ordered = sorted(real)
    padded = [max(ordered[i:i + batch]) for i in range(0, len(ordered), batch)]
    return real, padded


def refresh_rows(tower, blocks, tokenizer, cfg, device, repeats: int, lim: dict, source: str,
                 corpus: int | None = None) -> list[dict]:
    """build_index over `blocks`, embed_bf16 off then on: a row each; corpus_s at `corpus` blocks (default all)."""
    from realm_lite.refresh import build_index

    batch = 256  # build_index embeds in embed_blocks' default batches
    real, padded = block_lengths(blocks, tokenizer, cfg.block_len, batch)
    sizes = [len(blocks[i:i + batch]) for i in range(0, len(blocks), batch)]
    flops = sum(n * flops_per_block(cfg.hidden, cfg.retriever_layers, length, cfg.proj_dim)
                for n, length in zip(sizes, padded))
    rows = []
    for dtype, setting in (("fp32", "off"), ("bf16", "on")):
        c = cfg.replace(embed_bf16=setting)
        with PeakMemory(device) as mem:
            seconds = best_pass(lambda: build_index(tower, blocks, tokenizer, c, device),
                                lambda: build_index(tower, blocks[:batch], tokenizer, c, device), repeats, device)
        r = {"preset": cfg.preset, "kind": f"refresh {source}", "dtype": dtype, "hidden": cfg.hidden,
             "layers": cfg.retriever_layers, "block_len": cfg.block_len,
             "mean_len": round(sum(real) / len(real), 1),
             "mean_padded_len": round(sum(n * p for n, p in zip(sizes, padded)) / len(blocks), 1),
             "blocks": len(blocks), "seconds": round(seconds, 4),
             **rates(flops, sum(real), len(blocks), seconds, dtype, lim),
             "flops_per_block": round(flops / len(blocks)), "corpus_blocks": corpus or len(blocks),
             "corpus_s": round(seconds * (corpus or len(blocks)) / len(blocks), 2), "hours_13m_extrapolated": None,
             "embed_bf16": setting,
             "peak_mib": mem.mib}
        rows.append(r)
    return rows


def shipped_corpus() -> tuple[object, int] | tuple[None, None]:
    """The shipped model's config and its number of blocks (config.json and blocks.jsonl, no model loaded)."""
    try:
        from realm_lite.config import Config
        from realm_lite.shipped import shipped_path

        path = shipped_path(SHIPPED)
        with open(path / "blocks.jsonl") as f:
            return Config.load(path), sum(1 for line in f if line.strip())
    except (FileNotFoundError, ValueError):
        return None, None


def corpus_size(cfg, shipped_cfg, shipped_blocks) -> int | None:
    """The number of blocks of the preset's corpus where known: the shipped world's, when the preset builds it."""
    if shipped_cfg is None or any(getattr(cfg, k) != getattr(shipped_cfg, k) for k in CORPUS_KEYS):
        return None
    return shipped_blocks


def progress(rows: list[dict]) -> str:
    """A line per preset while the bench runs: each dtype's blocks/s."""
    return ", ".join(f"{r['dtype']} {r['blocks_per_s']:,.1f} blocks/s" for r in rows)


def table(rows: list[dict]) -> str:
    """The rows as text."""
    def f(v, spec):
        return "–" if v is None else format(v, spec)
    lines = [f"{'preset':<10}{'kind':<19}{'dtype':<6}{'H':>5}{'layers':>7}{'L':>5}{'mean len':>9}{'blocks':>8}"
             f"{'blocks/s':>10}{'tokens/s':>11}{'GFLOP/s':>9}{'of limit':>9}{'corpus s':>10}{'13M h*':>9}"
             f"{'peak MiB':>10}"]
    for r in rows:
        lines.append(f"{r['preset']:<10}{r['kind']:<19}{r['dtype']:<6}{r['hidden']:>5}{r['layers']:>7}"
                     f"{r['block_len']:>5}{r['mean_len']:>9.1f}{r['blocks']:>8}{r['blocks_per_s']:>10,.1f}"
                     f"{r['tokens_per_s']:>11,.0f}{r['gflops']:>9.1f}{r['frac_of_limit']:>9.1%}"
                     f"{f(r['corpus_s'], ',.2f'):>10}{f(r['hours_13m_extrapolated'], ',.1f'):>9}"
                     f"{r['peak_mib']:>10,.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", help=f"whose document towers (default {' '.join(DEFAULT_PRESETS)})")
    ap.add_argument("--blocks", type=int, help="blocks timed per pass, every preset (default: a few seconds each: "
                    + ", ".join(f"{k} {v}" for k, v in CPU_BLOCKS.items()) + " on a CPU; "
                    + ", ".join(f"{k} {v}" for k, v in CUDA_BLOCKS.items()) + " on a GPU)")
    ap.add_argument("--batch", type=int, help="blocks per forward pass (default 256, embed_blocks')")
    ap.add_argument("--repeats", type=int, help="timed passes; the best is reported (default 3)")
    ap.add_argument("--world-blocks", type=int, help="refresh rows: the first N of the shipped corpus (default all)")
    ap.add_argument("--quick", action="store_true", help="the quick preset only, 48 blocks in batches of 16, "
                                                         "2 repeats: a smoke run")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    if args.presets is None:
        args.presets = ["quick"] if args.quick else list(DEFAULT_PRESETS)
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"--presets {' '.join(unknown)}: unknown; valid presets: {', '.join(PRESETS)}")
    defaults = {"batch": 256, "repeats": 3, "world_blocks": None, "blocks": None}
    if args.quick:
        defaults.update(QUICK)
    for name, value in defaults.items():  # what is given wins, --quick or not
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("blocks", "batch", "repeats", "world_blocks"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: 1 or more")
    try:
        cfgs = {name: preset_config(name) for name in dict.fromkeys(args.presets)}
    except ConfigError as e:
        raise SystemExit(f"--presets: {e}") from None
    per_preset = CUDA_BLOCKS if device.type == "cuda" else CPU_BLOCKS
    counts = {name: args.blocks or per_preset.get(name, per_preset["cpu"]) for name in cfgs}
    # Smallest towers first: on a CPU, peak memory is the process's high-water mark.
    order = sorted(cfgs, key=lambda n: flops_per_block(cfgs[n].hidden, cfgs[n].retriever_layers,
                                                       cfgs[n].block_len, cfgs[n].proj_dim))

    native, note = bf16_note(device)
    lim = limit(device)
    where = machine(device)
    shipped_cfg, shipped_blocks = shipped_corpus()
    auto_bf16 = embed_in_bf16(get_config("cpu"), device)
    print(f"{where.get('gpu') or where['cpu']} ({where['cpu_capability']}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {args.batch}, best of {args.repeats} passes after a warm-up "
          f"batch; limit: fp32 {lim['matmul_fp32_gflops']} GFLOP/s, bf16 {lim['matmul_bf16_gflops']} GFLOP/s "
          f"({lim['source']})")
    print(f"the library's embed_bf16=auto embeds in {'bf16' if auto_bf16 else 'fp32'} here")
    if note:
        print(note)
    rows = []
    for name in order:
        cfg = cfgs[name]
        own = synthetic_rows(name, cfg, counts[name], args, device, lim,
                             corpus_size(cfg, shipped_cfg, shipped_blocks))
        rows += own
        print(f"  {name}: {progress(own)}", flush=True)
        if name == "cpu" and shipped_cfg is None:
            print(f"note: the shipped {SHIPPED} model is not in this installation: no refresh rows")
        elif name == "cpu":
            from realm_lite.export import load_pretrained

            pre = load_pretrained(SHIPPED, device)
            blocks = pre.blocks[:args.world_blocks] if args.world_blocks else pre.blocks
            own = refresh_rows(pre.model.retriever.embed_doc, blocks, pre.tokenizer, pre.cfg, device, args.repeats,
                               lim, SHIPPED, len(pre.blocks))
            rows += own
            print(f"  {name} refresh: {progress(own)}", flush=True)
            del pre
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print(table(rows))
    print("* 13M h: an extrapolation to the paper's 13M Wikipedia blocks at the measured rate (full preset only)")
    info = {**machine(device), "limit": lim, "bf16_native": native, "bf16_note": note,
            "library_embed_bf16_auto": "bf16" if auto_bf16 else "fp32", "presets": list(cfgs), "blocks": counts,
            "batch": args.batch, "repeats": args.repeats, "world_blocks": args.world_blocks,
            "wikipedia_blocks": WIKIPEDIA_BLOCKS, "rows": rows}
    write("embed_speed", info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
