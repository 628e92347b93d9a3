"""Open QA: span marginalization, the zeroed loss, the frozen document side, resume, knowledge update, CLI."""
import json
import math

import pytest
import torch

from realm_lite.cli import main
from realm_lite.corpus import Block
from realm_lite.finetune import finetune, load_system, run_finetune
from realm_lite.pretrain import pretrain
from realm_lite.qa import SYSTEMS, qa_loss, system_from_run
from realm_lite.qa_data import QAExample, load_qa
from realm_lite.qa_eval import exact_match, is_correct
from realm_lite.reader import LEFT_OUT, ReaderInputs, reader_log_likelihood, span_log_probs
from realm_lite.retriever import embed_blocks, embed_in_bf16
from realm_lite.update import knowledge_update, replace_documents

TINY = dict(ict_steps=5, realm_steps=4, reader_warmup_steps=4, batch_size=4, refresh_every=2, refresh_mode="sync",
            eval_queries=8, log_every=2, checkpoint_every=100, warmup_steps=2)
QA_TINY = dict(qa_steps=4, qa_batch=4, qa_retrieve=8, qa_read=3, qa_warmup_steps=1, log_every=2, checkpoint_every=100)


@pytest.fixture(scope="module")
def run(cfg, tokenizer, tmp_path_factory):
    """A tiny pre-training run on the quick world, shared by the tests below."""
    d = tmp_path_factory.mktemp("qa") / "pre"
    tok_dir = d.parent / "tok"
    tokenizer.save_pretrained(str(tok_dir))
    pretrain("world", cfg.replace(**TINY, tokenizer=str(tok_dir)), d, log=lambda s: None)
    return d


def test_span_marginalization_by_hand(tokenizer):
    block = Block("b0", "d0", "Paris", "Paris is large. Paris lies on the Seine.", None, [])
    inputs = ReaderInputs([block], tokenizer, block_len=64, query_len=16, max_span=4)
    spans = inputs.answer_spans(0, ["paris"], regex=False)
    assert len(spans) == 2 and all(inputs.span_text(0, s, e) == "Paris" for s, e in spans)
    assert inputs.answer_spans(0, ["London"], regex=False) == []
    # every span that normalizes to the answer, but none that ends on an article or starts on punctuation
    seine = sorted(inputs.span_text(0, s, e) for s, e in inputs.answer_spans(0, ["Seine"], regex=False))
    assert seine == ["Seine", "the Seine"]
    tail = ReaderInputs([Block("b1", "d1", "t", "It is Paris. The end.", None, [])], tokenizer, 64, 16, 4)
    assert [tail.span_text(0, s, e) for s, e in tail.answer_spans(0, ["Paris"], regex=False)] == ["Paris"]
    batch = inputs.batch(["where is it?"], [[0]], "cpu", answers=[(["Paris"], False)])
    assert batch["answer_spans"].sum() == 2 and (batch["answer_spans"] <= batch["span_ok"]).all()
    # p(y|x) = sum_z p(z|x) sum_{s matches y} p(s|z,x): two blocks, spans scored by hand
    scores = torch.tensor([[0.0, 1.0, 2.0, -1.0], [0.5, 0.5, 0.5, 0.5]]).view(2, 2, 2)  # (K, L, S)
    hit = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    log_p_z = torch.log(torch.tensor([[0.7, 0.3]]))
    p_s = torch.softmax(scores.flatten(1), -1)
    expected = 0.7 * (p_s[0, 0] + p_s[0, 2])  # the second block holds no answer span
    got = reader_log_likelihood(log_p_z, span_log_probs(scores).unsqueeze(0), hit.unsqueeze(0))
    assert math.isclose(got.exp().item(), expected.item(), rel_tol=1e-6)
    none = reader_log_likelihood(log_p_z, span_log_probs(scores).unsqueeze(0), torch.zeros_like(hit).unsqueeze(0))
    assert none.item() < LEFT_OUT / 2  # nothing to sum: about log 0, finite


@pytest.mark.slow
def test_loss_is_zero_when_no_candidate_holds_an_answer(run):
    qa = system_from_run(run, "realm", QA_TINY, log=lambda s: None)
    nowhere = [QAExample(f"n{i}", "who founded the order?", ["qqqxqqq zzzyzzz"]) for i in range(3)]
    out = qa_loss(qa, nowhere)
    assert out["loss"].item() == 0 and out["answer_in_c"] == 0 and out["answer_read"] == 0
    out["loss"].backward()  # still a graph: a batch of such questions is a no-op step, not an error
    assert all(p.grad is None or not p.grad.any() for p in qa.model.parameters())
    found = load_qa("world", "train", world=qa.world)[:32]  # enough questions for some to have an answer in c
    out = qa_loss(qa, found)
    assert out["answer_in_c"] > 0 and out["loss"].item() > 0


@pytest.mark.slow
def test_query_side_finetuning_keeps_the_document_side_frozen(run, tmp_path):
    qa = system_from_run(run, "realm", QA_TINY, log=lambda s: None)
    before = {k: v.clone() for k, v in qa.model.state_dict().items()}
    index_before = qa.index.embeddings.clone()
    finetune(qa, load_qa("world", "train", world=qa.world), tmp_path / "ft", log=lambda s: None)
    after = qa.model.state_dict()
    doc = [k for k in after if k.startswith("embed_doc.")]
    assert doc and all(torch.equal(before[k], after[k]) for k in doc)
    assert not all(torch.equal(before[k], after[k]) for k in after if k.startswith("embed_input."))
    assert not all(torch.equal(before[k], after[k]) for k in after if k.startswith("reader."))
    assert torch.equal(qa.index.embeddings, index_before)
    fresh = embed_blocks(qa.model.embed_doc, qa.blocks, qa.tokenizer, qa.cfg.block_len, device="cpu",
                         autocast=embed_in_bf16(qa.cfg, "cpu"))
    assert torch.allclose(fresh, index_before)  # the saved index still is Embed_doc's


@pytest.mark.slow
def test_bf16_autocast_fine_tunes_and_predicts_in_bf16_close_to_fp32(run, tmp_path, monkeypatch):
    """cfg.autocast=bf16 (the choice on a CPU with AMX; "auto" is bf16 on a GPU): the reader runs in bf16 in
    fine-tuning and prediction, the weights stay fp32, the losses stay near fp32's."""
    from realm_lite.qa import predict

    examples = load_qa("world", "train", world=system_from_run(run, "bm25", QA_TINY, log=lambda s: None).world)
    systems, dtypes = {}, []
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x, f=torch.nn.Linear.forward: (
        dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None), f(self, x))[1])
    for precision in ("off", "bf16"):
        dtypes.clear()
        qa = system_from_run(run, "bm25", dict(QA_TINY, autocast=precision), log=lambda s: None)
        systems[precision] = (finetune(qa, examples, tmp_path / precision, log=lambda s: None), qa)
        assert set(dtypes) == {None if precision == "off" else torch.bfloat16}
        dtypes.clear()
        predict(qa, examples[:4])
        assert set(dtypes) == {None if precision == "off" else torch.bfloat16}
        assert all(p.dtype == torch.float32 for p in qa.model.parameters())
    for a, b in zip(systems["off"][0], systems["bf16"][0]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05, abs=0.05)


@pytest.mark.slow
def test_finetune_resume_reaches_the_same_result(run, tmp_path):
    examples = load_qa("world", "train", world=system_from_run(run, "bm25", QA_TINY, log=lambda s: None).world)
    full = system_from_run(run, "realm", QA_TINY, log=lambda s: None)
    finetune(full, examples, tmp_path / "full", log=lambda s: None)
    part = system_from_run(run, "realm", QA_TINY, log=lambda s: None)
    finetune(part, examples, tmp_path / "part", log=lambda s: None, stop_after=2)
    again = load_system(tmp_path / "part", log=lambda s: None)
    finetune(again, examples, tmp_path / "part", resume=True, log=lambda s: None)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    timeless = lambda h: [{k: v for k, v in r.items() if k not in ("steps_per_s", "seconds")} for r in h]  # noqa: E731
    assert timeless(a["history"]) == timeless(b["history"])
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("full", "part")]
    assert timeless(logs[0]) == timeless(logs[1]) and [r["step"] for r in logs[0]] == [2, 4]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
def test_each_system_trains_predicts_and_reloads(run, tmp_path, system):
    qa = run_finetune(run, system, "world", tmp_path / system, QA_TINY, log=lambda s: None)
    test = load_qa("world", "test", world=qa.world)[:6]
    from realm_lite.qa import evaluate_qa

    metrics, rows = evaluate_qa(qa, test)
    by_hand = sum(exact_match(r["prediction"], ex.answers) for r, ex in zip(rows, test)) / len(test)
    assert metrics["questions"] == 6 and metrics["em"] == round(by_hand, 4)
    # an oracle's references (each question's answer is what the system says) and references no system can give
    oracle = [QAExample(ex.id, ex.question, [r["prediction"]]) for ex, r in zip(test, rows)]
    assert evaluate_qa(qa, oracle)[0]["em"] == 1.0
    assert evaluate_qa(qa, [QAExample(ex.id, ex.question, ["qqqxqqq zzzyzzz"]) for ex in test])[0]["em"] == 0.0
    assert all(isinstance(r["prediction"], str) and r["gold"] for r in rows)
    if system != "closed-book":
        assert {"top1", "top5"} <= set(metrics) and all(len(r["retrieved"]) == qa.cfg.qa_read for r in rows)
    reloaded = load_system(tmp_path / system, log=lambda s: None)
    assert evaluate_qa(reloaded, test)[0] == metrics


@pytest.mark.parametrize("system", ["realm", "bm25"])
def test_answer_recall_is_the_top5_of_prediction_without_reading(run, system):
    from realm_lite.qa import answer_recall, evaluate_qa

    qa = system_from_run(run, system, QA_TINY, log=lambda s: None)
    test = load_qa("world", "test", world=qa.world)[:20]
    assert answer_recall(qa, test, k=5, batch_size=7) == pytest.approx(evaluate_qa(qa, test)[0]["top5"], abs=1e-4)
    assert answer_recall(qa, [QAExample(ex.id, ex.question, ["qqqxqqq zzzyzzz"]) for ex in test]) == 0.0
    assert answer_recall(qa, test, k=len(qa.blocks)) == 1.0  # every question's answer is in some block
    with pytest.raises(ValueError, match="no questions"):
        answer_recall(qa, [])


def test_closed_book_has_no_answer_recall(run):
    from realm_lite.qa import answer_recall

    qa = system_from_run(run, "closed-book", QA_TINY, log=lambda s: None)
    with pytest.raises(ValueError, match="retrieves nothing"):
        answer_recall(qa, load_qa("world", "test", world=qa.world)[:2])


@pytest.mark.slow
def test_knowledge_update_reembeds_only_the_changed_blocks(run, monkeypatch):
    qa = system_from_run(run, "realm", QA_TINY, log=lambda s: None)
    old_blocks, old_emb = list(qa.blocks), qa.index.embeddings.clone()
    fact = next(f for f in qa.world.facts.values() if f.relation == "employer")
    kind = qa.world.entities[fact.value].kind
    new = next(e.id for e in qa.world.entities.values() if e.kind == kind and e.id != fact.value)
    changed = set(qa.world.set_fact(fact.subject, fact.relation, new))
    report = replace_documents(qa, changed)
    n_changed = sum(b.doc_id in changed for b in qa.blocks)
    assert report["blocks_reembedded"] == n_changed > 0 and report["documents_changed"] == len(changed)
    kept = {b.id: i for i, b in enumerate(old_blocks) if b.doc_id not in changed}
    for i, b in enumerate(qa.blocks):
        if b.doc_id not in changed:
            assert torch.equal(qa.index.embeddings[i], old_emb[kept[b.id]])
    rows = [i for i, b in enumerate(qa.blocks) if b.doc_id in changed]
    fresh = embed_blocks(qa.model.embed_doc, [qa.blocks[i] for i in rows], qa.tokenizer, qa.cfg.block_len,
                         device="cpu", autocast=embed_in_bf16(qa.cfg, "cpu"))
    assert torch.allclose(qa.index.embeddings[rows], fresh, atol=1e-5)
    assert any(qa.world.entities[new].name in qa.blocks[i].text for i in rows)
    report = knowledge_update(qa, load_qa("world", "test", world=qa.world), n_facts=5, log=lambda s: None)
    n_new = sum(exact_match(e["after"], [e["new"]]) for e in report["examples"])  # the new value came back
    assert report["facts_changed"] == 5 and report["new_value_returned"] == round(n_new / 5, 4)
    assert len(report["examples"]) == 5 and all(len(e["read"]) == qa.cfg.qa_read for e in report["examples"])
    n_old = sum(exact_match(e["after"], [e["old"]]) for e in report["examples"])
    assert report["old_after_found_in_read_blocks"] + report["old_after_not_in_any_read_block"] == n_old

    def oracle(qa_, examples):  # right about every question before the update, about the first three after it
        after = bool(calls)
        calls.append(examples)
        preds = [ex.answers[0] if not after or i < 3 else "nobody" for i, ex in enumerate(examples)]
        return [{"prediction": p, "correct": is_correct(p, ex.answers)} for p, ex in zip(preds, examples)]

    calls = []
    monkeypatch.setattr("realm_lite.update.predict", oracle)
    report = knowledge_update(qa, load_qa("world", "test", world=qa.world), n_facts=5, seed=1, log=lambda s: None)
    assert len(calls) == 2 and (report["old_value_before"], report["new_value_returned"]) == (1.0, 0.6)
    assert report["old_value_after"] == 0.0


@pytest.mark.slow
def test_cli_finetune_evaluate_update(run, tmp_path, capsys):
    sets = [f"{k}={v}" for k, v in QA_TINY.items()]
    out = tmp_path / "realm"
    assert main(["finetune", "--init", str(run), "--system", "realm", "--out", str(out), "--set", *sets]) == 0
    assert main(["evaluate", "--model", str(out), "--split", "test"]) == 0
    m = json.loads((out / "metrics-test.json").read_text())
    assert m["system"] == "realm" and m["dataset"] == "world" and {"em", "top1", "top5"} <= set(m)
    rows = [json.loads(line) for line in (out / "predictions-test.jsonl").read_text().splitlines()]
    assert len(rows) == m["questions"] and {"question", "gold", "prediction", "retrieved"} <= set(rows[0])
    assert m["em"] == round(sum(exact_match(r["prediction"], r["gold"]) for r in rows) / len(rows), 4)
    assert {"block", "title", "score"} <= set(rows[0]["retrieved"][0])
    assert main(["update", "--model", str(out), "--facts", "3"]) == 0
    assert json.loads((out / "knowledge-update.json").read_text())["facts_changed"] == 3
    assert main(["finetune", "--init", str(run), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["finetune", "--init", str(out), "--out", str(run), "--resume"]) == 2  # run holds no QA run
    assert main(["evaluate", "--model", str(tmp_path / "nothing")]) == 2
    assert "not a realm-lite QA run" in capsys.readouterr().err
    assert main(["finetune", "--init", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_cli_finetune_and_evaluate_name_a_damaged_checkpoint_or_a_missing_run(run, tmp_path, capsys):
    import random
    import shutil

    sets = [f"{k}={v}" for k, v in QA_TINY.items()]
    good = tmp_path / "good"
    assert main(["finetune", "--init", str(run), "--system", "closed-book", "--out", str(good), "--set", *sets]) == 0
    capsys.readouterr()
    from realm_lite.export import read_commands

    assert read_commands(good) == [f"realm-lite finetune --init {run} --system closed-book --out {good} --set "
                                   + " ".join(sets)]  # the command that made the run, for its export
    missing = tmp_path / "missing"
    assert main(["finetune", "--init", str(run), "--out", str(missing), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("realm-lite finetune: error: ") and str(missing) in err and "nothing to resume" in err
    assert not missing.exists()
    for damage, why in (("truncate", "truncated or corrupt"), ("bytes", "not a torch file"), ("foreign", "no model")):
        qa_dir = tmp_path / damage
        shutil.copytree(good, qa_dir)
        path = qa_dir / "checkpoint.pt"
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
        elif damage == "bytes":
            path.write_bytes(random.Random(0).randbytes(4096))
        else:
            torch.save({"weights": torch.zeros(3)}, path)
        for cmd, argv in (("evaluate", ["evaluate", "--model", str(qa_dir)]),
                          ("finetune", ["finetune", "--init", str(run), "--out", str(qa_dir), "--resume"])):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"realm-lite {cmd}: error: ") and str(path) in err and why in err, err
            assert "Traceback" not in err and len(err.splitlines()) == 1
