"""bench/refresh_hidden.py at smoke size: a row per setting, refresh counts that must hold, the raw fraction hidden."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("refresh_hidden",
                                              Path(__file__).parents[1] / "bench" / "refresh_hidden.py")
refresh_hidden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(refresh_hidden)


@pytest.mark.slow  # three builder processes spawned, each importing torch: 10-40 s
def test_refresh_hidden_quick(tmp_path, capsys):
    out = tmp_path / "refresh.json"
    assert refresh_hidden.main(["--quick", "--steps", "3", "--refresh-every", "2", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    rows, steps = info["rows"], 3
    assert info["steps"] == steps and info["refresh_every"] == 2 and info["blocks"] > 0
    modes = [(r["mode"], r["trainer_threads"]) for r in rows]
    default = info["default_threads"]
    assert modes[:3] == [("none", default), ("sync", default), ("async", default)]
    cpus = os.cpu_count()
    if cpus > 1 and cpus - 1 != default:
        assert modes[3:] == [("none", cpus - 1), ("async", cpus - 1)]
    text = capsys.readouterr().out
    table = text[text.index("mode "):].splitlines()
    assert len([line for line in table if line.split()[:1] in (["none"], ["sync"], ["async"])]) == len(rows)
    assert "80%" in text
    for r in rows:
        assert r["cpus"] == cpus and r["steps"] == steps
        assert r["steps_per_s"] > 0 and r["seconds"] > 0 and r["peak_mib"] > 0
        assert r["started"] + r["skipped_busy"] == r["requests"] and r["landed"] <= r["started"]
        assert r["failures"] == 0, r["failure_messages"]
        if r["mode"] == "none":  # the starting index serves every step: staleness t at step t
            assert r["requests"] == r["landed"] == 0 and r["builder_threads"] is None
            assert r["mean_staleness"] == (steps - 1) / 2 and r["max_staleness"] == steps - 1
        else:  # a request at t = 2 only
            assert r["requests"] == 1
        if r["mode"] == "sync":  # built in the loop: every request lands at once
            assert r["started"] == r["landed"] == 1 and r["max_staleness"] < info["refresh_every"]
            assert r["mean_build_seconds"] > 0
        if r["mode"] == "async":
            assert r["builder_threads"] == 1 and r["started"] == 1
            t_none, t_sync = info["summary"]["t_none"], info["summary"]["t_sync"]
            assert r["fraction_hidden"] == pytest.approx((t_sync - r["seconds"]) / (t_sync - t_none), abs=1e-3)
    assert len(info["summary"]["async"]) == sum(r["mode"] == "async" for r in rows)


@pytest.mark.parametrize("argv, match", [(["--steps", "3", "--refresh-every", "3"], "--refresh-every 3"),
                                         (["--steps", "0"], "--steps 0"),
                                         (["--builder-threads", "0"], "--builder-threads 0"),
                                         (["--model", "no-such-model"], "--model no-such-model")])
def test_refresh_hidden_bad_input(argv, match):
    with pytest.raises(SystemExit, match=match):
        refresh_hidden.main(argv)
