"""bench/embed_speed.py at tiny sizes: its rows, their FLOP counts and rates, the real refresh rows, bad input."""
import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("embed_speed", Path(__file__).parents[1] / "bench" / "embed_speed.py")
embed_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(embed_speed)


def test_flops_per_block_counts_projections_feed_forward_attention_and_the_projection_to_d():
    h, layers, length, d = 64, 2, 128, 128
    per_token = 8 * h * h + 16 * h * h + 4 * length * h
    assert embed_speed.flops_per_block(h, layers, length, d) == layers * length * per_token + 2 * h * d
    # bert-base at the paper's 288 wordpieces: about 52 GFLOP a block
    assert embed_speed.flops_per_block(768, 12, 288, 128) == pytest.approx(52.0e9, rel=0.01)


def test_full_is_a_from_scratch_bert_base_and_the_cpu_presets_know_the_shipped_corpus():
    full = embed_speed.preset_config("full")
    assert (full.backbone, full.hidden, full.heads, full.retriever_layers, full.vocab_size, full.block_len) == (
        "", 768, 12, 12, 30522, 288)
    shipped_cfg, n = embed_speed.shipped_corpus()
    assert n == 2002
    assert embed_speed.corpus_size(embed_speed.preset_config("cpu"), shipped_cfg, n) == 2002
    assert embed_speed.corpus_size(embed_speed.preset_config("cpu-paper"), shipped_cfg, n) == 2002
    assert embed_speed.corpus_size(embed_speed.preset_config("quick"), shipped_cfg, n) is None


def test_quick_run_has_an_fp32_and_a_bf16_row_with_consistent_rates(tmp_path, capsys):
    out = tmp_path / "embed.json"
    assert embed_speed.main(["--quick", "--blocks", "20", "--batch", "8", "--repeats", "1", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    rows = info["rows"]
    assert [(r["preset"], r["kind"], r["dtype"]) for r in rows] == [("quick", "synthetic", "fp32"),
                                                                     ("quick", "synthetic", "bf16")]
    per_block = embed_speed.flops_per_block(64, 2, 128, 128)
    for r in rows:
        assert (r["hidden"], r["layers"], r["block_len"], r["blocks"], r["mean_len"]) == (64, 2, 128, 20, 128.0)
        assert r["flops_per_block"] == per_block
        assert r["blocks_per_s"] > 0 and r["peak_mib"] > 0
        assert r["blocks_per_s"] == pytest.approx(20 / r["seconds"], rel=0.01)
        assert r["tokens_per_s"] == pytest.approx(128 * r["blocks_per_s"], rel=0.01)
        assert r["gflops"] == pytest.approx(per_block * r["blocks_per_s"] / 1e9, rel=0.01, abs=0.01)
        assert r["frac_of_limit"] == pytest.approx(r["gflops"] / info["limit"][r["limit_key"]], rel=0.01, abs=1e-4)
        assert r["corpus_s"] is None and r["hours_13m_extrapolated"] is None
    assert [r["limit_key"] for r in rows] == ["matmul_fp32_gflops", "matmul_bf16_gflops"]
    assert info["blocks"] == {"quick": 20} and info["batch"] == 8 and info["cpu_capability"]
    printed = capsys.readouterr().out
    assert printed.count("synthetic") == 2 and "written to" in printed


def test_refresh_rows_time_build_index_on_real_blocks_of_variable_length(cfg, world, tokenizer):
    from realm_lite.corpus import make_blocks, world_passages

    blocks = make_blocks(world_passages(world), tokenizer, cfg.block_len)[0][:40]
    tower = embed_speed.doc_tower(cfg, "cpu")
    lim = {"matmul_fp32_gflops": 100.0, "matmul_bf16_gflops": 200.0}
    rows = embed_speed.refresh_rows(tower, blocks, tokenizer, cfg, "cpu", 1, lim, "quick world", corpus=400)
    assert [(r["dtype"], r["embed_bf16"]) for r in rows] == [("fp32", "off"), ("bf16", "on")]
    real, padded = embed_speed.block_lengths(blocks, tokenizer, cfg.block_len, 256)
    for r in rows:
        assert r["blocks"] == 40 and r["corpus_blocks"] == 400
        assert r["mean_len"] == pytest.approx(sum(real) / 40, abs=0.05)
        assert r["mean_len"] <= r["mean_padded_len"] == padded[0] <= cfg.block_len
        assert r["flops_per_block"] == embed_speed.flops_per_block(cfg.hidden, cfg.retriever_layers, padded[0],
                                                                   cfg.proj_dim)
        assert r["tokens_per_s"] == pytest.approx(r["mean_len"] * r["blocks_per_s"], rel=0.01)
        assert r["corpus_s"] == pytest.approx(400 / r["blocks_per_s"], rel=0.02, abs=0.01)
        assert r["frac_of_limit"] == pytest.approx(r["gflops"] / lim[r["limit_key"]], rel=0.01, abs=1e-4)
    assert "quick world" in embed_speed.table(rows)


def test_bad_input_is_named_before_any_work():
    with pytest.raises(SystemExit, match="--presets nope: unknown"):
        embed_speed.main(["--presets", "quick", "nope"])
    with pytest.raises(SystemExit, match="--blocks 0: 1 or more"):
        embed_speed.main(["--quick", "--blocks", "0"])
    with pytest.raises(SystemExit, match="--world-blocks -1: 1 or more"):
        embed_speed.main(["--world-blocks", "-1"])
