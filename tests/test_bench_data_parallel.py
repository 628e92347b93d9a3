"""bench/data_parallel.py at smoke size: one process with one thread and with all, N ranks, and what each row must hold."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("data_parallel", Path(__file__).parents[1] / "bench" / "data_parallel.py")
data_parallel = importlib.util.module_from_spec(spec)
sys.modules["data_parallel"] = data_parallel  # the spawned ranks unpickle data_parallel._worker (bench/ is on sys.path)
spec.loader.exec_module(data_parallel)


@pytest.mark.slow  # three settings, each a fresh process or two preparing the quick corpus: about 20 s
def test_data_parallel_quick(tmp_path, capsys):
    out = tmp_path / "dp.json"
    assert data_parallel.main(["--quick", "--ranks", "2", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    cpus = os.cpu_count()
    modes = ["none", "sync", "async"]
    expected = [(n, t, m) for n, t in data_parallel.settings([2], cpus, data_parallel.torch.device("cpu")) for m in modes]
    assert [(r["ranks"], r["threads_per_rank"], r["refresh"]) for r in info["rows"]] == expected
    assert expected[-1][:2] == (2, max(1, cpus // 2)) and info["refresh_every"] == 2
    for r in info["rows"]:
        base = next(b for b in info["rows"] if b["ranks"] == 1 and b["threads_per_rank"] == cpus
                    and b["refresh"] == r["refresh"])
        assert r["steps"] == 4 and r["steps_per_s"] > 0 and r["build_seconds"] > 0 and r["failures"] == 0
        assert r["speedup"] == pytest.approx(r["steps_per_s"] / base["steps_per_s"], abs=1e-3)
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["ranks"], abs=1e-3)
        if r["refresh"] == "none":
            assert r["landed"] == 0
        if r["refresh"] == "sync":  # requests at t = 2 only, built in place
            assert r["landed"] == 1
        if r["ranks"] > 1:  # collectives measured
            assert r["allreduce_ms"] > 0 and r["search_ms"] > 0 and r["grad_mib"] > 0
    text = capsys.readouterr().out
    assert "ranks" in text and "all-reduce ms" in text and info["cpu"] in text


def test_data_parallel_rejects_bad_arguments():
    for argv, match in ((["--ranks", "0"], "each 1 or more"), (["--steps", "0"], "--steps"),
                        (["--steps", "10", "--refresh-every", "10"], "less than --steps"),
                        (["--model", "/nonexistent/model"], "--model")):
        with pytest.raises(SystemExit, match=match):  # before any process starts
            data_parallel.main(argv)
