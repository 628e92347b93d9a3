"""bench/retrieval_price.py and bench/cost_growth.py at tiny sizes: their FLOP count against torch's own, their
rows, tables, JSON and plot, and their errors on bad input."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[1] / "bench"
TINY = ["batch_size=2", "k=3", "block_len=24", "query_len=12", "hidden=32", "heads=2"]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


price = _load("retrieval_price")
growth = _load("cost_growth")


def _tiny_setup():
    cfg = price.preset_config("quick", batch_size=2, k=3, block_len=24, query_len=12, hidden=32, heads=2,
                              reader_lr=3e-5, retriever_lr=1e-4)
    return price.from_scratch(cfg, torch.device("cpu"), 12)


@pytest.mark.parametrize("what", ["mlm", "realm, reader trained", "realm, reader frozen"])
def test_flop_count_matches_torch_flop_counter(what):
    """The FLOPs counted from shapes are those torch's FlopCounterMode sees in a whole step, forward and backward
    (it also counts f(x, z)'s small dot products, which the bench leaves out). Attention runs in its math kernel,
    whose matrix products torch counts (it does not count the fused CPU kernel's)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    s = _tiny_setup()
    cfg = s.cfg.replace(reader_lr=0.0) if what.endswith("frozen") else s.cfg
    counter = price.FlopCounter(s.model)
    stepper = (price.mlm_stepper(s.model, cfg, s.pool, s.inputs, "cpu") if what == "mlm" else
               price.realm_stepper(s.model, cfg, s.pool, s.index, s.inputs, "cpu", counter))
    with stepper as step, sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as torch_count:
        counter.on = True
        step()
    counter.close()
    mine, theirs = counter.totals()["total"], torch_count.get_total_flops()
    relevance = 0 if what == "mlm" else 3 * 2 * cfg.batch_size * cfg.k * s.index.dim  # einsum, forward + backward
    assert mine == pytest.approx(theirs - relevance, rel=1e-9)
    if what.endswith("frozen"):  # no backward through the frozen reader: only the towers'
        t = counter.totals()
        assert t["backward"] == 2 * t["towers"] and t["reader"] > 0


def test_retrieval_price_rows(tmp_path, capsys):
    out = tmp_path / "price.json"
    assert price.main(["--quick", "--steps", "1", "--blocks", "12", "--set", *TINY, "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    rows = {r["what"]: r for r in info["rows"]}
    assert list(rows) == ["mlm", "realm, reader trained", "realm, reader frozen"]
    mlm, trained, frozen = rows.values()
    for r in rows.values():
        assert r["steps_per_s"] > 0 and r["gflop"] > 0 and r["gflops"] > 0 and r["peak_mib"] > 0
        assert r["measured_over_predicted"] == pytest.approx(
            r["seconds_per_step"] / (mlm["seconds_per_step"] * r["gflop"] / mlm["gflop"]), rel=1e-3)
        assert 0 < r["useful"] <= 1
    assert mlm["ratio_to_mlm"] == 1 and mlm["measured_over_predicted"] == 1
    assert mlm["gflop_by_part"]["towers"] == 0 and mlm["gflop_by_part"]["search"] == 0  # no retrieval at all
    # random blocks and x all have full length, so both REALM rows run the same shapes: the trained reader adds
    # its backward, 2x its forward, and nothing else
    part = frozen["gflop_by_part"]
    assert trained["gflop"] == pytest.approx(frozen["gflop"] + 2 * (part["reader"] + part["head"]), rel=1e-4)
    assert frozen["gflop"] > mlm["gflop"]
    assert frozen["gflop_by_part"]["search"] == pytest.approx(2 * 2 * 12 * info["proj_dim"] / 1e9, rel=1e-4)
    assert info["batch_size"] == 2 and info["k"] == 3 and info["blocks"] == 12
    printed = capsys.readouterr().out
    assert all(what in printed for what in rows) and "meas/pred" in printed


def test_cost_growth_tables_json_and_plot(tmp_path, capsys):
    out, figure = tmp_path / "growth.json", tmp_path / "growth.png"
    assert growth.main(["--quick", "--steps", "1", "--sizes", "20", "60", "--ks", "2", "3", "--set",
                        "batch_size=2", "block_len=32", "hidden=32", "--json", str(out), "--plot", str(figure)]) == 0
    info = json.loads(out.read_text())
    corpus = [r for r in info["rows"] if r["sweep"] == "N"]
    ks = [r for r in info["rows"] if r["sweep"] == "k"]
    assert [r["n"] for r in corpus] == [20, 60] and [r["k"] for r in ks] == [2, 3]
    for r in corpus:
        assert r["index_rows"] == r["n"]  # the repeated corpus: one index row per block
        assert r["build_seconds"] > 0 and r["search_seconds"] > 0 and r["step_seconds"] > 0 and r["peak_mib"] > 0
        assert r["search_gflop"] == pytest.approx(2 * 2 * r["n"] * info["proj_dim"] / 1e9, rel=1e-4)
    assert corpus[1]["build_gflop"] > 2.5 * corpus[0]["build_gflop"]  # three times the blocks to embed
    for r in ks:
        assert r["reader_rows"] == 2 * r["k"] and set(r["parts_seconds"]) == set(growth.PARTS)
        assert all(s > 0 for s in r["parts_seconds"].values())
    assert ks[1]["step_gflop"] > ks[0]["step_gflop"]  # one more candidate to score and read per x
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "(a) corpus size N" in printed and "(b) k at the real corpus" in printed


def test_repeated_corpus_shares_the_real_blocks_ids():
    import types

    parts = types.SimpleNamespace(blocks=["a", "b", "c"], inputs=types.SimpleNamespace(
        doc_ids=[[1], [2], [3]], body_ids=[[4], [5], [6]]))
    blocks, inputs = growth.Parts.repeated(parts, 7)
    assert blocks == ["a", "b", "c", "a", "b", "c", "a"] and len(inputs.doc_ids) == len(inputs.body_ids) == 7
    assert inputs.doc_ids[4] is parts.inputs.doc_ids[1] and parts.inputs.doc_ids == [[1], [2], [3]]


@pytest.mark.parametrize("bench, argv, message", [
    ("price", ["--steps", "0", "--quick"], "--steps 0"),
    ("price", ["--preset", "nope"], "unknown preset 'nope'"),
    ("price", ["--model", "world-cpu", "--preset", "quick"], "one or the other"),
    ("price", ["--set", "hidden=64"], "a trained model takes only"),
    ("price", ["--quick", "--blocks", "4"], "fewer than k = 8"),
    ("growth", ["--quick", "--sizes", "4"], "fewer blocks than k = 8"),
    ("growth", ["--quick", "--ks", "1"], "k from 2"),
    ("growth", ["--model", "no/such/dir"], "no/such/dir"),
])
def test_bad_input_is_named(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        (price if bench == "price" else growth).main(argv)
