"""How fast maximum inner product search (paper section 3.3) finds the top k blocks, and how exactly: torch, FAISS.

    python bench/mips_speed.py                        # world-cpu, 100k and 1M random vectors; long on 2 cores
    python bench/mips_speed.py --sizes 100000         # the trained index and 100k random vectors only
    python bench/mips_speed.py --quick                # a smoke run: a few thousand vectors, a short sweep
    python bench/mips_speed.py --device cuda          # exact search on the GPU (FAISS rows only with faiss-gpu)

The retriever's top k over Embed_doc(z) for a batch of queries Embed_input(x), f(x, z) = Embed_input(x)^T
Embed_doc(z), searched on these data sets:

  world-cpu      the document embeddings of the shipped trained model (2,002 x 128) and, as queries,
                 Embed_input of its held-out masked sentences (repeated when --queries asks for more)
  random-N       N standard-normal 128-d vectors (seed 0) and queries from the same distribution (seed 1). Random
                 data is the hardest case for approximate search: no clusters for IVF's lists to follow, no
                 neighbourhoods for HNSW's graph, every point about as far as any other; real embeddings do better

with these methods (queries in batches of --batch, REALM's batch; k = --k, REALM's k-1 retrieved blocks):

  torch exact       the raw operation: (q @ E.T).topk(k)                             # (B, N) -> (B, k)
  MipsIndex exact   realm_lite.mips.MipsIndex(E, "exact").search(q, k): the same, chunked, in the library's wrapper
  faiss flat        the raw FAISS call: IndexFlatIP.search(q, k)
  MipsIndex flat    MipsIndex(E, "flat").search(q, k)
  ... +exclude      the wrapper with exclude= one block per query, a list of ints as REALM passes it (x's own
                    block on world-cpu; the query's best block on random data, so that the exclusion always acts)
  faiss ivf         IndexIVFFlat, inner product, nlist = max(1, min(4 sqrt(N), N // 39)) as MipsIndex builds it,
                    for each --nprobe (capped at nlist)
  faiss hnsw        IndexHNSWFlat, M = 32, inner product, for each --ef (efSearch)

Columns: build seconds (FAISS: train + add; MipsIndex: its constructor), queries/s (the median over --repeats
timed passes over all --queries queries, after one untimed pass; each call's ids are brought to the CPU, as REALM's
retrieve does, so that on a GPU every call is timed to its end), recall@k against exact search (the fraction of the
exact top k found; a block whose score ties the k-th best within float32 rounding, 1e-5 relative, counts as found,
so that exhaustive methods read 1.000 whatever their order among equal scores), and for the exhaustive methods the
rate as GFLOP/s (2 N D flops per query) and GB/s (N D 4 bytes read per batch) with their fractions of
bench/common.limit: the machine's fp32 matrix-product rate and read bandwidth. Peak memory is common.PeakMemory over
the row's build and its untimed pass: on a CPU the process's high-water mark so far (data sets run smallest first),
on a GPU torch's peak allocation.

The wrapper's cost: the raw call, MipsIndex.search and MipsIndex.search with exclude= are timed in turn within each
repeat (interleaved, so that a slow spell of the machine hits all three), on the same query tensors; the summary
gives the wrapper's median time over the raw call's, in percent, against the project's claim of at most 5%.

FAISS runs with as many OpenMP threads as torch has (faiss.omp_set_num_threads(torch.get_num_threads())) and the
BLAS threshold realm_lite.mips sets. With --device cuda, exact search runs on the GPU; the FAISS rows run only where
faiss has GPU support (flat and IVF on the GPU; HNSW has no GPU index and is skipped), else a note says so.
Prints one table per data set and writes JSON to --json (default bench/results/mips_speed-<cpu capability>.json).
Run it alone: the 1M set needs about 3 GiB and spends minutes in IVF training and HNSW construction on 2 cores.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.mips import MipsIndex, _faiss  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, also when loaded by path (tests)
from common import PeakMemory, device_arg, limit, machine, sync, write  # noqa: E402

DIM = 128  # random data's dimension: the shipped model's
TIE = 1e-5  # relative score tolerance under which a block ties the k-th best
CLAIM_PCT = 5.0  # the project's claim: the wrapper adds at most this much to the raw call
FULL = {"sizes": [100000, 1000000], "queries": 1024, "repeats": 5, "nprobe": [1, 4, 16, 64, 256],
        "ef": [16, 32, 64, 128, 256]}
QUICK = {"sizes": [2000, 5000], "queries": 128, "repeats": 3, "nprobe": [1, 16], "ef": [16, 64]}


def faiss_or_note(device: torch.device):
    """FAISS (realm_lite.mips._faiss: BLAS threshold set) or None with the reason printed."""
    try:
        faiss = _faiss()
    except ImportError as e:
        print(f"note: faiss is not installed here ({e}); the FAISS rows are skipped")
        return None
    if device.type == "cuda" and not hasattr(faiss, "StandardGpuResources"):
        print("note: this faiss has no GPU support (faiss-cpu); the FAISS rows are skipped on --device cuda")
        return None
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


def nlist_for(n: int) -> int:
    """IVF lists as MipsIndex chooses them: about 4 sqrt(N), at least 39 points per list."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def random_data(n: int, queries: int, device) -> dict:
    """N standard-normal 128-d blocks (seed 0) and queries from the same distribution (seed 1)."""
    emb = torch.randn(n, DIM, generator=torch.Generator().manual_seed(0))  # (N, D)
    q = torch.randn(queries, DIM, generator=torch.Generator().manual_seed(1))  # (Q, D)
    return {"name": f"random-{n}", "emb": emb.to(device), "queries": q.to(device), "exclude": None}


def trained_data(model: str, queries: int, device) -> dict:
    """Embed_doc(z) of a trained model's blocks and Embed_input(x) of its held-out masked sentences, x's block."""
    from realm_lite.export import load_pretrained
    from realm_lite.realm import embed_queries

    pre = load_pretrained(model, device)
    xs = pre.heldout_queries(queries) if queries < len(pre.heldout_queries(0)) else pre.heldout_queries(0)
    xs = (xs * math.ceil(queries / len(xs)))[:queries]  # repeated when more are asked for than there are
    with torch.no_grad():
        q = torch.cat([embed_queries(pre.model, xs[i:i + 64], pre.inputs.pad, device)
                       for i in range(0, len(xs), 64)])  # (Q, D)
    return {"name": Path(str(model)).name, "emb": pre.index.embeddings.detach().float().to(device),
            "queries": q.detach().float(), "exclude": torch.tensor([x.source for x in xs], device=device)}


def batches(data: dict, batch: int) -> list[tuple[torch.Tensor, list[int]]]:
    """The queries in batches of `batch`, each with its excluded block ids as a list (REALM's form)."""
    q, ex = data["queries"], data["exclude"].tolist()
    return [(q[i:i + batch], ex[i:i + batch]) for i in range(0, len(q), batch)]


@torch.no_grad()
def exact_truth(emb: torch.Tensor, q: torch.Tensor, k: int, batch: int):
    """Exact top k+1 per query: scores and ids (Q, k+1), by the raw torch operation."""
    out = [(x @ emb.T).topk(k + 1, dim=1) for x in q.split(batch)]  # (B, N) -> (B, k+1)
    return torch.cat([s for s, _ in out]), torch.cat([i for _, i in out])


@torch.no_grad()
def recall(emb: torch.Tensor, q: torch.Tensor, ids: torch.Tensor, truth, k: int, exclude=None) -> float:
    """Fraction of the exact top k found among `ids` (Q, k); a block tying the k-th best counts (see docstring)."""
    s, i = truth  # (Q, k+1)
    kth = s[:, k - 1]
    if exclude is not None:  # the exact top k without x's block: the (k+1)-th moves up where the block was in it
        kth = torch.where((i[:, :k] == exclude[:, None]).any(1), s[:, k], kth)
    ids = ids.to(emb.device)
    valid = ids >= 0  # FAISS pads with -1 where it found fewer than k
    got = (emb[ids.clamp_min(0)] * q[:, None, :]).sum(-1)  # (Q, k, D) -> (Q, k)
    tol = TIE * (s[:, 0].abs() + kth.abs())
    found = valid & (got >= (kth - tol)[:, None])
    if exclude is not None:
        found &= ids != exclude[:, None]
    return round(found.float().mean().item(), 4)


def passes(fns: dict, items: list, repeats: int, device, untimed: dict | None = None) -> tuple[dict, dict]:
    """Seconds of each of `repeats` passes over `items` per fn, the fns taken in turn within a repeat (one untimed
    pass each first, under common.PeakMemory), and each fn's ids (Q, k) from its last pass; peak MiB into `untimed`.
    Each call's ids are brought to the CPU, as REALM's retrieve does: on a GPU a call is timed to its end."""
    times, ids = {name: [] for name in fns}, {}
    for name, fn in fns.items():
        with PeakMemory(device) as mem:
            for q, ex in items:
                torch.as_tensor(fn(q, ex)).cpu()
        if untimed is not None:
            untimed[name] = max(untimed.get(name, 0.0), mem.mib)
    for r in range(repeats):
        for name, fn in fns.items():
            out = []
            t0 = time.perf_counter()
            for q, ex in items:
                out.append(torch.as_tensor(fn(q, ex)).cpu())  # (B, k)
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if r == repeats - 1:
                ids[name] = torch.cat(out).long()  # (Q, k)
    return times, ids


def sig(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits."""
    return float(f"{x:.{digits}g}")


def row(data: dict, method: str, setting: str, build_s, seconds: list[float], rec: float, mib: float, k: int,
        batch: int, lim: dict, exhaustive: bool) -> dict:
    """One table row: the median pass time as queries/s, and for exhaustive search its rate against the limit."""
    n, d = data["emb"].shape
    nq = len(data["queries"])
    med = statistics.median(seconds)
    qps = nq / med
    r = {"dataset": data["name"], "n": n, "method": method, "setting": setting,
         "build_s": None if build_s is None else sig(build_s), "median_pass_s": sig(med),
         "queries_per_s": round(qps, 1), "recall_at_k": rec, "k": k, "gflops": None, "fp32_frac": None,
         "gbs": None, "read_frac": None, "peak_mib": mib}
    if exhaustive:
        gflops = qps * 2 * n * d / 1e9
        gbs = qps / batch * n * d * 4 / 1e9  # the (N, D) matrix read once per batch
        r.update(gflops=sig(gflops), fp32_frac=sig(gflops / lim["matmul_fp32_gflops"]), gbs=sig(gbs),
                 read_frac=sig(gbs / lim["read_gbs"]))
    return r


def exhaustive_rows(data: dict, backend: str, args, device, faiss, lim) -> tuple[list[dict], dict]:
    """The raw call, MipsIndex.search and MipsIndex.search with exclude=, interleaved: rows and the overhead."""
    emb, k, items = data["emb"], args.k, batches(data, args.batch)
    peak, build = {}, {}
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        if backend == "exact":
            et = emb.T  # (D, N)
            raw_name = "torch exact"

            def raw(q, ex):
                return (q @ et).topk(k, dim=1)[1]  # (B, N) -> (B, k)
        else:
            index = faiss.IndexFlatIP(emb.shape[1])
            if device.type == "cuda":
                res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(res, device.index or 0, index)
            index.add(emb.cpu().numpy())
            raw_name = "faiss flat"

            def raw(q, ex):
                return index.search(q.cpu().numpy(), k)[1]
        build[raw_name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mips = MipsIndex(emb, backend)
        build[f"MipsIndex {backend}"] = time.perf_counter() - t0
    peak[raw_name] = peak[f"MipsIndex {backend}"] = mem.mib
    fns = {raw_name: raw,
           f"MipsIndex {backend}": lambda q, ex: mips.search(q, k)[1],
           f"MipsIndex {backend} +exclude": lambda q, ex: mips.search(q, k, exclude=ex)[1]}
    times, ids = passes(fns, items, args.repeats, device, peak)
    q, truth = data["queries"], data["truth"]
    rows = []
    for name in fns:  # +exclude: the same MipsIndex, no build of its own
        ex = data["exclude"] if name.endswith("+exclude") else None
        rows.append(row(data, name, "", build.get(name), times[name], recall(emb, q, ids[name], truth, k, ex),
                        peak[name], k, args.batch, lim, True))
    med = {name: statistics.median(t) for name, t in times.items()}
    over = {"dataset": data["name"], "backend": backend, "raw_s": sig(med[raw_name]),
            "wrapper_s": sig(med[f"MipsIndex {backend}"]), "exclude_s": sig(med[f"MipsIndex {backend} +exclude"]),
            "overhead_pct": round(100 * (med[f"MipsIndex {backend}"] / med[raw_name] - 1), 2),
            "exclude_pct": round(100 * (med[f"MipsIndex {backend} +exclude"] / med[raw_name] - 1), 2)}
    return rows, over


def approximate_rows(data: dict, kind: str, args, device, faiss, lim) -> list[dict]:
    """An IVF (nprobe sweep) or HNSW (efSearch sweep) index: its build time, then a row per setting."""
    emb, k = data["emb"], args.k
    x = emb.cpu().numpy()
    n, d = x.shape
    items = batches(data, args.batch)
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        if kind == "ivf":
            nlist = nlist_for(n)
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            if device.type == "cuda":
                res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(res, device.index or 0, index)
            index.train(x)
            settings = sorted({min(p, nlist) for p in args.nprobe})
        else:
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            settings = list(args.ef)
        index.add(x)
        build_s = time.perf_counter() - t0
    rows = []
    for value in settings:
        if kind == "ivf" and device.type == "cuda":
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", value)
        elif kind == "ivf":
            index.nprobe = value
        else:
            index.hnsw.efSearch = value
        peak = {"search": mem.mib}
        times, ids = passes({"search": lambda q, ex: index.search(q.cpu().numpy(), k)[1]}, items, args.repeats,
                            device, peak)
        setting = f"nprobe={value}/{nlist}" if kind == "ivf" else f"efSearch={value}"
        rows.append(row(data, f"faiss {kind}", setting, build_s, times["search"],
                        recall(emb, data["queries"], ids["search"], data["truth"], k), peak["search"], k,
                        args.batch, lim, False))
    return rows


def table(name: str, n: int, rows: list[dict]) -> str:
    """One data set's rows as text."""
    def f(v, spec):
        return "–" if v is None else format(v, spec)
    lines = [f"{name}: N = {n:,}",
             f"{'method':<26}{'setting':<18}{'build s':>9}{'queries/s':>11}{'recall@k':>9}{'GFLOP/s':>9}"
             f"{'of fp32':>8}{'GB/s':>7}{'of read':>8}{'peak MiB':>10}"]
    for r in rows:
        lines.append(f"{r['method']:<26}{r['setting']:<18}{f(r['build_s'], '.3f'):>9}{r['queries_per_s']:>11,.0f}"
                     f"{r['recall_at_k']:>9.3f}{f(r['gflops'], '.1f'):>9}{f(r['fp32_frac'], '.1%'):>8}"
                     f"{f(r['gbs'], '.1f'):>7}{f(r['read_frac'], '.1%'):>8}{r['peak_mib']:>10,.0f}")
    return "\n".join(lines)


def summary(overhead: list[dict], repeats: int) -> str:
    """The wrapper's cost over the raw call, each backend and data set, against the claim."""
    parts = [f"{o['backend']} {o['dataset']} {o['overhead_pct']:+.1f}% ({o['exclude_pct']:+.1f}% with exclude=)"
             for o in overhead]
    held = sum(o["overhead_pct"] <= CLAIM_PCT for o in overhead)
    return (f"MipsIndex.search over the raw call, median of {repeats} passes: " + "; ".join(parts)
            + f". At most {CLAIM_PCT:g}% without exclude=: {held} of {len(overhead)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-cpu",
                    help="a shipped model's name or an export directory for the trained data set; none: skip it")
    ap.add_argument("--sizes", type=int, nargs="*", help="random data sets' sizes N (default 100000 1000000)")
    ap.add_argument("--k", type=int, default=7, help="blocks per query (default 7: REALM's k-1 retrieved blocks)")
    ap.add_argument("--batch", type=int, default=16, help="queries per search call (default 16: REALM's batch)")
    ap.add_argument("--queries", type=int, help="queries timed per pass (default 1024)")
    ap.add_argument("--repeats", type=int, help="timed passes; the median is reported (default 5)")
    ap.add_argument("--nprobe", type=int, nargs="+", help="IVF lists searched (default 1 4 16 64 256)")
    ap.add_argument("--ef", type=int, nargs="+", help="HNSW efSearch (default 16 32 64 128 256)")
    ap.add_argument("--quick", action="store_true", help="random sizes 2000 and 5000, 128 queries, 3 repeats, "
                                                         "nprobe 1 16, efSearch 16 64: a smoke run")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():  # what is given wins, --quick or not
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("k", "batch", "queries", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: 1 or more")
    for name in ("nprobe", "ef"):
        if any(v < 1 for v in getattr(args, name)):
            raise SystemExit(f"--{name} {' '.join(map(str, getattr(args, name)))}: each 1 or more")
    least = max(39, args.k + 1)  # one list of 39 points for IVF; k blocks left after one is excluded
    if any(n < least for n in args.sizes):
        raise SystemExit(f"--sizes {' '.join(map(str, args.sizes))}: each at least {least} (k + 1 blocks, and 39 "
                         f"points for an IVF list)")
    if args.model != "none":
        from realm_lite.export import resolve

        try:
            resolve(args.model)
        except FileNotFoundError as e:
            raise SystemExit(f"--model {args.model}: {e}") from None
    if not args.sizes and args.model == "none":
        raise SystemExit("nothing to measure: --model none and no --sizes")

    faiss = faiss_or_note(device)
    lim = limit(device)
    where = machine(device)
    print(f"{where.get('gpu') or where['cpu']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (FAISS {'-' if faiss is None else faiss.omp_get_max_threads()}); "
          f"k = {args.k}, batch {args.batch}, {args.queries} queries, median of {args.repeats} passes")
    if faiss is not None and device.type == "cuda":
        print("note: FAISS HNSW has no GPU index: its rows are skipped on --device cuda")
    sources = ([("model", args.model)] if args.model != "none" else []) + [("random", n) for n in sorted(args.sizes)]
    rows, overhead = [], []
    for kind, what in sources:  # smallest first: CPU peak memory is the process's high-water mark
        data = (trained_data(what, args.queries, device) if kind == "model"
                else random_data(what, args.queries, device))
        if data["exclude"] is None:  # random data: exclude each query's best block, so that exclusion acts
            data["exclude"] = exact_truth(data["emb"], data["queries"], 1, args.batch)[1][:, 0]
        if args.k > len(data["emb"]) - 1:
            raise SystemExit(f"--k {args.k}: {data['name']} has {len(data['emb'])} blocks, k + 1 at most")
        data["truth"] = exact_truth(data["emb"], data["queries"], args.k, args.batch)
        own = []
        for backend in ("exact", "flat"):
            if backend == "flat" and faiss is None:
                continue
            r, o = exhaustive_rows(data, backend, args, device, faiss, lim)
            own += r
            overhead.append(o)
        if faiss is not None:
            own += approximate_rows(data, "ivf", args, device, faiss, lim)
            if device.type != "cuda":
                own += approximate_rows(data, "hnsw", args, device, faiss, lim)
        print()
        print(table(data["name"], len(data["emb"]), own))
        rows += own
        del data
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print(summary(overhead, args.repeats))
    info = {**machine(device), "faiss_threads": None if faiss is None else faiss.omp_get_max_threads(),
            "faiss": None if faiss is None else faiss.__version__, "limit": lim, "model": args.model,
            "sizes": sorted(args.sizes), "k": args.k, "batch": args.batch, "queries": args.queries,
            "repeats": args.repeats, "nprobe": args.nprobe, "ef": args.ef, "claim_pct": CLAIM_PCT,
            "rows": rows, "overhead": overhead}
    write("mips_speed", info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
