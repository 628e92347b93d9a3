"""bench/mips_speed.py at tiny sizes: a row per method and setting, exhaustive search exact, ties and exclusions in
recall, the wrapper's overhead summarised, bad input refused before any work."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("mips_speed", Path(__file__).parents[1] / "bench" / "mips_speed.py")
mips_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mips_speed)

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def test_tiny_random_run_has_a_row_per_setting_and_exhaustive_search_is_exact(tmp_path, capsys):
    out = tmp_path / "mips.json"
    assert mips_speed.main(["--quick", "--model", "none", "--sizes", "400", "300", "--queries", "24", "--batch", "8",
                            "--repeats", "2", "--nprobe", "1", "100", "--ef", "16", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert info["sizes"] == [300, 400] and info["k"] == 7 and info["threads"] >= 1 and info["rows"]
    names = [r["dataset"] for r in info["rows"]]
    assert names.index("random-300") < names.index("random-400")  # smallest first: peak memory only grows on a CPU
    for n in (300, 400):
        rows = [r for r in info["rows"] if r["dataset"] == f"random-{n}"]
        methods = [r["method"] for r in rows]
        assert methods[:3] == ["torch exact", "MipsIndex exact", "MipsIndex exact +exclude"]
        nlist = mips_speed.nlist_for(n)  # 7 and 10 lists: nprobe 100 is capped at nlist
        if HAS_FAISS:
            assert methods[3:] == ["faiss flat", "MipsIndex flat", "MipsIndex flat +exclude", "faiss ivf", "faiss ivf",
                                   "faiss hnsw"]
            assert [r["setting"] for r in rows[6:]] == [f"nprobe=1/{nlist}", f"nprobe={nlist}/{nlist}", "efSearch=16"]
            assert rows[7]["recall_at_k"] == 1.0  # every list probed: IVF is exhaustive
            assert all(r["build_s"] > 0 for r in rows[6:])
        else:
            assert len(rows) == 3
        for r in rows:
            assert r["n"] == n and r["queries_per_s"] > 0 and r["peak_mib"] > 0 and 0 <= r["recall_at_k"] <= 1
            assert f"{r['method']:<26}{r['setting']:<18}" in printed
            if r["method"].startswith(("torch", "MipsIndex", "faiss flat")):
                assert r["recall_at_k"] == 1.0  # exhaustive search, with or without an excluded block
                assert r["gflops"] == pytest.approx(r["queries_per_s"] * 2 * n * 128 / 1e9, rel=1e-2)
                assert 0 < r["fp32_frac"] and 0 < r["read_frac"]
            else:
                assert r["gflops"] is None
    backends = ["exact", "flat"] if HAS_FAISS else ["exact"]
    assert [(o["dataset"], o["backend"]) for o in info["overhead"]] == [
        (f"random-{n}", b) for n in (300, 400) for b in backends]
    for o in info["overhead"]:
        ratio = 1 + o["overhead_pct"] / 100  # the times are rounded to 4 significant figures, the percentage is not
        assert ratio == pytest.approx(o["wrapper_s"] / o["raw_s"], rel=1e-3)
    assert "MipsIndex.search over the raw call, median of 2 passes" in printed
    assert "without exclude=: " in printed


def test_recall_counts_ties_and_respects_an_excluded_block():
    emb = torch.tensor([[3.0, 0], [3.0, 0], [2.0, 0], [1.0, 0], [0.0, 0]])  # blocks 0 and 1 tie
    q = torch.tensor([[1.0, 0]])
    truth = mips_speed.exact_truth(emb, q, 1, batch=4)  # top 2: {0, 1} in some order
    assert mips_speed.recall(emb, q, torch.tensor([[0]]), truth, 1) == 1.0
    assert mips_speed.recall(emb, q, torch.tensor([[1]]), truth, 1) == 1.0  # a tie with the best counts
    assert mips_speed.recall(emb, q, torch.tensor([[2]]), truth, 1) == 0.0
    assert mips_speed.recall(emb, q, torch.tensor([[-1]]), truth, 1) == 0.0  # FAISS's padding is never found
    truth = mips_speed.exact_truth(emb, q, 2, batch=4)
    ex = truth[1][:, :1]  # whichever of the tied pair comes first is excluded; the other, then block 2 remain
    kept = ({0, 1} - {int(ex)}).pop()
    assert mips_speed.recall(emb, q, torch.tensor([[kept, 2]]), truth, 2, ex[:, 0]) == 1.0
    assert mips_speed.recall(emb, q, torch.tensor([[kept, 3]]), truth, 2, ex[:, 0]) == 0.5
    assert mips_speed.recall(emb, q, torch.tensor([[int(ex), kept]]), truth, 2, ex[:, 0]) == 0.5


@pytest.mark.parametrize("argv, message", [
    (["--k", "0"], "--k 0: 1 or more"),
    (["--batch", "-1"], "--batch -1: 1 or more"),
    (["--nprobe", "4", "0"], "--nprobe 4 0: each 1 or more"),
    (["--sizes", "20"], "--sizes 20: each at least 39"),
    (["--model", "no-such-model"], "--model no-such-model"),
    (["--model", "none", "--sizes"], "nothing to measure"),
    (["--device", "mps"], "--device mps: cpu, cuda or cuda:N"),
])
def test_bad_input_is_refused_before_any_work(argv, message, monkeypatch):
    monkeypatch.setattr(mips_speed, "random_data", lambda *a: pytest.fail("data built before the input was checked"))
    monkeypatch.setattr(mips_speed, "trained_data", lambda *a: pytest.fail("model loaded before the input was checked"))
    with pytest.raises(SystemExit, match=message):
        mips_speed.main(argv)


@pytest.mark.slow
def test_the_shipped_model_is_the_first_data_set(tmp_path):
    out = tmp_path / "mips.json"
    assert mips_speed.main(["--quick", "--sizes", "--queries", "32", "--repeats", "1", "--nprobe", "1",
                            "--ef", "16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["dataset"] for r in rows} == {"world-cpu"} and all(r["n"] == 2002 for r in rows)
    exact = [r for r in rows if r["method"].startswith(("torch", "MipsIndex"))]
    assert exact and all(r["recall_at_k"] == 1.0 for r in exact)  # x's own block excluded by MipsIndex +exclude
