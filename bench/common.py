"""What every speed bench shares: the machine it ran on, its limit, peak memory and where the JSON goes.

Not a benchmark. Each bench records `machine(device)` (CPU model, instruction set, threads, torch, GPU name) with
its rows, reads its rates against `limit(device)` (the matrix-product rate and memory bandwidth that
bench/machine_limit.py measured and saved for this machine, measured now when no saved file matches), and reports
peak memory with `PeakMemory`.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from realm_lite.io import atomic_write_text

RESULTS = Path(__file__).parent / "results"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_arg(name: str) -> torch.device:
    """--device: cpu, cuda or cuda:N; a missing GPU is a clear error before any work."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name}: cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: cpu, cuda or cuda:N")
    return device


def machine(device: torch.device | str = "cpu") -> dict:
    """What a result was measured on: CPU model and instruction set, threads, torch and, on CUDA, the GPU."""
    device = torch.device(device)
    info = {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device), "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def tag(device: torch.device | str = "cpu") -> str:
    """A results-file suffix naming the machine kind: avx2, avx512, ... or the GPU (h200, a100, ...)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower().replace("nvidia", "").strip()
        return "gpu-" + (name.split()[0] if name else "cuda")
    return torch.backends.cpu.get_cpu_capability().lower()


def limit(device: torch.device | str = "cpu", threads: int | None = None) -> dict:
    """The machine's fp32 and bf16 matrix-product rates (GFLOP/s) and read bandwidth (GB/s), from
    bench/results/machine_limit-<tag>.json when it was measured on this CPU (or GPU), else measured now, briefly."""
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    path = RESULTS / f"machine_limit-{tag(device)}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        same = saved.get("cpu") == cpu_model() and saved.get("gpu") == (
            torch.cuda.get_device_name(device) if device.type == "cuda" else None)
        rows = [r for r in saved.get("rows", []) if device.type == "cuda" or r["threads"] == threads]
        if same and rows:
            return {**rows[0], "source": str(path.relative_to(RESULTS.parent.parent))}
    sys.path.insert(0, str(Path(__file__).parent))
    from machine_limit import measure  # noqa: E402

    row = measure(2048, 256, 2, threads, device)
    return {**row, "source": "measured now (n=2048, 256 MiB)"}


class PeakMemory:
    """Peak memory of what runs inside `with PeakMemory(device) as m:` -> m.mib.

    On CUDA: torch's peak allocation on the device, reset on entry. On a CPU: the process's resident-set
    high-water mark (ru_maxrss) at exit. That mark never falls, so a bench measures its smallest settings
    first, and a figure is the process's peak so far, an upper bound for the step itself."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.mib = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 20, 1)
        else:
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            self.mib = round(kib / 1024, 1)
        return False


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it; nothing on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write(name: str, info: dict, path: str | Path | None = None, quick: bool = False) -> Path:
    """bench/results/<name>-<tag>[-quick].json (or `path`), written atomically; prints where."""
    out = Path(path) if path else RESULTS / f"{name}-{tag(info.get('device', 'cpu'))}{'-quick' if quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(info, indent=2) + "\n")
    print(f"written to {out}")
    return out
