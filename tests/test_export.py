"""Export and load_pretrained: weights after fp16/fp32, the same evaluation, export.json, refusals and bad files."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realm_lite.cli import main
from realm_lite.export import FORMAT, export_run, load_pretrained
from realm_lite.pretrain import evaluate, pretrain
from realm_lite.queries import QueryPool
from realm_lite.realm import Realm
from realm_lite.refresh import build_index
from realm_lite.training import load_checkpoint

CPU = torch.device("cpu")
TINY = dict(ict_steps=4, reader_warmup_steps=4, realm_steps=4, eval_queries=40, batch_size=4, refresh_every=2,
            refresh_mode="sync", log_every=2, checkpoint_every=100, warmup_steps=2, qa_steps=2, qa_batch=4)


@pytest.fixture(scope="module")
def run(cfg, tmp_path_factory):
    """A finished pre-training run of a few steps, and its QA system fine-tuned for two steps."""
    from realm_lite.finetune import run_finetune

    d = tmp_path_factory.mktemp("export")
    pretrain("world", cfg.replace(**TINY), d / "run", log=lambda s: None)
    run_finetune(d / "run", "ict", "world", d / "qa-ict", log=lambda s: None)
    return d


@pytest.fixture(scope="module")
def exported(run):
    """The run exported twice with its QA system, fp16 and fp32, through the command line."""
    assert main(["export", str(run / "run"), str(run / "fp16"), "--qa", str(run / "qa-ict")]) == 0
    assert main(["export", str(run / "run"), str(run / "fp32"), "--dtype", "float32", "--qa", str(run / "qa-ict")]) == 0
    return run


def _run_state(run) -> dict:
    return load_checkpoint(run / "run" / "checkpoint.pt")["model"]


@pytest.mark.slow
def test_weights_survive_fp16_within_its_precision_and_fp32_exactly(exported):
    state = _run_state(exported)
    fp16, fp32 = load_pretrained(exported / "fp16"), load_pretrained(exported / "fp32")
    for name, w in state.items():
        assert fp32.model.state_dict()[name].dtype == w.dtype
        assert torch.equal(fp32.model.state_dict()[name], w), name
        assert torch.allclose(fp16.model.state_dict()[name], w, rtol=1e-3, atol=1e-4), name
    assert not fp16.model.training and fp16.model.state_dict()[name].dtype == torch.float32


@pytest.mark.slow
def test_the_loaded_model_evaluates_as_the_run_did(exported, cfg):
    pre = load_pretrained(exported / "fp32")
    queries = QueryPool(pre.blocks, pre.tokenizer, pre.cfg, pre.world).evaluation(pre.cfg.eval_queries)
    model = Realm(pre.cfg, len(pre.tokenizer))
    model.load_state_dict(_run_state(exported))
    index = build_index(model.retriever.embed_doc, pre.blocks, pre.tokenizer, pre.cfg)
    ran = evaluate(model, index, queries, pre.inputs, pre.cfg, CPU)
    assert evaluate(pre.model, pre.index, queries, pre.inputs, pre.cfg, CPU) == ran
    assert ran == pre.metrics["after_realm"]  # metrics.json: the run's own evaluation of these queries
    half = load_pretrained(exported / "fp16")
    got = evaluate(half.model, half.index, queries, half.inputs, half.cfg, CPU)
    for key, value in ran.items():
        assert got[key] == pytest.approx(value, abs=0.06), key


@pytest.mark.slow
def test_the_export_directory_and_export_json(exported):
    out = exported / "fp16"
    pre = load_pretrained(out)
    assert len(pre.index) == len(pre.blocks) and pre.world is not None
    info = json.loads((out / "export.json").read_text())
    assert info == pre.info and info["format"] == FORMAT and info["dtype"] == "float16"
    assert info["realm_lite_version"] and info["source"] == str((exported / "run").resolve())
    assert info["command"] == f"realm-lite export {exported / 'run'} {out} --qa {exported / 'qa-ict'}"
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"export.json"}
    assert set(info["files"]) == files and info["total_bytes"] == sum(info["files"].values())
    assert all(info["files"][f] == (out / f).stat().st_size for f in files)
    assert {"config.json", "model.safetensors", "blocks.jsonl", "metrics.json", "tokenizer/tokenizer.json",
            "qa/ict/config.json", "qa/ict/qa.json", "qa/ict/model.safetensors"} <= files
    assert any(f.startswith("world/") for f in files)
    assert info["files"]["model.safetensors"] < 0.6 * (exported / "fp32" / "model.safetensors").stat().st_size
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]  # no temporary directory left behind


@pytest.mark.slow
def test_the_qa_system_is_exported_with_its_weights(exported):
    from safetensors.torch import load_file

    ck = load_checkpoint(exported / "qa-ict" / "checkpoint.pt", keys=("model", "step"))["model"]
    saved = load_file(str(exported / "fp16" / "qa" / "ict" / "model.safetensors"))
    assert set(saved) == set(ck)
    assert all(torch.allclose(saved[k].float(), v, rtol=1e-3, atol=1e-4) for k, v in ck.items())
    assert json.loads((exported / "fp16" / "qa" / "ict" / "qa.json").read_text())["system"] == "ict"


@pytest.mark.slow
def test_an_existing_directory_is_refused_without_overwrite(exported, capsys):
    out = exported / "fp32"
    before = (out / "export.json").read_text()
    again = ["export", str(exported / "run"), str(out), "--dtype", "float32", "--qa", str(exported / "qa-ict")]
    assert main(again) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "export.json").read_text() == before
    assert main([*again, "--overwrite"]) == 0
    assert json.loads((out / "export.json").read_text())["command"].endswith("--overwrite")
    assert main(["export", str(exported / "run"), str(exported / "run" / "inside"), "--overwrite"]) == 2
    assert "overlaps" in capsys.readouterr().err and (exported / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_an_unfinished_run_or_a_bad_checkpoint_is_exit_2_naming_the_file(exported, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(exported / "run", run)
    (run / "checkpoint.pt").unlink()
    assert main(["export", str(run), str(tmp_path / "out")]) == 2
    assert str(run / "checkpoint.pt") in capsys.readouterr().err and not (tmp_path / "out").exists()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(run), str(tmp_path / "out")]) == 2
    assert str(run / "checkpoint.pt") in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failure_midway_leaves_nothing_behind(exported, tmp_path):
    (tmp_path / "qa").mkdir()
    with pytest.raises(FileNotFoundError, match="not a realm-lite QA run"):  # after the weights are written
        export_run(exported / "run", tmp_path / "exports" / "out", qa_dirs=[tmp_path / "qa"])
    assert list((tmp_path / "exports").iterdir()) == []


@pytest.mark.slow
def test_bad_export_files_are_named(exported, tmp_path):
    from safetensors.torch import save_file

    out = tmp_path / "copy"
    shutil.copytree(exported / "fp16", out)
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=str(weights)):
        load_pretrained(out)
    save_file({"embeddings.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(ValueError, match=str(weights) + ".*do not fit"):
        load_pretrained(out)
    info = json.loads((out / "export.json").read_text())
    (out / "export.json").write_text(json.dumps({**info, "format": "something-else/9"}))
    with pytest.raises(ValueError, match=str(out / "export.json")):
        load_pretrained(out)
    (out / "export.json").unlink()
    with pytest.raises(FileNotFoundError, match=str(out / "export.json")):
        load_pretrained(out)


def test_import_realm_lite_does_not_import_torch():
    env_path = str(Path(__file__).resolve().parents[1])
    code = ("import sys, realm_lite; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules)); "
            "print(callable(realm_lite.load_pretrained), 'torch' in sys.modules)")
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert check.returncode == 0 and check.stdout.split("\n")[:2] == ["[]", "True True"], check.stdout + check.stderr


@pytest.mark.slow
def test_the_warm_start_is_exported_and_loads_as_the_frozen_retriever_baseline(exported):
    warm = load_checkpoint(exported / "run" / "warmstart.pt", keys=("model",))["model"]
    for source in (exported / "fp32", exported / "run"):  # an export, and the run directory itself
        base = load_pretrained(source, weights="warmstart")
        assert base.weights == "warmstart" and not base.model.training
        assert all(torch.equal(base.model.state_dict()[k], v) for k, v in warm.items()), source
    realm = load_pretrained(exported / "run")
    assert torch.equal(realm.index.embeddings, load_pretrained(exported / "fp32").index.embeddings)
    with pytest.raises(ValueError, match="weights 'last'"):
        load_pretrained(exported / "fp32", weights="last")


@pytest.mark.slow
def test_load_qa_answers_as_the_qa_run_does(exported):
    from realm_lite.finetune import load_system
    from realm_lite.qa import predict
    from realm_lite.qa_data import load_qa as load_questions

    run_qa = load_system(exported / "qa-ict", log=lambda s: None)
    questions = load_questions("world", "test", world=run_qa.world, cfg=run_qa.cfg)[:20]
    expected = [r["prediction"] for r in predict(run_qa, questions)]
    from realm_lite import load_qa

    assert [r["prediction"] for r in predict(load_qa(exported / "fp32", "ict"), questions)] == expected
    assert load_qa(exported / "qa-ict").name == "ict"  # a QA run directory loads too
    assert load_pretrained(exported / "fp16").qa_systems == ["ict"]
    with pytest.raises(ValueError, match="holds no QA system 'realm' .*it holds: ict"):
        load_qa(exported / "fp32", "realm")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_qa(exported / "nowhere", "ict")


@pytest.mark.slow
def test_quality_is_recorded_at_export_and_a_change_is_reported(exported, tmp_path):
    from realm_lite.shipped import check_quality

    out = tmp_path / "with-quality"
    info = export_run(exported / "run", out, qa_dirs=[exported / "qa-ict"], quality=30)
    quality = json.loads((out / "quality.json").read_text())
    assert "quality.json" in info["files"] and quality["heldout_queries"] == 30
    assert {"recall@5", "acc_retrieval", "acc_null"} <= set(quality["realm"]) and quality["warmstart"]
    assert set(quality["qa"]) == {"ict"} and {"em", "top5"} <= set(quality["qa"]["ict"])
    assert check_quality(out) == []  # measured again, the same numbers
    quality["realm"]["recall@5"] += 0.5
    quality["qa"]["ict"]["em"] = -1.0
    (out / "quality.json").write_text(json.dumps(quality))
    assert sorted(k for k, _, _ in check_quality(out)) == ["qa/ict/em", "realm/recall@5"]


def test_the_commands_that_made_a_run_reach_its_export(tmp_path):
    from realm_lite.export import read_commands
    from realm_lite.io import record_command

    for line in ("realm-lite pretrain --preset cpu --out X", "realm-lite pretrain --out X --resume", None):
        record_command(tmp_path / "run", line)
    assert read_commands(tmp_path / "run") == ["realm-lite pretrain --preset cpu --out X",
                                               "realm-lite pretrain --out X --resume"]
    assert read_commands(tmp_path / "elsewhere") == []


def test_an_unknown_shipped_name_or_a_missing_directory_is_named(tmp_path):
    from realm_lite.export import resolve
    from realm_lite.shipped import shipped_path

    with pytest.raises(FileNotFoundError, match="world-cpu"):
        resolve(tmp_path / "world-cpu")
    with pytest.raises(ValueError, match="no shipped model 'world-gpu'"):
        shipped_path("world-gpu")
