"""realm_lite.explain on the shipped model: each quantity checked against its definition, typed input, the fact edit."""
import pytest
import torch
import torch.nn.functional as F

from realm_lite.explain import edit_fact, explain_masked, explain_question, format_explanation, parse_masked
from realm_lite.export import load_pretrained, load_qa
from realm_lite.marginal import sequence_log_prob
from realm_lite.qa import predict
from realm_lite.qa_data import load_qa as load_questions
from realm_lite.realm import read, retrieve


@pytest.fixture(scope="module")
def pre():
    return load_pretrained("world-cpu")


@pytest.fixture(scope="module")
def queries(pre):
    return pre.heldout_queries(40)


def test_each_quantity_is_what_the_paper_defines(pre, queries):
    x = queries[0]
    e = explain_masked(pre, x)
    assert e.kind == "masked" and len(e.candidates) == pre.cfg.k
    # the naive rebuild: retrieve, read, and every column from its formula
    with torch.no_grad():
        top, f = retrieve(pre.model, [x], pre.index, pre.inputs, pre.cfg.k, "cpu")
        tok_logp, tgt = read(pre.model, [x], [[-1] + top[0].tolist()], pre.inputs, "cpu")
    log_p_y_zx = sequence_log_prob(tok_logp[0], tgt[0])  # (K,)
    p_z = F.softmax(f[0], -1)
    posterior = F.softmax(F.log_softmax(f[0], -1) + log_p_y_zx, -1)  # p(z|y,x)
    by_block = {c.block: c for c in e.candidates}
    assert set(by_block) == {-1, *top[0].tolist()} and x.source not in by_block
    for z, j in enumerate([-1] + top[0].tolist()):
        c = by_block[j]
        assert c.f == pytest.approx(f[0, z].item(), abs=1e-4)
        assert c.p_z == pytest.approx(p_z[z].item(), abs=1e-5)
        assert c.p_y == pytest.approx(log_p_y_zx[z].exp().item(), abs=1e-5)
        assert c.ru == pytest.approx((log_p_y_zx[z] - log_p_y_zx[0]).item(), abs=1e-4)
        assert c.r == pytest.approx((posterior[z] - p_z[z]).item(), abs=1e-5)
    assert sum(c.p_z for c in e.candidates) == pytest.approx(1, abs=1e-5)
    assert sum(c.r for c in e.candidates) == pytest.approx(0, abs=1e-5)  # r(z) moves mass between documents
    assert [c.p_z for c in e.candidates] == sorted((c.p_z for c in e.candidates), reverse=True)
    assert by_block[-1].ru == 0 and by_block[-1].title.startswith("∅")


def test_held_out_predictions_score_as_the_evaluation_does(pre, queries):
    # acc_retrieval of the shipped model is 0.33 on 300 held-out queries (quality.json); on these 40 the explainer
    # must agree with the evaluation, sentence by sentence
    from realm_lite.pretrain import evaluate

    rows = [explain_masked(pre, x) for x in queries]
    m = evaluate(pre.model, pre.index, queries, pre.inputs, pre.cfg.replace(progress=False), torch.device("cpu"))
    assert sum(e.correct for e in rows) / len(queries) == pytest.approx(m["acc_retrieval"], abs=1e-9)
    hits = [e for e in rows if e.correct]
    assert hits and all(e.prediction == e.target for e in hits)
    assert any(c.gold and c.r > 0 for e in hits for c in e.candidates)  # the loss would raise a gold block's f(x,z)


def test_trivial_retrieval_exclusion_for_typed_sentences(pre, queries):
    x = queries[0]
    a, b = x.example.span
    typed = x.example.text[:a] + "[" + x.example.text[a:b] + "]" + x.example.text[b:]
    kept_out = explain_masked(pre, typed, exclude_trivial=True)
    assert x.source in kept_out.excluded and x.source not in {c.block for c in kept_out.candidates}
    allowed = explain_masked(pre, typed, exclude_trivial=False)
    assert allowed.excluded == [] and x.source in {c.block for c in allowed.candidates}
    assert kept_out.target == pre.tokenizer.decode(x.example.target_ids)
    # the source block states y: given it, the reader fills it in
    source = next(c for c in allowed.candidates if c.block == x.source)
    assert source.prediction == kept_out.target and source.ru > 0


def test_a_typed_mask_tries_fill_lengths_and_uses_the_prediction_as_y(pre):
    e = explain_masked(pre, "The capital of Druxmark is [MASK].", k=4)
    assert e.target is None and e.correct is None and "y unknown" in e.note
    assert len(e.candidates) == 4 and e.prediction
    assert sum(c.r for c in e.candidates) == pytest.approx(0, abs=1e-5)
    assert e.query == "The capital of Druxmark is ___."
    exact = parse_masked("A [MASK] [MASK] here.", pre.tokenizer, 64)
    assert len(exact) == 1 and len(exact[0].masked_positions) == 2  # several typed masks: exactly that many
    assert len(parse_masked("A [MASK] here.", pre.tokenizer, 64)) == 5  # one: lengths 1..5


@pytest.mark.parametrize("text, message", [
    ("nothing to predict", "no [MASK]"),
    ("[Paris] is in [France].", "one span"),
    ("[MASK] is in [France].", "not both"),
    ("A [MASK] here, and [MASK] there.", "one run"),
])
def test_typed_sentences_that_cannot_be_read_are_named(pre, text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        explain_masked(pre, text)


def test_a_model_in_train_mode_is_explained_without_dropout_and_left_as_it_was(pre, queries):
    want = explain_masked(pre, queries[1])
    dropouts = [m for m in pre.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts
    pre.model.train()
    for m in dropouts:
        m.p = 0.5  # the cpu preset trains without dropout: give it some, so that train mode would show
    try:
        got = explain_masked(pre, queries[1])
        assert pre.model.training
    finally:
        pre.model.eval()
        for m in dropouts:
            m.p = 0.0
    assert [(c.block, round(c.p_z, 6), round(c.r, 6)) for c in got.candidates] == \
        [(c.block, round(c.p_z, 6), round(c.r, 6)) for c in want.candidates]


def test_k_out_of_range_is_an_error(pre, queries):
    with pytest.raises(ValueError, match="k=1"):
        explain_masked(pre, queries[0], k=1)


def test_questions_agree_with_qa_predict():
    qa = load_qa("world-cpu", "realm")
    examples = load_questions("world", "test", world=qa.world, cfg=qa.cfg)[:12]
    rows = predict(qa, examples)
    for ex, row in zip(examples, rows):
        e = explain_question(qa, ex.question, ex.answers)
        assert e.prediction == row["prediction"] and e.correct == row["correct"]
        assert len(e.candidates) == qa.cfg.qa_read and sum(c.p_z for c in e.candidates) == pytest.approx(1, abs=1e-5)
        assert any(e.prediction == c.prediction for c in e.candidates)  # the answer is some block's best span
    assert sum(r["correct"] for r in rows) >= 8  # EM 0.78 on 300 test questions (quality.json)
    assert "prediction" in format_explanation(e)


def test_editing_a_fact_reembeds_only_its_blocks_and_changes_the_answer():
    qa = load_qa("world-cpu", "realm")
    ex = next(ex for ex in load_questions("world", "test", world=qa.world, cfg=qa.cfg)
              if ex.meta["relation"] == "birthplace" and predict(qa, [ex])[0]["correct"])
    fact = qa.world.facts[ex.meta["fact"]]
    new = next(e for e in qa.world.entities.values() if e.kind == "city" and e.id != fact.value)
    n_blocks = len(qa.blocks)
    old_rows = {b.id: qa.index.embeddings[i].clone() for i, b in enumerate(qa.blocks)}
    report = edit_fact(qa, qa.world.entities[fact.subject].name, "birthplace", new.name)
    assert report["new"] == new.name and report["documents"] and 0 < report["blocks_reembedded"] < 10
    assert len(qa.blocks) == len(qa.index) and abs(len(qa.blocks) - n_blocks) <= len(report["documents"])
    unchanged = [(i, b) for i, b in enumerate(qa.blocks) if b.doc_id not in report["documents"]]
    assert len(unchanged) >= n_blocks - 10
    assert all(torch.equal(qa.index.embeddings[i], old_rows[b.id]) for i, b in unchanged)  # only changed re-embedded
    e = explain_question(qa, ex.question, [new.name])
    assert e.prediction == new.name and e.correct


def test_editing_a_fact_updates_a_pretrained_model(pre):
    fresh = load_pretrained("world-cpu")
    fact = next(f for f in fresh.world.facts.values() if f.relation == "capital")
    city = next(e for e in fresh.world.entities.values() if e.kind == "city" and e.id != fact.value)
    country = fresh.world.entities[fact.subject].name
    report = edit_fact(fresh, country, "capital", city.name)
    assert len(fresh.blocks) == len(fresh.index) == len(fresh.inputs.doc_ids)
    assert any(f"capital of {country} is {city.name}" in b.text or f"{city.name} serves as the capital of {country}"
               in b.text or f"from its capital, {city.name}" in b.text for b in fresh.blocks)
    assert report["blocks_reembedded"] >= 1
    assert fresh.heldout_queries(5)  # drawn again from the edited corpus


def test_setting_a_fact_to_its_own_value_changes_nothing():
    qa = load_qa("world-cpu", "realm")
    fact = next(f for f in qa.world.facts.values() if f.relation == "birthplace")
    blocks, rows = list(qa.blocks), qa.index.embeddings.clone()
    report = edit_fact(qa, fact.subject, "birthplace", fact.value)
    assert report["documents"] == [] and report["blocks_reembedded"] == 0
    assert [b.id for b in qa.blocks] == [b.id for b in blocks] and torch.equal(qa.index.embeddings, rows)


@pytest.mark.parametrize("args, message", [
    (("Nobody Atall", "birthplace", "Grigard"), "no entity named"),
    (("Saecaerk Saego", "height", "3"), "unknown relation"),
    (("Saecaerk Saego", "born", "yesterday"), "takes a date"),
    (("Saecaerk Saego", "birthplace", "Saecaerk Saego"), "takes the id of a city"),
])
def test_bad_fact_edits_are_named(pre, args, message):
    with pytest.raises((KeyError, ValueError), match=message):
        edit_fact(pre, *args)
