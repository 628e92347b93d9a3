"""Shared fixtures: a quick world, a WordPiece tokenizer trained on it, a demo run (each once per session), SQuAD."""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub name otherwise takes ~50 s to fail offline

import pytest

from realm_lite.config import get_config

# Real data for the tests: $REALM_LITE_SQUAD, by default the SQuAD sample kept beside the repository.
SQUAD_DIR = Path(os.environ.setdefault(
    "REALM_LITE_SQUAD", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-v1.1")))


@pytest.fixture
def kernel_env(monkeypatch):
    """A notebook kernel (papermill) imports this checkout's realm_lite, whatever is installed, looks for no other
    root, and stays offline."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("REALM_LITE_ROOT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cfg():
    return get_config("quick")


@pytest.fixture(scope="session")
def world(cfg):
    from realm_lite.world import World

    return World.generate(cfg)


@pytest.fixture(scope="session")
def tokenizer(world, tmp_path_factory):
    from realm_lite.tokenizer import train_wordpiece

    texts = [f"{d.title} {d.text}" for d in world.documents]
    return train_wordpiece(texts, 3000, tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="session")
def blocks(world, tokenizer, cfg):
    """The quick world's passages cut into REALM's blocks."""
    from realm_lite.corpus import make_blocks, world_passages

    return make_blocks(world_passages(world), tokenizer, cfg.block_len)[0]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`realm-lite demo` run once, every stage with fewer steps (the quick preset's would add a minute and check
    nothing more): a namespace of out (its --out), code (exit code), printed (stdout) and overrides (its --set)."""
    import contextlib
    import io
    from types import SimpleNamespace

    from realm_lite.cli import main

    overrides = dict(ict_steps=10, reader_warmup_steps=10, realm_steps=10, eval_queries=40, qa_steps=6)
    out, printed = tmp_path_factory.mktemp("demo") / "demo", io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out), "--examples", "4", "--update-facts", "5",
                     "--set", *(f"{k}={v}" for k, v in overrides.items())])
    return SimpleNamespace(out=out, code=code, printed=printed.getvalue(), overrides=overrides)


@pytest.fixture(scope="session")
def squad_dir():
    if not (SQUAD_DIR / "dev-v1.1-part-a.json").exists():
        pytest.skip(f"real-data test: {SQUAD_DIR} is absent (set REALM_LITE_SQUAD)")
    return SQUAD_DIR
