"""realm_lite.world: the synthetic encyclopedia (entities, facts, documents, questions)."""
import json
import re
from collections import Counter, defaultdict

import pytest

from realm_lite.world import KINDS, OWN, RELATIONS, World

DATE_RE = re.compile(r"\d{1,2} [A-Z][a-z]+ \d{3,4}")
YEAR_RE = re.compile(r"\d{3,4}")


@pytest.fixture
def fresh_world(cfg):
    """A private world for tests that change facts (the session `world` must stay untouched)."""
    return World.generate(cfg)


def _surface(world, value):
    return world.entities[value].name if value in world.entities else value


def _texts(world):
    return {d.id: d.text for d in world.documents}


def _new_value(world, fact):
    kind = RELATIONS[fact.relation][1]
    if kind == "date":
        return "5 June 1777"
    if kind == "year":
        return "1234"
    return next(e.id for e in world.entities.values() if e.kind == kind and e.id != fact.value)


# ---- generation ----------------------------------------------------------------------------
def test_same_seed_same_world(cfg, world):
    again = World.generate(cfg)
    assert [(d.id, d.title, d.text) for d in again.documents] == [(d.id, d.title, d.text) for d in world.documents]
    assert again.questions == world.questions
    assert [(f.subject, f.relation, f.value, f.split) for f in again.facts.values()] == \
           [(f.subject, f.relation, f.value, f.split) for f in world.facts.values()]


def test_different_seed_different_world(cfg, world):
    other = World.generate(cfg.replace(seed=cfg.seed + 1))
    assert [d.text for d in other.documents] != [d.text for d in world.documents]
    assert [q["question"] for q in other.questions] != [q["question"] for q in world.questions]
    assert {e.name for e in other.entities.values()} != {e.name for e in world.entities.values()}


@pytest.mark.parametrize("n", [50, 120])
def test_sizes_follow_world_entities(cfg, n):
    w = World.generate(cfg.replace(world_entities=n))
    assert len(w.entities) == n
    assert len(w.documents) == n
    assert len(w.questions) == len(w.facts)
    assert {k for k in KINDS} == {e.kind for e in w.entities.values()}


def test_sizes_of_session_world(cfg, world):
    assert len(world.entities) == cfg.world_entities == len(world.documents)
    assert [d.id for d in world.documents] == list(world.entities)
    s = world.summary()
    assert s["entities"] == cfg.world_entities and s["facts"] == len(world.facts)
    assert sum(s["questions"].values()) == len(world.questions)


def test_every_kind_and_relation_present(world):
    kinds = Counter(e.kind for e in world.entities.values())
    assert set(kinds) == set(KINDS)
    assert all(kinds[k] >= 3 for k in KINDS)
    assert {f.relation for f in world.facts.values()} == set(RELATIONS)


def test_too_few_entities_is_an_error(cfg):
    with pytest.raises(ValueError, match="world_entities"):
        World.generate(cfg.replace(world_entities=10))


def test_names_are_unique(world):
    names = [e.name for e in world.entities.values()]
    assert len(names) == len(set(names))
    assert all(d.title == world.entities[d.id].name for d in world.documents)


def test_facts_are_well_typed(world):
    for f in world.facts.values():
        subject_kind, value_kind, _ = RELATIONS[f.relation]
        assert world.entities[f.subject].kind == subject_kind
        if value_kind == "date":
            assert DATE_RE.fullmatch(f.value), f
        elif value_kind == "year":
            assert YEAR_RE.fullmatch(f.value), f
        else:
            assert world.entities[f.value].kind == value_kind, f
    # one fact per (subject, relation)
    assert len({(f.subject, f.relation) for f in world.facts.values()}) == len(world.facts)


# ---- documents and mentions --------------------------------------------------------------------
def test_mention_offsets_point_at_names_and_dates(world):
    n_dates = 0
    for d in world.documents:
        assert d.mentions
        for m in d.mentions:
            surface = d.text[m.start:m.end]
            if m.label == "DATE":
                n_dates += 1
                assert m.entity is None
                assert DATE_RE.fullmatch(surface) or YEAR_RE.fullmatch(surface), (d.id, surface)
                assert any(world.facts[fid].value == surface for fid in m.facts), (d.id, surface, m.facts)
            else:
                assert surface == world.entities[m.entity].name, (d.id, m)
            for fid in m.facts:
                assert fid in world.facts
    assert n_dates > 0


def test_each_document_mentions_its_own_entity_first(world):
    for d in world.documents:
        m = d.mentions[0]
        assert (m.start, m.entity) == (0, d.id)


def test_sentences_tile_the_document(world):
    for d in world.documents:
        ends = [(s.start, s.end) for s in d.sentences]
        assert ends[0][0] == 0 and ends[-1][1] == len(d.text)
        for (_, e0), (s1, _) in zip(ends, ends[1:]):
            assert d.text[e0:s1] == " "
        for s in d.sentences:
            assert d.text[s.start].isupper() and d.text[s.end - 1] == "."


def test_every_fact_stated_in_exactly_two_documents(world):
    stating = defaultdict(list)
    for d in world.documents:
        for s in d.sentences:
            for fid in s.facts:
                stating[fid].append(d.id)
    assert set(stating) == set(world.facts)
    for f in world.facts.values():
        docs = world.docs_stating(f.id)
        assert sorted(docs) == sorted(stating[f.id])
        assert len(docs) == 2 and len(set(docs)) == 2, (f, docs)
        assert f.subject in docs
        where = RELATIONS[f.relation][2]
        if where == "value":
            assert f.value in docs  # the value's own document is the other gold document
        else:  # a date is echoed in the document of a related entity
            related = world.fact_of(f.subject, where[len("via:"):]).value
            assert related in docs


def test_fact_mentions_are_in_the_sentence_stating_it(world):
    for d in world.documents:
        for s in d.sentences:
            for fid in s.facts:
                f = world.facts[fid]
                inside = [m for m in d.mentions if s.start <= m.start and m.end <= s.end and fid in m.facts]
                surfaces = {d.text[m.start:m.end] for m in inside}
                assert _surface(world, f.value) in surfaces
                assert world.entities[f.subject].name in surfaces


# ---- questions ---------------------------------------------------------------------------------
def test_questions_answer_their_fact(world):
    ids = [q["id"] for q in world.questions]
    assert len(ids) == len(set(ids))
    for q in world.questions:
        f = world.facts[q["fact"]]
        assert q["answers"] == [_surface(world, f.value)]
        assert (q["subject"], q["relation"]) == (f.subject, f.relation)
        assert world.entities[f.subject].name in q["question"]
        assert q["question"].endswith("?")


def test_questions_split_by_entity(world):
    by_subject = defaultdict(set)
    for q in world.questions:
        by_subject[q["subject"]].add(q["split"])
    assert all(len(splits) == 1 for splits in by_subject.values())
    counts = Counter(q["split"] for q in world.questions)
    assert set(counts) == {"train", "dev", "test"}
    assert counts["train"] > counts["dev"] > 0 and counts["test"] > 0


def test_question_splits_follow_config(cfg):
    w = World.generate(cfg.replace(question_splits=(0.2, 0.4, 0.4)))
    counts = Counter(q["split"] for q in w.questions)
    assert counts["train"] < counts["dev"]


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_heldout_facts_at_about_heldout_fraction(cfg, world, fraction):
    w = world if fraction == cfg.heldout_fraction else World.generate(cfg.replace(heldout_fraction=fraction))
    splits = Counter(f.split for f in w.facts.values())
    assert set(splits) == {"train", "heldout"}
    share = splits["heldout"] / len(w.facts)
    assert abs(share - fraction) < 0.05, share


def _pattern(doc, sentence):
    """A sentence's template: its text with every mention replaced by {}."""
    text, cut = doc.text, sentence.end
    for m in sorted((m for m in doc.mentions if sentence.start <= m.start < sentence.end), key=lambda m: -m.start):
        text = text[:m.start] + "{}" + text[m.end:]
        cut += 2 - (m.end - m.start)
    return text[sentence.start:cut]


def test_default_world_shape_is_two_statements_in_three_phrasings(world):
    assert (world.phrasings, world.restate) == (3, 2)
    assert all(len(world.docs_stating(f)) == 2 for f in list(world.facts)[:200])


def test_one_phrasing_per_relation(cfg, world):
    w = World.generate(cfg.replace(world_phrasings=1))
    assert [f.value for f in w.facts.values()] == [f.value for f in world.facts.values()]  # same facts
    for wld, n_max in ((w, 1), (world, 3)):
        seen = defaultdict(set)
        for f in wld.facts.values():
            d = wld.document(f.subject)
            seen[f.relation] |= {_pattern(d, s) for s in d.sentences if s.facts == [f.id]}
        assert max(len(p) for p in seen.values()) == n_max
    first = {r: {OWN[r][0].replace("{s}", "{}").replace("{v}", "{}")} for r in RELATIONS}
    assert {r: {p[0].lower() + p[1:] for p in ps} for r, ps in seen.items()} != first  # the default draws others
    w_seen = defaultdict(set)
    for f in w.facts.values():
        d = w.document(f.subject)
        w_seen[f.relation] |= {_pattern(d, s) for s in d.sentences if s.facts == [f.id]}
    assert {r: {p[0].lower() + p[1:] for p in ps} for r, ps in w_seen.items()} == \
           {r: {t[0].lower() + t[1:] for t in ps} for r, ps in first.items()}


def test_restate_three_states_a_fact_in_a_third_related_document(cfg, world):
    w = World.generate(cfg.replace(world_restate=3))
    assert [f.value for f in w.facts.values()] == [f.value for f in world.facts.values()]
    n3 = 0
    for f in w.facts.values():
        homes = w.homes(f)
        assert sorted(w.docs_stating(f.id)) == sorted(homes) and len(set(homes)) == len(homes)
        assert homes[:2] == world.homes(f)  # the two statements of the default world stay where they were
        kind = w.entities[f.subject].kind
        assert len(homes) == (2 if kind in ("city", "country", "work") else 3), (kind, f)
        if len(homes) == 3:
            n3 += 1
            third = w.document(homes[2])
            # the subject links to the third document's entity through another of its facts
            assert any(g.value == homes[2] for g in w.facts.values() if g.subject == f.subject and g.id != f.id)
            tagged = {third.text[m.start:m.end] for m in third.mentions if f.id in m.facts}
            assert tagged == {w.entities[f.subject].name, _surface(w, f.value)}
    assert n3 > len(w.facts) / 2


@pytest.mark.parametrize("key, value", [("world_phrasings", 0), ("world_phrasings", 4), ("world_restate", 1),
                                        ("world_restate", 4)])
def test_world_shape_keys_are_checked(cfg, key, value):
    from realm_lite.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        cfg.replace(**{key: value})


def test_no_heldout_facts_at_fraction_zero(cfg):
    w = World.generate(cfg.replace(heldout_fraction=0.0, world_entities=60))
    assert all(f.split == "train" for f in w.facts.values())


# ---- set_fact (knowledge update) -----------------------------------------------------------------
@pytest.mark.parametrize("restate", [2, 3])
@pytest.mark.parametrize("relation", list(RELATIONS))
def test_set_fact_rerenders_exactly_the_affected_documents(cfg, fresh_world, relation, restate):
    w = fresh_world if restate == 2 else World.generate(cfg.replace(world_restate=3))
    fact = next(f for f in w.facts.values() if f.relation == relation)
    old, new = fact.value, _new_value(w, fact)
    before = _texts(w)
    where = RELATIONS[relation][2]
    echo = None if where == "value" else w.fact_of(fact.subject, where[4:]).value
    third_before = w.homes(fact)[2:]

    changed = w.set_fact(fact.subject, relation, new)

    after = _texts(w)
    assert len(changed) == len(set(changed))
    assert set(changed) == {k for k in before if before[k] != after[k]}  # the others stay byte-identical
    expected = {fact.subject, old, new} if where == "value" else {fact.subject, echo}
    if restate == 3:  # also the third document that states it (the same before and after)
        assert third_before == w.homes(fact)[2:]
        expected |= set(third_before)
    assert set(changed) == expected
    assert w.facts[fact.id].value == new

    # the question's answer follows the fact
    q = next(q for q in w.questions if q["fact"] == fact.id)
    assert q["answers"] == [_surface(w, new)]

    # the new value is stated where the fact is stated; the old one no longer is
    stating = w.docs_stating(fact.id)
    assert sorted(stating) == sorted(w.homes(fact)) and set(stating) <= set(changed)
    three = restate == 3 and w.entities[fact.subject].kind not in ("city", "country", "work")
    assert len(stating) == (3 if three else 2)
    assert (new in stating) if where == "value" else (echo in stating)
    if where == "value":
        assert old not in stating
    for doc_id in changed:
        d = w.document(doc_id)
        tagged = {d.text[m.start:m.end] for m in d.mentions if fact.id in m.facts}
        assert _surface(w, old) not in tagged
        if doc_id in stating:
            assert _surface(w, new) in tagged
            assert _surface(w, new) in d.text

    # incremental re-rendering agrees with rendering the whole world from its facts
    rebuilt = World(w.seed, list(w.entities.values()), list(w.facts.values()), w.config)
    assert _texts(rebuilt) == after


def test_set_fact_to_same_value_changes_nothing(fresh_world):
    f = next(f for f in fresh_world.facts.values() if f.relation == "birthplace")
    before = _texts(fresh_world)
    assert fresh_world.set_fact(f.subject, "birthplace", f.value) == []
    assert _texts(fresh_world) == before


def test_set_fact_accepts_an_int_year(fresh_world):
    f = next(f for f in fresh_world.facts.values() if f.relation == "founded")
    fresh_world.set_fact(f.subject, "founded", 1444)
    assert fresh_world.facts[f.id].value == "1444"


def test_set_fact_bad_input(fresh_world):
    w = fresh_world
    person = next(e.id for e in w.entities.values() if e.kind == "person")
    org = next(e.id for e in w.entities.values() if e.kind == "organisation")
    before = _texts(w)
    with pytest.raises(KeyError, match="E99999"):
        w.set_fact("E99999", "born", "3 May 1870")
    with pytest.raises(KeyError, match="haircolour"):
        w.set_fact(person, "haircolour", "red")
    with pytest.raises(KeyError, match="capital"):  # a relation this kind of entity does not have
        w.set_fact(person, "capital", org)
    with pytest.raises(ValueError, match="city"):  # an organisation where a city is needed
        w.set_fact(person, "birthplace", org)
    with pytest.raises(ValueError, match="city"):
        w.set_fact(person, "birthplace", "E99999")
    for bad in ("1870", "May 3 1870", "3 may 1870", "yesterday"):
        with pytest.raises(ValueError, match="3 May 1870"):
            w.set_fact(person, "born", bad)
    city = next(e.id for e in w.entities.values() if e.kind == "city")
    with pytest.raises(ValueError, match="1870"):
        w.set_fact(city, "founded_city", "3 May 1870")  # a year is needed, not a date
    assert _texts(w) == before  # failed updates leave the world untouched


@pytest.mark.parametrize("bad", ["3 Smarch 1870", "45 May 1870"])
def test_set_fact_rejects_a_malformed_month_or_day(fresh_world, bad):
    person = next(e.id for e in fresh_world.entities.values() if e.kind == "person")
    with pytest.raises(ValueError):
        fresh_world.set_fact(person, "born", bad)


# ---- files -------------------------------------------------------------------------------------
def test_save_load_round_trip(world, tmp_path):
    out = world.save(tmp_path / "world")
    names = {p.name for p in out.iterdir()}
    assert names == {"world.jsonl", "entities.jsonl", "facts.jsonl", "documents.jsonl", "questions.jsonl"}
    loaded = World.load(out)
    assert loaded.seed == world.seed
    assert _texts(loaded) == _texts(world)
    assert loaded.questions == world.questions
    assert [(f.id, f.subject, f.relation, f.value, f.split) for f in loaded.facts.values()] == \
           [(f.id, f.subject, f.relation, f.value, f.split) for f in world.facts.values()]
    assert loaded.document(world.documents[5].id).mentions == world.documents[5].mentions
    meta = json.loads((out / "world.jsonl").read_text())
    assert meta["entities"] == len(world.entities) and meta["documents"] == len(world.documents)


def test_save_load_keeps_the_worlds_shape(cfg, tmp_path):
    w = World.generate(cfg.replace(world_restate=3, world_phrasings=1))
    loaded = World.load(w.save(tmp_path))
    assert (loaded.restate, loaded.phrasings) == (3, 1) and _texts(loaded) == _texts(w)


def test_save_load_after_set_fact(fresh_world, tmp_path):
    f = next(f for f in fresh_world.facts.values() if f.relation == "employer")
    fresh_world.set_fact(f.subject, "employer", _new_value(fresh_world, f))
    loaded = World.load(fresh_world.save(tmp_path))
    assert _texts(loaded) == _texts(fresh_world)
    assert loaded.questions == fresh_world.questions


def test_load_without_world_jsonl_is_an_error(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="world.jsonl"):
        World.load(tmp_path)
    world.save(tmp_path / "w")
    (tmp_path / "w" / "world.jsonl").unlink()  # an interrupted save
    with pytest.raises(FileNotFoundError, match="world.jsonl"):
        World.load(tmp_path / "w")


def test_load_rejects_tampered_documents(world, tmp_path):
    out = world.save(tmp_path)
    path = out / "documents.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["text"] = rows[3]["text"].replace(" was ", " was not ", 1)
    assert rows[3]["text"] != world.documents[3].text
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError) as e:
        World.load(out)
    assert "documents.jsonl" in str(e.value) and rows[3]["id"] in str(e.value)


def test_load_rejects_facts_that_disagree_with_documents(world, tmp_path):
    out = world.save(tmp_path)
    path = out / "facts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    i = next(i for i, r in enumerate(rows) if r["relation"] == "founded")
    rows[i]["value"] = str(int(rows[i]["value"]) + 1)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="does not match"):
        World.load(out)
