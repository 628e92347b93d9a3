"""bench/zero_shot.py: recall@k counted as defined, a retriever as built or a run's, BM25 beside it, bad input."""
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

spec = importlib.util.spec_from_file_location("zero_shot", Path(__file__).parents[1] / "bench" / "zero_shot.py")
zero_shot = importlib.util.module_from_spec(spec)
sys.modules["zero_shot"] = zero_shot
spec.loader.exec_module(zero_shot)


def test_recall_counts_the_first_answer_bearing_block():
    blocks = [SimpleNamespace(text=t) for t in ("nothing here", "Paris is a city", "more nothing", "Paris again")]
    examples = [SimpleNamespace(answers=["Paris"], regex=False)] * 3
    tops = [[1, 0, 2], [0, 2, 3], [0, 2, 0]]  # first answer at rank 0, at rank 2, never
    assert zero_shot.recall(tops, examples, blocks, [1, 2, 3]) == {"recall@1": 0.3333, "recall@2": 0.3333,
                                                                   "recall@3": 0.6667}


@pytest.mark.slow
def test_a_run_and_a_preset_as_built(demo_run, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert zero_shot.main(["--corpus", "world", "--init", str(demo_run.out / "pretrain"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    dense, bm25 = result["rows"]
    assert dense["retriever"] == "dense (the run)" and bm25["retriever"] == "bm25"
    assert result["questions"] > 0 and result["machine"]["cpu"]
    for row in (dense, bm25):
        assert 0 <= row["recall@1"] <= row["recall@5"] <= row["recall@20"] <= 1
    assert bm25["recall@5"] > 0.9  # the world's questions name their subject: BM25 finds its page
    assert "dense (the run)" in capsys.readouterr().out
    built = tmp_path / "built.json"
    assert zero_shot.main(["--corpus", "world", "--preset", "quick", "--k", "3", "--runs", str(tmp_path / "runs"),
                           "--out", str(built)]) == 0
    assert json.loads(built.read_text())["rows"][0]["retriever"] == "dense (random weights)"


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        zero_shot.main(["--k", "0", "--out", str(tmp_path / "x.json")])
    assert "at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zero_shot.main(["--init", "runs/x", "--set", "pooling=mean", "--out", str(tmp_path / "x.json")])
    assert "--set changes how a run is built" in capsys.readouterr().err
