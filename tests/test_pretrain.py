"""REALM pre-training: the step (null document, exclusion, live scores), queries and gold, the loop, resume, CLI."""
import json
import math
import random

import pytest
import torch

from realm_lite.cli import main
from realm_lite.batching import join
from realm_lite.mips import MipsIndex
from realm_lite.pretrain import freeze_untrained, load_run, pretrain, train_realm
from realm_lite.queries import QueryPool
from realm_lite.realm import BlockInputs, Realm, predict_spans, realm_loss
from realm_lite.refresh import build_index

TINY = dict(ict_steps=5, realm_steps=6, batch_size=4, refresh_every=2, refresh_mode="sync", eval_queries=12,
            log_every=2, checkpoint_every=100, warmup_steps=2)


@pytest.fixture(scope="module")
def pool(blocks, tokenizer, cfg, world):
    return QueryPool(blocks, tokenizer, cfg, world)


def test_training_sentences_never_state_a_heldout_fact(pool, blocks, world):
    heldout = {f.id for f in world.facts.values() if f.split == "heldout"}
    assert heldout and pool.train and pool.eval
    for bi, text, _ in pool.train:
        facts = next(f for s, e, f in blocks[bi].sentences if blocks[bi].text[s:e] == text)
        assert not set(facts) & heldout


def test_eval_gold_blocks_state_the_masked_fact_and_exclude_the_source(pool, blocks, world):
    heldout = {f.id for f in world.facts.values() if f.split == "heldout"}
    queries = pool.evaluation(50)
    assert len(queries) == 50
    for q in queries:
        assert q.gold and q.source not in q.gold
        start, end = q.example.span
        span_facts = next(set(s.facts) for s in _spans_of(blocks[q.source], q.example.text) if (s.start, s.end) == (start, end))
        for g in q.gold:
            stated = {f for _, _, fs in blocks[g].sentences for f in fs}
            assert stated & span_facts & heldout


def _spans_of(block, text):
    from realm_lite.masking import sentence_spans

    return next(sp for t, sp, _ in sentence_spans(block) if t == text)


def test_sampled_queries_know_their_gold(pool):
    qs = pool.sample(random.Random(0), 40)
    assert len(qs) == 40 and all(q.example.masked_positions for q in qs)
    assert sum(q.gold is not None for q in qs) > 20 and all(q.source not in (q.gold or ()) for q in qs)


@pytest.mark.slow
def test_realm_step_null_document_exclusion_and_live_scores(blocks, tokenizer, cfg, pool):
    torch.manual_seed(0)
    model = Realm(cfg, len(tokenizer)).eval()  # no dropout, so scores can be recomputed exactly
    inputs = BlockInputs(blocks, tokenizer, cfg.block_len)
    index = build_index(model.retriever.embed_doc, blocks, tokenizer, cfg)
    queries = pool.sample(random.Random(1), 3)
    out = realm_loss(model, queries, index, inputs, k=4, device="cpu")
    assert out["top"].shape == (3, 3) and out["scores"].shape == (3, 4)
    for q, row in zip(queries, out["top"].tolist()):
        assert q.source not in row  # trivial retrieval excluded
    # candidate 0 is ∅: its score is Embed_input(x) . Embed_doc(empty block)
    null = model.retriever.embed_doc(**inputs.doc_batch([], "cpu", null=True))
    from realm_lite.realm import embed_queries
    q = embed_queries(model, queries, tokenizer.pad_token_id, "cpu")
    assert torch.allclose(out["scores"][:, 0], (q @ null.T).squeeze(1), atol=1e-5)
    out["loss"].backward()  # the index is stale, yet the document tower gets gradients through the live scores
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.retriever.embed_doc.parameters())
    assert math.isfinite(out["loss"].item())


def test_predict_spans_picks_the_mixture_argmax():
    # two candidates z0, z1 over a 3-word vocabulary and two masked positions
    lp = torch.log(torch.tensor([[[[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]],     # z0: y = (0, 0)
                                  [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]]]))  # z1: y = (1, 2)
    tgt = torch.tensor([[[1, 2], [1, 2]]])
    # p(y=(0,0)|x) = .2*.36 + .8*.01 = .08 ; p(y=(1,2)|x) = .2*.03 + .8*.64 = .518
    assert predict_spans(lp, torch.log(torch.tensor([[0.2, 0.8]])), tgt).tolist() == [[1, 2]]
    assert predict_spans(lp, torch.log(torch.tensor([[0.99, 0.01]])), tgt).tolist() == [[0, 0]]
    # a padded position (target -100) does not count towards the score
    tgt_pad = torch.tensor([[[1, -100], [1, -100]]])
    assert predict_spans(lp, torch.log(torch.tensor([[0.5, 0.5]])), tgt_pad)[0, 0].item() == 1


def _state(run):
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("frozen", ["reader", "retriever"])
def test_a_module_with_lr_0_gets_no_gradient_and_is_given_back_trainable(frozen, blocks, pool, tokenizer, cfg,
                                                                          tmp_path):
    trained = "retriever" if frozen == "reader" else "reader"
    c = cfg.replace(**TINY, **{f"{frozen}_lr": 0.0, f"{trained}_lr": 1e-3})
    torch.manual_seed(0)
    model, inputs = Realm(c, len(tokenizer)), BlockInputs(blocks, tokenizer, c.block_len)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_realm(model, pool, blocks, inputs, tokenizer, c, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    assert all(m.training for m in model.modules())  # train mode given back too
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        if name.startswith(frozen + "."):
            assert p.grad is None and torch.equal(p, before[name]), name  # no backward through it, no update
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith(trained + "."))
    with pytest.raises(ValueError, match="both 0"):
        train_realm(model, pool, blocks, inputs, tokenizer, c.replace(reader_lr=0.0, retriever_lr=0.0),
                    tmp_path / "none", torch.device("cpu"), log=lambda s: None)


@pytest.mark.parametrize("setting, cuda_bf16, expected", [
    ("auto", True, torch.bfloat16), ("auto", False, torch.float16), ("bf16", False, torch.bfloat16),
    ("fp16", True, torch.float16), ("off", True, None)])
def test_the_autocast_dtype_follows_what_the_gpu_has(cfg, monkeypatch, setting, cuda_bf16, expected):
    from realm_lite.pretrain import amp_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    assert amp_dtype(cfg.replace(autocast=setting), torch.device("cuda")) == expected
    assert amp_dtype(cfg.replace(autocast="auto"), "cpu") is None  # a CPU trains in fp32 unless asked


@pytest.mark.slow
def test_fp16_autocast_scales_the_loss_and_checkpoints_the_scale(blocks, pool, tokenizer, cfg, tmp_path):
    """autocast=fp16 (a GPU without bf16): the REALM loop scales the loss (GradScaler), still learns, and writes the
    scale into its checkpoint; without fp16 there is no scale."""
    c = cfg.replace(**TINY, autocast="fp16", retriever_lr=1e-3)
    torch.manual_seed(0)
    model, inputs = Realm(c, len(tokenizer)), BlockInputs(blocks, tokenizer, c.block_len)
    before = {n: p.detach().clone() for n, p in model.retriever.named_parameters()}
    history = train_realm(model, pool, blocks, inputs, tokenizer, c, tmp_path / "run", torch.device("cpu"),
                          log=lambda s: None)
    assert all(math.isfinite(row["loss"]) for row in history)
    assert any(not torch.equal(p, before[n]) for n, p in model.retriever.named_parameters())
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["scaler"]["scale"] > 0 and ck["step"] == c.realm_steps
    plain = cfg.replace(**TINY, autocast="off")
    train_realm(Realm(plain, len(tokenizer)), pool, blocks, inputs, tokenizer, plain, tmp_path / "fp32",
                torch.device("cpu"), log=lambda s: None)
    assert torch.load(tmp_path / "fp32" / "checkpoint.pt", weights_only=False)["scaler"] is None


def test_a_resumed_loop_takes_up_the_loss_scale(cfg):
    from realm_lite.training import Loop

    w = torch.nn.Parameter(torch.ones(3))
    loop = Loop("realm", 4, [w], cfg, device="cpu", log=lambda s: None, scale_loss=True)
    for _ in loop:
        loop.opt.zero_grad()
        loop.backward((w * float("inf")).sum() if loop.done == 0 else w.sum())  # the first step overflows: skipped
        loop.step()
        loop.record(loss=0.0)
    state = loop.state()
    assert state["scaler"]["scale"] < 2.0 ** 16  # backed off after the overflow
    again = Loop("realm", 4, [w], cfg, device="cpu", log=lambda s: None, scale_loss=True)
    again.restore(state)
    assert again.scaler.get_scale() == state["scaler"]["scale"]


def test_freeze_untrained_freezes_lr_0_modules_in_eval_mode_and_restores_them(cfg, tokenizer):
    model = Realm(cfg, len(tokenizer))
    model.train()
    model.retriever.embed_doc.requires_grad_(False)  # a flag set before is given back as it was
    with pytest.raises(RuntimeError, match="inside"):
        with freeze_untrained(model, cfg.replace(reader_lr=0.0, retriever_lr=1e-4)):
            assert not any(m.training for m in model.reader.modules())  # no dropout in a frozen reader
            assert not any(p.requires_grad for p in model.reader.parameters())
            assert all(m.training for m in model.retriever.modules())
            assert all(p.requires_grad for p in model.retriever.embed_input.parameters())
            raise RuntimeError("inside")
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.reader.parameters())
    assert not any(p.requires_grad for p in model.retriever.embed_doc.parameters())


# Dropout on and the reader training: a resumed run must restore the random state to draw the same masks.
RESUME = dict(TINY, dropout=0.1, reader_lr=5e-4, warm_start="salient", ict_steps=4, ict_batch=8, reader_warmup_steps=4,
              checkpoint_every=2)


def _timeless(rows):
    return [{k: v for k, v in r.items() if k not in ("steps_per_s", "seconds")} for r in rows]


def _log(run):
    return _timeless(json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def uninterrupted(cfg, tokenizer, tmp_path_factory):
    """(config, the run's directory, its metrics): the RESUME recipe run from start to end."""
    d = tmp_path_factory.mktemp("resume")
    tokenizer.save_pretrained(str(d / "tok"))  # every run shares it (and skips training one)
    c = cfg.replace(**RESUME, tokenizer=str(d / "tok"))
    return c, d / "full", pretrain("world", c, d / "full", log=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [("salient", 3), ("reader_warmup", 1), ("realm", 0), 3],
                         ids=["in-salient-warm-start", "in-reader-warm-up", "before-realm", "in-realm"])
def test_a_run_killed_and_resumed_ends_with_the_same_weights(uninterrupted, stop, tmp_path):
    c, full_dir, full = uninterrupted
    run = tmp_path / "run"
    assert pretrain("world", c, run, log=lambda s: None, stop_after=stop) == {"stopped_at": stop}
    if stop == 3:
        assert _state(run)["step"] == 3
    elif stop == ("realm", 0):
        assert (run / "warmstart.pt").exists() and not (run / "checkpoint.pt").exists()
    else:
        ck = torch.load(run / "warmstart-checkpoint.pt", weights_only=True)
        assert (ck["stage"], ck["step"]) == stop and not (run / "warmstart.pt").exists()
    resumed = pretrain("world", c, run, resume=True, log=lambda s: None)
    a, b = _state(full_dir), _state(run)
    assert a["step"] == b["step"] == c.realm_steps and _timeless(a["history"]) == _timeless(b["history"])
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert full["after_realm"] == resumed["after_realm"]
    assert _log(full_dir) == _log(run)  # rows logged after the last checkpoint are not repeated
    assert not (run / "warmstart-checkpoint.pt").exists()


def test_the_log_holds_every_stage_and_the_checkpoints_load_weights_only(uninterrupted):
    c, full_dir, full = uninterrupted
    rows = [json.loads(line) for line in (full_dir / "log.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in rows]
    assert stages == ["salient"] * 2 + ["reader_warmup"] * 2 + ["evaluate"] + ["realm"] * 3 + ["evaluate"]
    assert [r["step"] for r in rows if r["stage"] == "realm"] == [2, 4, 6]
    assert {"loss", "token_acc", "ru", "gold_recall", "staleness", "steps_per_s", "seconds"} <= set(rows[5])
    assert rows[-1] == {"stage": "evaluate", "after": "REALM", **full["after_realm"]}
    for name in ("warmstart.pt", "checkpoint.pt"):
        torch.load(full_dir / name, weights_only=True)  # plain tensors, numbers and containers only
    m = json.loads((full_dir / "metrics.json").read_text())
    assert {"recall@1", "recall@5", "acc_retrieval", "acc_null", "acc_gold", "ru"} <= set(m["after_realm"])


@pytest.mark.slow
def test_ict_resumes_from_its_checkpoint(blocks, tokenizer, cfg, tmp_path):
    """train_ict killed after step 2 of 4 and resumed: the same weights and log as 4 steps in one go."""
    from realm_lite.ict import train_ict
    from realm_lite.retriever import Retriever
    from realm_lite.training import Checkpoints, Interrupted, load_checkpoint, save_checkpoint

    c = cfg.replace(dropout=0.1, ict_steps=4, ict_batch=8, log_every=1, checkpoint_every=100)

    def run(d, stop_after=None, resume=None):
        torch.manual_seed(0)
        r = Retriever(c, len(tokenizer))
        if resume:
            r.load_state_dict(resume["model"])
        save = lambda state: save_checkpoint({**state, "model": r.state_dict()}, d / "ict.pt")  # noqa: E731
        hist = train_ict(r, blocks, tokenizer, c, log=lambda s: None,
                         checkpoints=Checkpoints(d, save, resume=resume, stop_after=stop_after))
        return r, hist

    full, hist = run(tmp_path / "full")
    with pytest.raises(Interrupted):
        run(tmp_path / "part", stop_after=2)
    torch.manual_seed(123)  # whatever state the process is in: the checkpoint's is restored
    again, hist_again = run(tmp_path / "part", resume=load_checkpoint(tmp_path / "part" / "ict.pt"))
    assert _timeless(hist) == _timeless(hist_again) and len(hist) == 4
    for (name, p), q in zip(full.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name
    assert _log(tmp_path / "full") == _log(tmp_path / "part")


@pytest.mark.parametrize("name, damage, why", [
    ("checkpoint.pt", "truncate", "truncated or corrupt"),
    ("checkpoint.pt", "bytes", "not a torch file"),
    ("checkpoint.pt", "foreign", "no model"),
    ("warmstart.pt", "bytes", "not a torch file"),
    ("warmstart.pt", "empty", "truncated or corrupt"),
    ("checkpoint.pt", "other-model", "weights do not fit"),
])
def test_cli_resume_names_a_damaged_checkpoint(uninterrupted, tmp_path, capsys, name, damage, why):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted[1], run)
    path = run / name
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif damage == "bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        ck = torch.load(path, weights_only=True)
        torch.save({**ck, "model": {"w": torch.zeros(2)}}, path)
    assert main(["pretrain", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("realm-lite pretrain: error: ") and str(path) in err and why in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_resume_rejects_a_corrupt_or_mismatched_index(cfg, tmp_path):
    c = cfg.replace(**TINY)
    run = tmp_path / "run"
    pretrain("world", c, run, log=lambda s: None, stop_after=3)
    index_file = run / _state(run)["index_file"]
    good = index_file.read_bytes()
    index_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable realm-lite index"):
        pretrain("world", c, run, resume=True, log=lambda s: None)
    other = MipsIndex(torch.randn(len(load_run(run)[1]), c.proj_dim), version="someone-else")
    other.save(index_file)
    with pytest.raises(ValueError, match="document encoder"):
        pretrain("world", c, run, resume=True, log=lambda s: None)


@pytest.mark.slow
def test_existing_run_needs_resume(cfg, tmp_path):
    c = cfg.replace(**TINY)
    pretrain("world", c, tmp_path / "r", log=lambda s: None, stop_after=2)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain("world", c, tmp_path / "r", log=lambda s: None)
    with pytest.raises(FileNotFoundError, match="not a realm-lite run"):
        pretrain("world", c, tmp_path / "nothing", resume=True, log=lambda s: None)


@pytest.mark.slow
def test_cli_pretrain_cold_start_writes_metrics(tmp_path, capsys):
    sets = [f"{k}={v}" for k, v in TINY.items()]
    rc = main(["pretrain", "--preset", "quick", "--corpus", "world", "--no-ict", "--out", str(tmp_path / "cold"),
               "--set", *sets])
    assert rc == 0
    m = json.loads((tmp_path / "cold" / "metrics.json").read_text())
    assert m["warm_start"] == "none" and m["realm_steps"] == 6 and "after_realm" in m
    assert main(["pretrain", "--out", str(tmp_path / "cold"), "--resume", "--no-ict"]) == 2
    assert "drop --masking" in capsys.readouterr().err


def test_cli_pretrain_bad_input(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "x"), "--set", "k=1"]) == 2
    assert "k=1" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "y"), "--set", "reader_lr=0", "retriever_lr=0"]) == 2
    assert "both 0" in capsys.readouterr().err and not (tmp_path / "y").exists()  # refused before any work


def test_salient_positives_and_reader_evidence(pool, blocks):
    """Positives share an unmasked salient span with x; evidence blocks (reader_warmup_z=salient) also hold y,
    and in the world include the gold block. Both found by string match, no labels."""
    from realm_lite.masking import regex_tagger
    from realm_lite.warmstart import SalientIndex

    index = SalientIndex(blocks, regex_tagger)
    spans_of = {(bi, text): spans for bi, text, spans in pool.train}
    found = found_evidence = 0
    for q in pool.sample(random.Random(3), 40):
        spans = spans_of[(q.source, q.example.text)]
        unmasked = {q.example.text[s.start:s.end].lower() for s in spans if (s.start, s.end) != q.example.span}
        positives = index.positives(q, spans)
        for z in positives:
            found += 1
            assert z != q.source and any(u in blocks[z].text.lower() for u in unmasked)
        y = q.example.text[q.example.span[0]:q.example.span[1]].lower()
        for z in index.evidence(q, spans):
            found_evidence += 1
            assert z in positives and y in blocks[z].text.lower()
        if q.gold:
            assert q.gold & set(index.evidence(q, spans))
    assert found > 30 and found_evidence > 10


@pytest.mark.slow
def test_salient_warm_start_and_reader_warmup_run(cfg, tokenizer, tmp_path):
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    c = cfg.replace(**TINY, tokenizer=str(tmp_path / "tok"), warm_start="salient", ict_batch=8,
                    reader_warmup_steps=4)
    m = pretrain("world", c, tmp_path / "run", log=lambda s: None)
    details = m["warm_start_details"]
    assert details["warm_start"] == "salient" and details["reader_warmup_steps"] == 4
    assert "acc_null" in m["after_warm_start"]  # with a reader warm-up the reader is evaluated before REALM too


@pytest.mark.slow
def test_pretrain_on_a_corpus_without_fact_annotations(world, cfg, tokenizer, tmp_path):
    """A JSONL corpus (no world, spans from the tagger): held-out blocks instead of held-out facts, no recall."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n"
                           for d in world.documents[:120]))
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    c = cfg.replace(**TINY, tokenizer=str(tmp_path / "tok"))
    m = pretrain(str(src), c, tmp_path / "run", log=lambda s: None)
    assert m["corpus"] == str(src) and m["after_realm"]["queries_with_gold"] == 0
    assert "recall@5" not in m["after_realm"] and "acc_retrieval" in m["after_realm"]
    assert json.loads((tmp_path / "run" / "corpus.json").read_text())["corpus"] == str(src)


@pytest.mark.slow
@pytest.mark.parametrize("z", ["salient", "mixed"])
def test_salient_reader_warmup_runs(cfg, tokenizer, tmp_path, z):
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    c = cfg.replace(**TINY, tokenizer=str(tmp_path / "tok"), warm_start="salient", ict_batch=8,
                    reader_warmup_steps=3, reader_warmup_z=z)
    m = pretrain("world", c, tmp_path / "run", log=lambda s: None)
    assert m["warm_start_details"]["reader_warmup_steps"] == 3


@pytest.mark.parametrize("z, frac, n_own", [("own", 2 / 3, [6, 6, 6]), ("salient", 2 / 3, [0, 0, 0]),
                                             ("mixed", 2 / 3, [3, 3, 3]), ("own-then-mixed", 2 / 3, [6, 6, 3]),
                                             ("own-then-mixed", 1 / 3, [6, 3, 3]), ("own-then-mixed", 0.0, [3, 3, 3])])
def test_reader_warmup_batches(cfg, tokenizer, blocks, pool, z, frac, n_own):
    """Own-block rows hold x's block minus x; evidence rows hold another block's text; mixed: half each;
    own-then-mixed: own for the first reader_warmup_own_frac of the steps (two thirds by default)."""
    from realm_lite.warmstart import train_reader_warmup

    seen = []

    class Recording:  # the tokenizer, recording the z texts of each batch
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, **kw):
            seen.append(list(texts))
            return tokenizer(texts, **kw)

    torch.manual_seed(0)
    model = Realm(cfg, len(tokenizer))
    c = cfg.replace(reader_warmup_steps=3, batch_size=6, reader_warmup_z=z, reader_warmup_own_frac=frac, log_every=1)
    hist = train_reader_warmup(model, pool, blocks, Recording(), c, "cpu", log=lambda s: None)
    assert len(hist) == 3 and len(seen) == 3 and all(len(t) == 6 for t in seen)
    block_texts = {b.text for b in blocks}
    for texts, n in zip(seen, n_own):
        own = [t for t in texts if t not in block_texts]  # x's block with x cut out is no block's text
        assert len(own) == n and texts[:n] == own


def test_reader_warmup_with_no_block_reads_the_null_document(cfg, tokenizer, blocks, pool, monkeypatch):
    """reader_warmup_z=none: every row is `[CLS] x [SEP] [SEP]` (z = ∅), and no block text is tokenized."""
    import realm_lite.warmstart as warmstart

    joined = []

    def recording_join(xs, zs, *a, **kw):
        joined.append((xs, zs))
        return join(xs, zs, *a, **kw)

    class NoTexts:  # the tokenizer, refusing to tokenize any z
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, **kw):
            raise AssertionError(f"tokenized {texts[:1]}")

    monkeypatch.setattr(warmstart, "join", recording_join)
    torch.manual_seed(0)
    model = Realm(cfg, len(tokenizer))
    c = cfg.replace(reader_warmup_steps=2, batch_size=4, reader_warmup_z="none", log_every=1)
    hist = warmstart.train_reader_warmup(model, pool, blocks, NoTexts(), c, "cpu", log=lambda s: None)
    assert len(hist) == 2 and joined
    assert all(z == [] for _, zs in joined for z in zs) and sum(len(xs) for xs, _ in joined) == 2 * 4


@pytest.mark.parametrize("head_lr, head_moves", [(1e-2, True), (-1.0, False)])
def test_reader_head_lr_trains_the_masked_lm_head_at_its_own_rate(cfg, tokenizer, blocks, pool, head_lr, head_moves):
    """reader_head_lr: the head (transform, bias) at its own lr; with the body's lr 0, only the head moves;
    -1 gives the head the body's lr (here 0: nothing moves)."""
    from realm_lite.warmstart import train_reader_warmup

    torch.manual_seed(0)
    model = Realm(cfg, len(tokenizer))
    before = {n: p.detach().clone() for n, p in model.reader.named_parameters()}
    c = cfg.replace(reader_warmup_steps=2, batch_size=4, reader_warmup_z="own", reader_warmup_lr=0.0,
                    reader_head_lr=head_lr, log_every=1)
    train_reader_warmup(model, pool, blocks, tokenizer, c, "cpu", log=lambda s: None)
    moved = {n for n, p in model.reader.named_parameters() if not torch.equal(p, before[n])}
    assert moved == ({"transform.0.weight", "transform.0.bias", "transform.2.weight", "transform.2.bias", "bias"}
                     if head_moves else set())


@pytest.mark.parametrize("decay", [False, True])
def test_warm_starts_decay_their_lr_only_when_asked(cfg, tokenizer, blocks, pool, monkeypatch, decay):
    """warm_lr_decay: the salient and reader warm-ups warm up over 5% of their steps, then fall linearly to 0;
    off (the default), their lr stays constant."""
    import realm_lite.warmstart as warmstart
    from realm_lite.training import Loop

    loops = []

    class Recorded(Loop):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            loops.append(self)

    monkeypatch.setattr(warmstart, "Loop", Recorded)
    torch.manual_seed(0)
    model = Realm(cfg, len(tokenizer))
    inputs = BlockInputs(blocks, tokenizer, cfg.block_len)
    c = cfg.replace(warm_lr_decay=decay, ict_steps=40, ict_batch=4, reader_warmup_steps=40, batch_size=2,
                    reader_warmup_lr=1e-3, log_every=100)
    warmstart.train_salient(model, pool, blocks, inputs, c, "cpu", log=lambda s: None)
    warmstart.train_reader_warmup(model, pool, blocks, tokenizer, c, "cpu", log=lambda s: None)
    assert [loop.stage for loop in loops] == ["salient", "reader_warmup"]
    for loop, lr in zip(loops, (c.ict_lr, c.reader_warmup_lr)):
        last = loop.opt.param_groups[0]["lr"]
        assert last == (0.0 if decay else lr)
        assert (loop.sched is not None) == decay
