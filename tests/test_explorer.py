"""The explorer's widgets driven headless, as a person would: set a value, click, read what is rendered."""
import re

import pytest

from realm_lite.explorer import NONE, Explorer, ModelChoice
from realm_lite.shipped import shipped_path

REALM, BEFORE = "world-cpu: REALM", "world-cpu: before REALM (warm start; QA: ICT only)"


@pytest.fixture(scope="module")
def app():
    return Explorer(n_examples=20)


def rows(html: str) -> list[str]:
    return re.findall(r"<tr class='realm-row'>(.*?)</tr>", html)


def test_picking_a_held_out_sentence_asks_and_renders_k_blocks(app):
    app.mode.value, app.model_b.value, app.k.value = "masked sentence", NONE, 8
    assert len(app.pick.options) == 21  # "-" and 20 held-out sentences of the shipped world
    app.pick.value = app.pick.options[3][1]
    assert "[" in app.text.value and app.pick.options[3][0].count("___") == 1
    e = app.results[REALM]
    assert len(rows(app.output_a.value)) == 8 == len(e.candidates)
    assert "∅ (null document)" in app.output_a.value and e.target and e.prediction
    assert f"prediction: <b class='prediction'>{e.prediction}</b>" in app.output_a.value
    assert app.output_b.value == ""
    app.k.value = 4
    app.ask.click()
    assert len(rows(app.output_a.value)) == 4


def test_the_trivial_retrieval_toggle(app):
    app.mode.value, app.model_b.value, app.k.value = "masked sentence", NONE, 8
    x = app.models[REALM].pre().heldout_queries(20)[0]
    a, b = x.example.span
    app.exclude.value = False
    app.text.value = x.example.text[:a] + "[" + x.example.text[a:b] + "] " + x.example.text[b:]  # not a pick
    assert x.source in {c.block for c in app.results[REALM].candidates}
    app.exclude.value = True
    app.ask.click()
    assert x.source not in {c.block for c in app.results[REALM].candidates}


def test_two_models_side_by_side(app):
    app.mode.value, app.k.value = "masked sentence", 8
    app.model_b.value = BEFORE
    app.text.value = "The capital of Druxmark is [MASK]."
    assert set(app.results) == {REALM, BEFORE}
    assert len(rows(app.output_a.value)) == len(rows(app.output_b.value)) == 8
    assert "y unknown" in app.output_a.value and BEFORE in app.output_b.value
    # the same query, two retrievers: the warm start and REALM's update rank the corpus differently
    ranks = [[c.block for c in app.results[m].candidates] for m in (REALM, BEFORE)]
    assert ranks[0] != ranks[1]
    # a held-out pick is the same Query for both models of one corpus: its source kept out, its gold blocks starred
    app.pick.value = app.pick.options[5][1]
    x = app._picked[app.pick.value][0]
    for m in (REALM, BEFORE):
        assert x.source not in {c.block for c in app.results[m].candidates}
        assert app.results[m].target == app.results[REALM].target
    assert any(c.gold for m in (REALM, BEFORE) for c in app.results[m].candidates)


def test_a_question_then_a_fact_edit_then_the_new_answer(app):
    app.model_b.value = NONE
    app.mode.value = "question"
    picks = {label: q for label, q in app.pick.options[1:]}
    label = next(lbl for lbl in picks if lbl.startswith("In which city was"))
    app.pick.value = picks[label]
    e = app.results[REALM]
    assert app.relation.value == "birthplace" and app.subject.value in label
    assert e.correct and len(rows(app.output_a.value)) == len(e.candidates) >= 1
    city = next(n for n in app.subject.options if n != e.prediction and
                app.models[REALM].qa().world.entities[_id(app, n)].kind == "city")
    app.value.value = city
    app.change.click()
    assert "blocks re-embedded" in app.fact_status.value and city in app.fact_status.value
    app.ask.click()
    assert app.results[REALM].prediction == city
    # a model loaded after the edit sees it too
    app.model_b.value = BEFORE
    app.ask.click()
    assert app.models[BEFORE].qa().world.entities[_id(app, city)].name == city
    assert app.results[BEFORE].target == city


def _id(app, name):
    world = app.models[REALM].qa().world
    return next(e.id for e in world.entities.values() if e.name == name)


def test_bad_input_is_shown_not_raised(app):
    app.mode.value, app.model_b.value = "masked sentence", NONE
    app.text.value = "a sentence with nothing to predict"
    assert "no [MASK]" in app.output_a.value and app.results == {}
    app.value.value = "Nowhere At All"
    app.change.click()
    assert "no entity named" in app.fact_status.value
    app.add_model("/no/such/run")
    assert "no such directory" in app.status.value


def test_any_run_or_export_directory_is_a_model(app, tmp_path):
    m = ModelChoice.from_directory(shipped_path("world-cpu"))
    assert m.masked and m.system == "realm" and m.label == str(shipped_path("world-cpu"))
    (tmp_path / "qa.json").write_text("{}")
    assert not ModelChoice.from_directory(tmp_path).masked
    with pytest.raises(FileNotFoundError, match="not a realm-lite run"):
        ModelChoice.from_directory(tmp_path.parent)
    added = app.add_model(str(shipped_path("world-cpu")))
    assert added.label in app.model_b.options
