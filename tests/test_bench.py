"""The benches' own logic: small_scale's summary, qa's table, step_speed's errors, the shared REALM timing loop,
machine_limit's table."""
import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("small_scale", Path(__file__).parents[1] / "bench" / "small_scale.py")
small_scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(small_scale)


def _arm(r5, acc):
    return {"recall@1": r5 / 2, "recall@5": r5, "acc_retrieval": acc, "acc_null": 0.0, "acc_gold": 0.5}


def test_summary_means_standard_errors_and_paired_differences():
    results = {"seeds": {"0": {"realm": _arm(0.5, 0.30), "frozen": _arm(0.4, 0.20)},
                         "1": {"realm": _arm(0.7, 0.40), "frozen": _arm(0.5, 0.25)},
                         "2": {"realm": _arm(0.6, 0.35)}}}  # seed 2's frozen arm has not run yet
    s = small_scale.summarize(results)
    assert s["arms"]["realm"]["recall@5"] == {"mean": 0.6, "se": 0.0577, "n": 3}
    assert s["arms"]["frozen"]["acc_retrieval"]["n"] == 2
    paired = s["paired"]["realm-frozen"]  # seeds 0 and 1 only: differences 0.1 and 0.2
    assert paired["recall@5"]["n"] == 2 and paired["recall@5"]["mean"] == pytest.approx(0.15)
    assert paired["recall@5"]["se"] == pytest.approx(0.05)
    assert "realm-warmstart" not in s["paired"] and "cold" not in s["arms"]
    text = small_scale.table(s)
    assert "realm-frozen" in text and "0.600 ± 0.058" in text
    md = small_scale.markdown(s).splitlines()
    assert md[0].count("|") == md[2].count("|") == md[-1].count("|") == 8  # every row has every column
    assert md[2].startswith("| realm | 3 | 0.300 ± 0.029 | 0.600 ± 0.058 |")


def test_a_single_seed_has_no_standard_error():
    s = small_scale.summarize({"seeds": {"0": {"realm": _arm(0.5, 0.3)}}})
    assert s["arms"]["realm"]["recall@5"]["se"] is None
    assert "0.500" in small_scale.table(s)


def test_results_of_an_older_recipe_are_not_resumed(tmp_path, capsys):
    out = tmp_path / "old.json"  # written before the preset changed: same preset and overrides, no recipe hash
    out.write_text('{"preset": "quick", "overrides": {}, "arm_overrides": {}, "seeds": {"0": {"realm": {}}}}')
    assert small_scale.main(["--preset", "quick", "--seeds", "0", "--out", str(out)]) == 2
    assert "another preset, recipe or other overrides" in capsys.readouterr().err


def test_keys_added_later_change_the_recipe_hash_only_when_set():
    from realm_lite.config import get_config

    d = get_config("cpu").to_dict()
    older = {k: v for k, v in d.items() if k not in small_scale.LATER_KEYS}  # a recipe recorded before the keys
    assert set(small_scale.LATER_KEYS) <= set(d) and small_scale._digest(d) == small_scale._digest(older)
    assert small_scale._digest(get_config("cpu", world_restate=3).to_dict()) != small_scale._digest(d)
    assert small_scale._digest({**d, "qa_steps": 1}) == small_scale._digest(d)


qa_spec = importlib.util.spec_from_file_location("bench_qa", Path(__file__).parents[1] / "bench" / "qa.py")
bench_qa = importlib.util.module_from_spec(qa_spec)
qa_spec.loader.exec_module(bench_qa)


def test_qa_markdown_has_a_row_per_system_and_dashes_for_what_did_not_run():
    results = {"systems": [{"system": "realm", "questions": 10, "em": 0.3, "top1": 0.5, "top5": 0.8,
                            "update_new": 0.6, "update_old": 0.1, "finetune_seconds": 12.0},
                           {"system": "closed-book", "questions": 10, "em": 0.0, "finetune_seconds": 1.0}]}
    md = bench_qa.markdown(results).splitlines()
    assert len(md) == 4 and all(line.count("|") == md[0].count("|") for line in md)
    assert md[2].startswith("| realm | 10 | 0.300 | 0.500 | 0.800 | 0.600 | 0.100 |")
    assert md[3] == "| closed-book | 10 | 0.000 | – | – | – | – | 1.0 |"


speed_spec = importlib.util.spec_from_file_location("step_speed", Path(__file__).parents[1] / "bench" / "step_speed.py")
step_speed = importlib.util.module_from_spec(speed_spec)
speed_spec.loader.exec_module(step_speed)


def test_step_speed_names_a_missing_state(tmp_path):
    with pytest.raises(SystemExit, match="no warmstart.pt or curves_state.pt"):
        step_speed.main(["--run", str(tmp_path)])
    with pytest.raises(SystemExit, match="nope.pt: no such file"):
        step_speed.main(["--state", str(tmp_path / "nope.pt")])


def test_warm_from_adopts_a_pretrain_runs_warm_start_only_for_the_same_recipe(tmp_path):
    import json

    import torch

    from realm_lite.config import get_config

    run, cfg = tmp_path / "run", get_config("quick", seed=0, progress=False)
    with pytest.raises(FileNotFoundError, match="warmstart.pt"):
        small_scale.adopt_warm_start(run, cfg, tmp_path / "base")
    cfg.replace(progress=True).save(run)  # the CLI's run draws a progress bar: not part of the recipe
    (run / "tokenizer").mkdir()
    (run / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    (run / "blocks.jsonl").write_text("{}\n")
    torch.save({"model": {"w": torch.ones(2)}, "result": {"eval": {"recall@5": 0.5}, "retriever_seconds": 1.0,
                                                          "reader_warmup_seconds": 2.5}}, run / "warmstart.pt")
    with pytest.raises(ValueError, match="differs in k"):
        small_scale.adopt_warm_start(run, cfg.replace(k=4), tmp_path / "other")
    base = tmp_path / "base"
    small_scale.adopt_warm_start(run, cfg, base)
    assert torch.equal(torch.load(base / "warm.pt")["w"], torch.ones(2))
    warm = json.loads((base / "warm.json").read_text())
    assert warm["recall@5"] == 0.5 and warm["seconds"] == 3.5 and warm["from"] == str(run)
    assert (base / "tokenizer" / "vocab.txt").read_text() == "[PAD]\n" and (base / "blocks.jsonl").exists()


qc_spec = importlib.util.spec_from_file_location("qa_compare", Path(__file__).parents[1] / "bench" / "qa_compare.py")
qa_compare = importlib.util.module_from_spec(qc_spec)
qc_spec.loader.exec_module(qa_compare)


def test_qa_compare_pairs_questions_and_splits_first_blocks_by_page(tmp_path):
    def row(i, correct, rank, title):
        return {"id": i, "question": f"When was Ana {i} born?", "correct": correct, "answer_in_top": rank,
                "retrieved": [{"block": "b", "title": title, "score": 1.0}]}
    a = {"q1": row("q1", True, 1, "Ana q1"), "q2": row("q2", True, 3, "Bexford"), "q3": row("q3", False, None, "X")}
    b = {"q1": row("q1", True, 1, "Ana q1"), "q2": row("q2", False, None, "Y"), "q3": row("q3", True, 1, "X")}
    p = qa_compare.paired(a, b)
    assert (p["questions"], p["wins_a"], p["wins_b"], p["diff"]) == (3, 1, 1, 0.0)
    assert (p["only_a_top5"], p["only_a_top5_answered"], p["only_b_top5"], p["both_first"]) == (1, 1, 1, 1)
    assert p["se"] == pytest.approx((2 / 2) ** 0.5 / 3 ** 0.5)  # differences 0, 1, -1: sample sd 1
    f = qa_compare.first_block(a)  # q1's first block is its subject's own page ("Ana q1" named in the question)
    assert f["own_first"] == pytest.approx(1 / 3) and f["em_own_first"] == 1 and f["em_other_first"] == 0.5
    assert qa_compare.main([str(tmp_path)]) == 2  # no predictions: a clear error, exit status 2


@pytest.mark.slow
def test_timed_realm_steps_train_the_retriever_and_leave_a_frozen_reader_alone(tmp_path):
    import torch

    from realm_lite.config import get_config
    from realm_lite.pretrain import setup_run
    from realm_lite.refresh import build_index

    timing_file = Path(__file__).parents[1] / "bench" / "realm_timing.py"
    timing_spec = importlib.util.spec_from_file_location("realm_timing", timing_file)
    realm_timing = importlib.util.module_from_spec(timing_spec)
    timing_spec.loader.exec_module(realm_timing)
    parts = setup_run("world", get_config("quick", realm_steps=2), tmp_path / "run", log=lambda s: None)
    cfg = parts.cfg.replace(reader_lr=0.0, retriever_lr=1e-3)
    model = parts.model
    index = build_index(model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, parts.device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rate = realm_timing.realm_steps(model, cfg, parts.pool, index, parts.inputs, parts.device, steps=1)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert rate > 0 and changed == {"retriever"}  # 3 steps (2 untimed) moved the towers, not the frozen reader
    assert model.training and all(p.requires_grad for p in model.parameters())  # freeze_untrained undone


def test_machine_limit_writes_its_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("machine_limit", Path(__file__).parents[1] / "bench" /
                                                  "machine_limit.py")
    machine_limit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine_limit)
    out = tmp_path / "m.json"
    assert machine_limit.main(["--n", "256", "--mb", "16", "--repeats", "1", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["cpu_capability"] and info["torch"] and info["rows"][-1]["threads"] == 1
    assert all(r[k] > 0 for r in info["rows"] for k in ("matmul_fp32_gflops", "read_gbs", "copy_gbs"))
    assert "fp32 GFLOP/s" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--n 0"):
        machine_limit.main(["--n", "0"])
