"""What this CPU can do at most: its matrix-product rate (fp32, and bf16) and its memory bandwidth, with torch.

    python bench/machine_limit.py              # about 30 s on 2 cores
    python bench/machine_limit.py --quick      # smaller sizes: a smoke run of a few seconds
    python bench/machine_limit.py --device cuda  # a GPU's rates (bench/results/machine_limit-gpu-<name>.json)

The other speed figures of the project are read against these: a stage that runs at 10% of the matmul rate has
room to grow, one at 80% does not. It measures, with torch's own threads (all cores) and with one thread:

  matmul fp32   C = A @ B for square n x n matrices, 2 n^3 flops, the best of --repeats after one untimed call
  matmul bf16   the same in bfloat16 (fast only where the CPU has AVX-512 BF16 or AMX; emulated, and slow, elsewhere)
  read          a sum over a --mb MiB float32 tensor: bytes read per second
  copy          dst.copy_(src) of --mb MiB: bytes read plus bytes written per second

Prints a table and writes JSON to --json (default bench/results/machine_limit-<cpu capability>.json), with the
CPU model, torch's CPU capability (its instruction set), threads and torch version. Run it alone: anything else on
the cores lowers every number.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # common, also when loaded by path (tests)
from common import device_arg, machine, sync, write  # noqa: E402


def best_seconds(fn, repeats: int, device="cpu") -> float:
    """The fastest of `repeats` timed calls of fn, after one untimed call (GPU work waited for)."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int, dtype: torch.dtype, repeats: int, device="cpu") -> float:
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    return 2 * n ** 3 / best_seconds(lambda: torch.mm(a, b, out=out), repeats, device) / 1e9


def read_gbs(mb: int, repeats: int, device="cpu") -> float:
    x = torch.ones(mb * 2 ** 20 // 4, device=device)
    return x.numel() * 4 / best_seconds(lambda: x.sum(), repeats, device) / 1e9


def copy_gbs(mb: int, repeats: int, device="cpu") -> float:
    src, dst = torch.ones(mb * 2 ** 20 // 4, device=device), torch.empty(mb * 2 ** 20 // 4, device=device)
    return 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src), repeats, device) / 1e9


def measure(n: int, mb: int, repeats: int, threads: int, device="cpu") -> dict:
    """The four rates with `threads` torch threads (on a GPU: the GPU's, with torch's default fp32 matmul, no TF32)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {"threads": threads,
                "matmul_fp32_gflops": round(matmul_gflops(n, torch.float32, repeats, device), 1),
                "matmul_bf16_gflops": round(matmul_gflops(n, torch.bfloat16, repeats, device), 1),
                "read_gbs": round(read_gbs(mb, repeats, device), 1),
                "copy_gbs": round(copy_gbs(mb, repeats, device), 1)}
    finally:
        torch.set_num_threads(before)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096, help="matrix size for the matmul (default 4096)")
    ap.add_argument("--mb", type=int, default=1024, help="MiB of float32 for the bandwidth (default 1024)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="n=1024, 128 MiB, 2 repeats: a smoke run")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    if args.quick:
        args.n, args.mb, args.repeats = 1024, 128, 2
    for name in ("n", "mb", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: 1 or more")
    cores = torch.get_num_threads()
    threads = [cores] if device.type == "cuda" else sorted({cores, 1}, reverse=True)
    if device.type == "cuda":  # a GPU: sizes that keep it busy
        args.n, args.mb = max(args.n, 8192), max(args.mb, 4096)
    rows = [measure(args.n, args.mb, args.repeats, t, device) for t in threads]
    info = {**machine(device), "n": args.n, "mb": args.mb, "repeats": args.repeats, "rows": rows}
    where = info.get("gpu") or f"{info['cpu']} ({info['cpu_capability']})"
    print(f"{where}, torch {torch.__version__}; matmul {args.n} x {args.n}, bandwidth over {args.mb} MiB, "
          f"best of {args.repeats}")
    print(f"{'threads':>8}{'fp32 GFLOP/s':>14}{'bf16 GFLOP/s':>14}{'read GB/s':>11}{'copy GB/s':>11}")
    for r in rows:
        print(f"{r['threads']:>8}{r['matmul_fp32_gflops']:>14}{r['matmul_bf16_gflops']:>14}{r['read_gbs']:>11}"
              f"{r['copy_gbs']:>11}")
    write("machine_limit", info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
