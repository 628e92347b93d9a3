"""realm_lite.cli: the `realm-lite` command (world, corpus, demo) and its error handling (finetune etc.: test_qa.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from realm_lite.cli import main
from realm_lite.config import Config
from realm_lite.world import World


def test_world_writes_a_world_and_its_config(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["world", "--out", str(out), "--set", "world_entities=120", "seed=4"]) == 0
    cfg = Config.load(out / "config.json")
    assert (cfg.preset, cfg.world_entities, cfg.seed) == ("quick", 120, 4)
    world = World.load(out)
    assert len(world.documents) == 120 and world.seed == 4
    assert str(out) in capsys.readouterr().out


def test_world_default_preset(tmp_path, world):
    assert main(["world", "--out", str(tmp_path)]) == 0
    assert Config.load(tmp_path).preset == "quick"
    assert [d.text for d in World.load(tmp_path).documents] == [d.text for d in world.documents]


@pytest.mark.slow
def test_demo_prints_masked_examples_and_pretrains(demo_run, cfg):
    out, printed = demo_run.out, demo_run.printed
    assert demo_run.code == 0
    for strategy in ("salient", "random-token", "random-span"):
        assert strategy in printed
    assert "_" in printed and "x: " in printed  # masked positions shown as "_"
    assert printed.count("  salient ") >= 1
    for name in ("config.json", "tokenizer", "blocks.jsonl", "questions.jsonl", "world"):
        assert (out / name).exists(), name
    assert Config.load(out) == cfg.replace(**demo_run.overrides)
    assert "after warm start (salient + reader)" in printed and "after REALM" in printed  # the metrics table
    assert (out / "pretrain" / "metrics.json").exists()
    table = printed[printed.index("system    "):].splitlines()  # the QA table: one row per system
    assert [row.split()[0] for row in table[1:5]] == ["realm", "ict", "bm25", "closed-book"]
    assert "new value" in table[0] and (out / "qa" / "realm" / "knowledge-update.json").exists()
    assert (out / "qa" / "bm25" / "predictions-test.jsonl").exists()
    # it ends with the shipped model retrieving (held-out sentences) and answering (test questions)
    shipped = printed[printed.index("the trained model that ships with the package: world-cpu"):]
    assert shipped.count("p(z|x)") == 5 and "(y = " in shipped and "correct)" in shipped  # 2 sentences, 3 questions
    assert "open QA, its fine-tuned REALM" in shipped and shipped.count("prediction: ") == 5


def test_corpus_command(tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "title": f"Doc {i}", "text": f"Doc {i} is about Paris."}) + "\n"
                           for i in range(30)))
    out = tmp_path / "run"
    assert main(["corpus", "--out", str(out), "--corpus", str(src), "--set", "vocab_size=200"]) == 0
    assert (out / "blocks.jsonl").exists() and (out / "tokenizer" / "tokenizer.json").exists()
    assert "blocks written" in capsys.readouterr().out


def test_unknown_preset_returns_2(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path / "x"), "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert "huge" in err
    for name in ("quick", "cpu", "full"):
        assert name in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("pair,words", [("seed=abc", ["seed=abc", "int"]),
                                        ("colour=blue", ["colour", "world_entities"]),
                                        ("seed", ["key=value"])])
def test_bad_set_returns_2(tmp_path, capsys, pair, words):
    assert main(["world", "--out", str(tmp_path / "x"), "--set", pair]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["corpus", "demo"])
def test_missing_corpus_returns_2_naming_the_path(tmp_path, capsys, command):
    missing = tmp_path / "no-such-corpus.jsonl"
    assert main([command, "--out", str(tmp_path / "run"), "--corpus", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "error" in err


def test_argparse_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["world"])  # --out is required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["no-such-command", "--out", str(tmp_path)])
    assert e.value.code == 2


def _python(*args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=60)


def test_help_answers_without_importing_torch():
    check = _python("-c", "import sys, realm_lite.cli; "
                          "print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))")
    assert check.returncode == 0 and check.stdout.strip() == "[]", check.stdout + check.stderr
    helped = _python("-m", "realm_lite.cli", "--help")
    assert helped.returncode == 0 and "pretrain" in helped.stdout and "finetune" in helped.stdout
    finetune = _python("-m", "realm_lite.cli", "finetune", "--help")
    assert finetune.returncode == 0 and "closed-book" in finetune.stdout


def test_the_command_line_offers_every_qa_system():
    from realm_lite.config import QA_SYSTEMS
    from realm_lite.qa import SYSTEMS

    assert QA_SYSTEMS == SYSTEMS


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/run"], "no such directory"),
    (["--port", "70000"], "--port 70000"),
])
def test_explore_names_bad_input_before_serving(args, message, capsys):
    assert main(["explore", "--no-browser", *args]) == 2
    assert message in capsys.readouterr().err
