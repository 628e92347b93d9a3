"""The model that ships with the package: it loads, it is small, and it still scores what it scored at export."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from realm_lite.shipped import SHIPPED, check_quality, shipped_path

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_model_is_in_the_package_and_small():
    for name in SHIPPED:
        path = shipped_path(name)
        assert path == ROOT / "realm_lite" / "pretrained" / name
        info = json.loads((path / "export.json").read_text())
        on_disk = {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")
                   if p.is_file() and p.name != "export.json"}
        assert info["files"] == on_disk  # nothing missing, nothing stray
        assert info["total_bytes"] < 50e6, f"{name}: {info['total_bytes'] / 1e6:.1f} MB"
        assert info["commands"]["pretrain"] and all(info["commands"][f"qa/{s}"] for s in info["qa"])


def test_the_shipped_model_records_retrieval_helping():
    quality = json.loads((shipped_path("world-cpu") / "quality.json").read_text())
    realm, warm, qa = quality["realm"], quality["warmstart"], quality["qa"]
    assert quality["heldout_queries"] >= 200 and quality["test_questions"] >= 200
    assert realm["acc_retrieval"] - realm["acc_null"] >= 0.2  # the reader needs the retrieved block
    assert realm["recall@5"] >= 0.7 and realm["recall@5"] > warm["recall@5"]  # and REALM trained the retriever
    assert set(qa) == {"realm", "ict", "bm25", "closed-book"}
    assert qa["realm"]["em"] > qa["closed-book"]["em"] + 0.2


@pytest.mark.slow
def test_the_shipped_model_scores_now_what_it_scored_at_export():
    """A change to retrieval, reading, QA or loading that moves any recorded number by more than 3 points of
    300 queries turns this red (check_quality: every number of quality.json measured again)."""
    assert check_quality("world-cpu") == []


def test_load_pretrained_by_name_gives_the_shipped_model():
    import realm_lite

    pre = realm_lite.load_pretrained("world-cpu")
    assert pre.path == shipped_path("world-cpu") and len(pre.index) == len(pre.blocks) > 1000
    assert pre.qa_systems == ["realm", "ict", "bm25", "closed-book"] and pre.world is not None
    assert len(pre.heldout_queries(5)) == 5


@pytest.mark.slow
def test_a_built_wheel_carries_the_shipped_model(tmp_path):
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(ROOT / "realm_lite", src / "realm_lite", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("realm_lite-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    path = shipped_path("world-cpu")
    expected = {f"realm_lite/pretrained/world-cpu/{f}" for f in
                [*json.loads((path / "export.json").read_text())["files"], "export.json"]}
    assert expected <= names, sorted(expected - names)[:5]
    assert "realm_lite/explorer_app.ipynb" in names  # what `realm-lite explore` serves
