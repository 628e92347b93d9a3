"""QA data sets: each loader on a fixture in its own format, bad input named by file and line, real SQuAD."""
import bz2
import json

import pytest

from realm_lite.qa_data import (load_qa, parse_target_value, read_curatedtrec, read_nq_open, read_webquestions,
                                squad_open, world_qa)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_nq_open_jsonl(tmp_path):
    f = _write(tmp_path / "NQ-open.dev.jsonl",
               '{"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]}\n'
               '\n{"question": "capital of france", "answer": ["Paris"]}\n')
    qs = load_qa(f"nq-open:{f}", "test")
    assert [q.question for q in qs] == ["who wrote hamlet", "capital of france"]
    assert qs[0].answers == ["William Shakespeare", "Shakespeare"] and not qs[0].regex


@pytest.mark.parametrize("line, message", [
    ('{"question": "q"}', "missing field"),
    ('{"question": "q", "answer": []}', "non-empty list"),
    ('{"question": "q", "answer": [3]}', "non-empty list"),
    ('not json', "not valid JSON"),
])
def test_nq_open_bad_lines_name_file_and_line(tmp_path, line, message):
    f = _write(tmp_path / "nq.jsonl", '{"question": "ok", "answer": ["a"]}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"nq\.jsonl:2: .*{message}"):
        read_nq_open(f)


def test_webquestions_target_value():
    assert parse_target_value('(list (description "Jazmine Sullivan") (description Bob Dylan))') == \
        ["Jazmine Sullivan", "Bob Dylan"]
    assert parse_target_value(r'(list (description "The \"Boss\""))') == ['The "Boss"']


WQ = [{"url": "http://www.freebase.com/view/en/justin_bieber", "targetValue": '(list (description "Jazmine Sullivan"))',
       "utterance": "what is the name of justin bieber brother?"},
      {"url": "u", "targetValue": "(list (description Jamaican English) (description Jamaican Creole English Language))",
       "utterance": "what language do jamaican people speak?"}]


def test_webquestions_original_json_and_bz2(tmp_path):
    f = _write(tmp_path / "webquestions.examples.test.json", json.dumps(WQ))
    qs = read_webquestions(f)
    assert qs[1].answers == ["Jamaican English", "Jamaican Creole English Language"]
    with bz2.open(tmp_path / "wq.json.bz2", "wt", encoding="utf-8") as g:
        json.dump(WQ, g)
    assert [q.answers for q in read_webquestions(tmp_path / "wq.json.bz2")] == [q.answers for q in qs]


def test_webquestions_brmson_layout(tmp_path):
    (tmp_path / "wq" / "main").mkdir(parents=True)
    _write(tmp_path / "wq" / "main" / "devtest.json",
           json.dumps([{"qId": "wqr000001", "qText": "what is the name of justin bieber brother?",
                        "answers": ["Jazmine Sullivan"]}]))
    _write(tmp_path / "wq" / "main" / "trainmodel.json",
           json.dumps([{"qId": "wqr000002", "qText": "what character did natalie portman play in star wars?",
                        "answers": ["Padmé Amidala"]}]))
    qs = load_qa(f"webquestions:{tmp_path / 'wq'}")
    assert [q.id for q in qs] == ["wqr000001", "wqr000002"] and qs[1].answers == ["Padmé Amidala"]


def test_webquestions_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.json: item 1: expected utterance/targetValue"):
        read_webquestions(_write(tmp_path / "bad.json", json.dumps([WQ[0], {"question": "q"}])))
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON .* line 2"):
        read_webquestions(_write(tmp_path / "broken.json", '[\n{"utterance": }]'))
    with pytest.raises(ValueError, match=r"item 0: no \(description"):
        read_webquestions(_write(tmp_path / "empty.json", json.dumps([{"utterance": "q", "targetValue": "(list)"}])))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_webquestions(tmp_path / "missing.json")


def test_curatedtrec_formats(tmp_path):
    brmson = _write(tmp_path / "trec.tsv", "1\tfactoid\tWho invented the telephone?\tBell|Alexander Graham Bell\n"
                                           "2\tfactoid\tWhat is the tallest mountain?\t(Mt\\.?|Mount) Everest\n")
    qs = load_qa(f"curatedtrec:{brmson}", "test")
    assert all(q.regex for q in qs) and qs[1].answers == [r"(Mt\.?|Mount) Everest"] and qs[0].id == "1"
    dpr = _write(tmp_path / "curatedtrec-test.csv", "Who invented the telephone?\t['Bell', 'Alexander Graham Bell']\n")
    assert read_curatedtrec(dpr)[0].answers == ["Bell", "Alexander Graham Bell"]
    drqa = _write(tmp_path / "CuratedTrec-test.txt", '{"question": "Who invented the telephone?", "answer": ["Bell"]}\n')
    assert read_curatedtrec(drqa)[0].regex


def test_curatedtrec_bad_lines_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"t\.tsv:2: expected 4 tab-separated fields .* got 3"):
        read_curatedtrec(_write(tmp_path / "t.tsv", "1\tfactoid\tq?\ta\n2\tfactoid\tq?\n"))
    with pytest.raises(ValueError, match=r"d\.csv:1: answers .* not a Python list literal"):
        read_curatedtrec(_write(tmp_path / "d.csv", "q?\t[unclosed\n"))


def test_unknown_dataset_split_or_missing_path():
    with pytest.raises(ValueError, match="unknown QA data set 'trivia'"):
        load_qa("trivia")
    with pytest.raises(ValueError, match="unknown split"):
        load_qa("world", "validation")
    with pytest.raises(ValueError, match="needs a file"):
        load_qa("nq-open")
    with pytest.raises(ValueError, match="need the run's world"):
        load_qa("world", "train")


def test_world_questions_split_by_entity(world):
    qs = world_qa(world)
    assert len(qs) == len(world.facts)
    splits = {}
    for q in qs:
        subject = world.facts[q.meta["fact"]].subject
        splits.setdefault(subject, set()).add(q.meta["split"])
    assert all(len(s) == 1 for s in splits.values())  # all of an entity's questions in one split
    assert {q.meta["split"] for q in qs} == {"train", "dev", "test"}
    assert len(load_qa("world", "test", world=world)) == sum(q.meta["split"] == "test" for q in qs)


def test_squad_open_on_the_real_file(squad_dir):
    qs = squad_open([squad_dir / "dev-v1.1-part-a.json"])
    assert len(qs) == 5397 and all(q.answers for q in qs)
    by_split = {}
    for q in qs:
        by_split.setdefault(q.meta["split"], set()).add(q.meta["article"])
    assert len(set().union(*by_split.values())) == 24
    assert not (by_split["train"] & by_split["test"]) and not (by_split["dev"] & by_split["test"])
    assert len(load_qa(f"squad:{squad_dir}", "test")) == sum(q.meta["split"] == "test" for q in qs) > 0
