"""bench/ablation.py: every row of the table, its numbers taken from the runs it recorded, its shared parts, resume."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("ablation", Path(__file__).parents[1] / "bench" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
sys.modules["ablation"] = ablation  # its dataclass looks its module up there
spec.loader.exec_module(ablation)

TINY = ["ict_steps=8", "reader_warmup_steps=8", "realm_steps=4", "refresh_every=2", "refresh_mode=sync",
        "eval_queries=30", "qa_steps=3", "qa_retrieve=8", "qa_read=3", "warmup_steps=1", "log_every=10"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    d = tmp_path_factory.mktemp("ablation")
    argv = ["--preset", "quick", "--seeds", "0", "--set", *TINY, "--runs", str(d / "runs"),
            "--out", str(d / "ablation.json")]
    assert ablation.main(argv) == 0
    return d, argv, json.loads((d / "ablation.json").read_text())


def _weights(path, prefix):
    return {k: v for k, v in torch.load(path, map_location="cpu", weights_only=False)["model"].items()
            if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_every_row_is_recorded_from_its_own_runs(done):
    d, _, results = done
    rows = results["seeds"]["0"]
    assert list(rows) == [r.name for r in ablation.ROWS]
    for row in ablation.ROWS:
        r = rows[row.name]
        run = Path(r["run"])
        qa = json.loads((run / "qa" / row.system / "metrics-test.json").read_text())
        assert r["em"] == qa["em"] and r["questions"] == qa["questions"] > 0
        if row.system == "realm":  # the pre-training evaluation of its own weights
            pre = json.loads((run / "pretrain.json").read_text())["eval"]
            assert {k: r[k] for k in ablation.PRETRAIN_KEYS} == {k: pre[k] for k in ablation.PRETRAIN_KEYS}
        assert ("zero_shot_recall@5" in r) == (row.system != "closed-book")
        assert r["machine"]["cpu_capability"] and r["seconds"] >= r["qa_seconds"]
    summary = results["summary"]["rows"]
    assert all(summary[n]["em"] == {"mean": rows[n]["em"], "se": None, "n": 1} for n in rows)
    assert results["summary"]["paired"]["frozen"]["em"]["mean"] == round(rows["frozen"]["em"] - rows["realm"]["em"], 4)


@pytest.mark.slow
def test_zero_shot_recall_is_the_row_retrievers_before_fine_tuning(done):
    from realm_lite.qa import answer_recall, system_from_run
    from realm_lite.qa_data import load_qa

    _, _, results = done
    rows = results["seeds"]["0"]
    qa = system_from_run(rows["baseline"]["run"], "realm", log=lambda s: None)
    assert answer_recall(qa, load_qa("world", "test", world=qa.world), 5) == pytest.approx(
        rows["baseline"]["zero_shot_recall@5"], abs=1e-4)
    # rows that share a retriever share its zero-shot recall, as in the paper's table
    assert rows["realm-retriever+baseline-encoder"]["zero_shot_recall@5"] == rows["realm"]["zero_shot_recall@5"]
    assert rows["baseline-retriever+realm-encoder"]["zero_shot_recall@5"] == rows["baseline"]["zero_shot_recall@5"]


@pytest.mark.slow
def test_rows_are_built_from_the_parts_they_name(done):
    _, _, results = done
    rows = results["seeds"]["0"]
    ck = {n: Path(rows[n]["run"]) / "checkpoint.pt" for n in rows}
    base = Path(rows["realm"]["run"]).parents[1] / "base"
    ict = torch.load(base / "ict.pt", weights_only=True)
    baseline_reader = torch.load(base / "baseline.pt", weights_only=True)
    warm = torch.load(base / "warm.pt", weights_only=True)
    assert _same(_weights(ck["realm-retriever+baseline-encoder"], "retriever."), _weights(ck["realm"], "retriever."))
    assert _same(_weights(ck["realm-retriever+baseline-encoder"], "reader."), baseline_reader)
    assert _same(_weights(ck["baseline"], "retriever."), ict) and _same(_weights(ck["baseline"], "reader."),
                                                                       baseline_reader)
    assert _same(_weights(ck["baseline-retriever+realm-encoder"], "reader."), _weights(ck["realm"], "reader."))
    assert _same(_weights(ck["frozen"], ""), warm)
    # the quick preset freezes the reader in REALM: realm's encoder is the warm start's; the baseline encoder is not
    assert _same(_weights(ck["realm"], "reader."), {k: v for k, v in warm.items() if k.startswith("reader.")})
    assert not _same(baseline_reader, {k: v for k, v in warm.items() if k.startswith("reader.")})
    assert not _same(_weights(ck["realm-reader-trained"], "reader."), _weights(ck["realm"], "reader."))
    cfg = {n: rows[n]["config"] for n in rows}
    assert cfg["stale-30x"] == {"refresh_every": 60} and cfg["random-token"] == {"masking": "random-token"}
    assert cfg["random-span"] == {"masking": "random-span"} and cfg["realm"] == cfg["cold"] == {}


@pytest.mark.slow
def test_a_second_call_runs_nothing_and_prints_the_table(done, monkeypatch, capsys):
    d, argv, results = done
    monkeypatch.setattr(ablation, "Seed", None)  # any seed set up again would fail
    assert ablation.main(argv) == 0
    assert json.loads((d / "ablation.json").read_text())["seeds"] == results["seeds"]
    assert "closed-book" in capsys.readouterr().out and (d / "ablation.png").stat().st_size > 0
    (d / "ablation.png").unlink()
    assert ablation.main(["--markdown", "--out", str(d / "ablation.json")]) == 0
    assert (d / "ablation.png").stat().st_size > 0  # drawn again from the file
    md = capsys.readouterr().out.strip().splitlines()
    assert len(md) == 2 + len(ablation.ROWS) and len({line.count("|") for line in md}) == 1
    assert md[2].startswith("| realm | REALM: 38.2 / 38.5 | 1 |")


@pytest.mark.slow
def test_rows_left_after_the_run_files_are_lost_remake_the_warm_start_and_realm(done, tmp_path):
    d, argv, results = done
    out = tmp_path / "ablation.json"
    lost = {**results, "seeds": {"0": {n: r for n, r in results["seeds"]["0"].items() if n != "bm25"}}}
    out.write_text(json.dumps(lost))  # bm25 not yet run, and no run directories (another machine)
    argv = [*argv[:argv.index("--runs")], "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert ablation.main(argv) == 0
    again = json.loads(out.read_text())
    assert list(again["seeds"]["0"]) == [r.name for r in ablation.ROWS]
    assert {n: r for n, r in again["seeds"]["0"].items() if n != "bm25"} == lost["seeds"]["0"]
    assert Path(again["seeds"]["0"]["bm25"]["run"]).is_relative_to(tmp_path / "runs")
    rebuilt = again["rebuilt"]["0"]
    assert set(rebuilt) == {"warm", "realm"}
    # refresh_mode=sync: REALM, like the warm start, is deterministic here, so both evaluate as recorded
    assert all(r["matches_record"] and r["now"] == r["recorded"] for r in rebuilt.values())
    assert rebuilt["realm"]["recorded"]["recall@5"] == results["seeds"]["0"]["realm"]["recall@5"]


def _row(em, recall):
    return {"em": em, "zero_shot_recall@5": recall, "recall@5": recall, "acc_retrieval": em / 2, "acc_null": 0.0}


def test_summary_means_standard_errors_and_differences_paired_with_realm():
    results = {"seeds": {"0": {"realm": _row(0.5, 0.8), "baseline": _row(0.3, 0.5)},
                         "1": {"realm": _row(0.7, 0.9), "baseline": _row(0.4, 0.7)},
                         "2": {"realm": _row(0.6, 0.85)}}}  # seed 2's baseline row has not run yet
    s = ablation.summarize(results)
    assert s["rows"]["realm"]["em"] == {"mean": 0.6, "se": 0.0577, "n": 3}
    assert s["rows"]["baseline"]["em"]["n"] == 2 and "frozen" not in s["rows"]
    paired = s["paired"]["baseline"]["em"]  # seeds 0 and 1: -0.2 and -0.3
    assert paired["mean"] == pytest.approx(-0.25) and paired["se"] == pytest.approx(0.05) and paired["n"] == 2
    md = ablation.markdown(s).splitlines()
    assert md[3].startswith("| baseline | baseline (ORQA): 31.3 / 13.9 | 2 | 0.350 ± 0.050 | -0.250 ± 0.050 |")


@pytest.mark.parametrize("args, message", [(["--stale-factor", "1"], "at least 2"),
                                           (["--warm-from", "x", "--seeds", "0", "1"], "a single --seeds")])
def test_bad_arguments_are_named_before_any_work(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        ablation.main(["--preset", "quick", "--out", str(tmp_path / "a.json"), *args])
    assert message in capsys.readouterr().err


def test_results_of_another_setting_are_not_resumed(tmp_path, capsys):
    out = tmp_path / "a.json"
    out.write_text('{"preset": "quick", "overrides": {}, "stale_factor": 10, "recipe": "x", "seeds": {}}')
    assert ablation.main(["--preset", "quick", "--seeds", "0", "--out", str(out)]) == 2
    assert "another preset, recipe, overrides or stale factor" in capsys.readouterr().err


def test_the_recipe_hash_covers_pre_training_and_fine_tuning_but_not_the_seed():
    from realm_lite.config import get_config

    d = ablation.recipe_digest
    assert d(get_config("cpu", seed=3)) == d(get_config("cpu"))
    assert d(get_config("cpu", qa_steps=1)) != d(get_config("cpu")) != d(get_config("cpu", realm_steps=1))


def test_markdown_of_a_missing_results_file_is_an_error(tmp_path, capsys):
    assert ablation.main(["--markdown", "--out", str(tmp_path / "none.json")]) == 2
    assert "no results in" in capsys.readouterr().err


def test_the_docs_table_is_the_committed_results_file():
    """docs/results.md's ablation table is `python bench/ablation.py --markdown` of bench/results/ablation-cpu.json."""
    root = Path(__file__).parents[1]
    results = json.loads((root / "bench" / "results" / "ablation-cpu.json").read_text())
    docs = (root / "docs" / "results.md").read_text()
    assert ablation.markdown(ablation.summarize(results)) in docs
    assert results["summary"] == ablation.summarize(results)  # the file's summary is its seeds'
