"""realm_lite.corpus: reading sources, cutting REALM blocks, saving them, prepare_corpus, find_squad."""
import gzip
import json
from pathlib import Path

import pytest

import realm_lite.corpus as corpus
from realm_lite.corpus import (Block, Passage, Span, find_squad, load_blocks, load_corpus, make_blocks,
                               prepare_corpus, read_dpr_tsv, read_jsonl_corpus, read_passages, read_squad,
                               read_text, save_blocks, split_sentences, world_passages)
from realm_lite.world import World

SQUAD_FIXTURE = {
    "version": "1.1",
    "data": [
        {"title": "Super_Bowl_50", "paragraphs": [
            {"context": "Super Bowl 50 was played on February 7, 2016. The Denver Broncos won.",
             "qas": [{"id": "q1", "question": "Who won Super Bowl 50?",
                      "answers": [{"text": "Denver Broncos", "answer_start": 50},
                                  {"text": "Denver Broncos", "answer_start": 50},
                                  {"text": "Broncos", "answer_start": 57}]},
                     {"id": "q2", "question": "When was it played?",
                      "answers": [{"text": "February 7, 2016", "answer_start": 28}]}]},
            {"context": "A second paragraph without questions.", "qas": []},
        ]},
        {"title": "Warsaw", "paragraphs": [
            {"context": "Warsaw is the capital of Poland.",
             "qas": [{"question": "What is the capital of Poland?", "answers": [{"text": "Warsaw"}]}]},
        ]},
    ],
}


def _ntokens(tokenizer, block):
    """Wordpieces of the document tower's input `[CLS] title [SEP] text [SEP]`."""
    return len(tokenizer(block.title, block.text)["input_ids"])


@pytest.fixture(scope="module")
def minilm():
    from realm_lite.tokenizer import load_tokenizer

    return load_tokenizer("minilm")  # a fixed vocabulary: block boundaries do not depend on training


# ---- SQuAD ---------------------------------------------------------------------------------------
def test_read_squad_fixture(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(SQUAD_FIXTURE))
    passages, questions = read_squad(path)
    assert [p.id for p in passages] == ["Super_Bowl_50/0", "Super_Bowl_50/1", "Warsaw/0"]
    assert [p.title for p in passages] == ["Super Bowl 50", "Super Bowl 50", "Warsaw"]
    assert passages[2].text == "Warsaw is the capital of Poland."
    assert all(p.spans is None for p in passages)
    assert questions[0] == {"id": "q1", "question": "Who won Super Bowl 50?",
                            "answers": ["Denver Broncos", "Broncos"], "passage": "Super_Bowl_50/0"}
    assert questions[1]["answers"] == ["February 7, 2016"]
    assert questions[2]["id"] == "Warsaw/0/0" and questions[2]["passage"] == "Warsaw/0"
    assert len(questions) == 3


@pytest.mark.parametrize("data,where", [
    ({"version": "1.1"}, "'data'"),
    ([1, 2], "'data'"),
    ({"data": [{"title": "x"}]}, "data[0]"),
    ({"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}, "paragraphs[0]"),
    ({"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [{"question": "q"}]}]}]}, "qas[0]"),
])
def test_read_squad_malformed(tmp_path, data, where):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as e:
        read_squad(path)
    assert str(path) in str(e.value) and where in str(e.value)


def test_read_squad_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n')
    with pytest.raises(ValueError, match="broken.json"):
        read_squad(path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_squad(tmp_path / "nothere.json")


def test_read_squad_real_part_a(squad_dir):
    passages, questions = read_squad(squad_dir / "dev-v1.1-part-a.json")
    assert len({p.title for p in passages}) == 24
    assert len(passages) == 1023
    assert len(questions) == 5397
    assert len({p.id for p in passages}) == len(passages)
    ids = {p.id for p in passages}
    assert all(q["passage"] in ids and q["answers"] for q in questions)
    by_id = {p.id: p for p in passages}
    # SQuAD answers are spans of their paragraph
    assert sum(any(a in by_id[q["passage"]].text for a in q["answers"]) for q in questions) == len(questions)


def test_read_squad_real_part_b_has_no_questions(squad_dir):
    passages, questions = read_squad(squad_dir / "dev-v1.1-part-b-contexts.json")
    assert len(passages) == 1044 and len({p.title for p in passages}) == 24
    assert questions == []


def test_real_squad_blocks_fit(squad_dir, tokenizer):
    passages, _ = read_squad(squad_dir / "dev-v1.1-part-a.json")
    sample = passages[:150]
    blocks, stats = make_blocks(sample, tokenizer, 64)
    assert stats["split_sentences"] > 0  # real Wikipedia sentences longer than a 64-wordpiece block
    assert max(_ntokens(tokenizer, b) for b in blocks) <= 64
    for p in sample:
        mine = [b for b in blocks if b.doc_id == p.id]
        assert [w for b in mine for w in b.text.split()] == p.text.split()


# ---- DPR TSV --------------------------------------------------------------------------------------
DPR_ROWS = 'id\ttext\ttitle\n1\tAaron is a prophet.\tAaron\n2\t"He said ""hi"" twice."\tQuotes\n'


def test_read_dpr_tsv_with_header(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_text(DPR_ROWS)
    passages = read_dpr_tsv(path)
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("1", "Aaron", "Aaron is a prophet."), ("2", "Quotes", 'He said "hi" twice.')]
    assert passages[0].spans is None


def test_read_dpr_tsv_without_header(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_text(DPR_ROWS.split("\n", 1)[1])
    assert [p.id for p in read_dpr_tsv(path)] == ["1", "2"]


def test_read_dpr_tsv_gz(tmp_path):
    path = tmp_path / "psgs.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(DPR_ROWS)
    assert [p.title for p in read_dpr_tsv(path)] == ["Aaron", "Quotes"]
    passages, questions = read_passages(path)
    assert len(passages) == 2 and questions == []


def test_read_dpr_tsv_wrong_field_count_names_file_and_line(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_text(DPR_ROWS + "3\tonly two fields\n")
    with pytest.raises(ValueError) as e:
        read_dpr_tsv(path)
    assert f"{path}:4" in str(e.value)
    assert "got 2" in str(e.value)


def test_read_dpr_tsv_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.tsv"):
        read_dpr_tsv(tmp_path / "none.tsv")


# ---- JSONL and text ---------------------------------------------------------------------------------
def test_read_jsonl_corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": 7, "title": "Denver", "text": "Denver is in Colorado.",
             "spans": [{"start": 0, "end": 6, "label": "GPE"}, {"start": 13, "end": 21}]},
            {"id": "b", "title": "B", "text": "No spans here."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    passages = read_jsonl_corpus(path)
    assert [p.id for p in passages] == ["7", "b"]
    assert passages[0].spans == [Span(0, 6, "GPE"), Span(13, 21, "ENT")]
    assert passages[0].text[13:21] == "Colorado"
    assert passages[1].spans is None


def test_read_jsonl_corpus_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "title": "a", "text": "ok"}\n{"id": 2, "title": \n')
    with pytest.raises(ValueError) as e:
        read_jsonl_corpus(path)
    assert f"{path}:2" in str(e.value)


def test_read_jsonl_corpus_missing_field_names_line_and_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "title": "a", "text": "ok"}\n\n{"id": 2, "text": "no title"}\n')
    with pytest.raises(ValueError) as e:
        read_jsonl_corpus(path)
    assert f"{path}:3" in str(e.value) and "title" in str(e.value)


def test_read_jsonl_corpus_non_object_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('["id", "title", "text"]\n')
    with pytest.raises(ValueError, match=r"docs.jsonl:1"):
        read_jsonl_corpus(path)


def test_read_text_blank_line_separated(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First document,\n  over two lines.\n\n\n   \nSecond document.\n\nThird.\n")
    passages = read_text(path)
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("notes-0", "notes", "First document, over two lines."),
        ("notes-1", "notes", "Second document."),
        ("notes-2", "notes", "Third.")]


def test_read_text_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.txt"):
        read_text(tmp_path / "gone.txt")


# ---- read_passages dispatch ---------------------------------------------------------------------------
def test_read_passages_dispatch_by_extension(tmp_path, world):
    (tmp_path / "s.json").write_text(json.dumps(SQUAD_FIXTURE))
    (tmp_path / "d.tsv").write_text(DPR_ROWS)
    (tmp_path / "j.jsonl").write_text(json.dumps({"id": "x", "title": "X", "text": "Ex."}) + "\n")
    (tmp_path / "t.txt").write_text("One.\n\nTwo.\n")
    (tmp_path / "t.md").write_text("Only one.\n")
    world.save(tmp_path / "world")

    p, q = read_passages(tmp_path / "s.json")
    assert len(p) == 3 and len(q) == 3
    p, q = read_passages(tmp_path / "d.tsv")
    assert [x.id for x in p] == ["1", "2"] and q == []
    p, q = read_passages(tmp_path / "j.jsonl")
    assert [x.id for x in p] == ["x"] and q == []
    p, q = read_passages(tmp_path / "t.txt")
    assert [x.text for x in p] == ["One.", "Two."] and q == []
    p, q = read_passages(str(tmp_path / "t.md"))  # anything else is plain text; str paths work too
    assert [x.id for x in p] == ["t-0"]
    p, q = read_passages(tmp_path / "world")
    assert len(p) == len(world.documents) and q == world.questions
    assert p[0].spans and p[0].sentences


def test_read_passages_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        read_passages(tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in str(e.value)


@pytest.mark.parametrize("name,content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"),
                                          ("empty.txt", ""), ("blank.txt", "  \n\n \n"),
                                          ("empty.tsv", "id\ttext\ttitle\n")])
def test_read_passages_empty_corpus(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as e:
        read_passages(path)
    assert name in str(e.value) and "empty" in str(e.value)


# ---- sentences and blocks -----------------------------------------------------------------------------
def test_split_sentences():
    text = "First one. Second one! 1990 was a year? \"Quoted\" start. lower. case. End"
    parts = [text[s:e] for s, e in split_sentences(text)]
    assert parts == ["First one.", "Second one!", "1990 was a year?", "\"Quoted\" start. lower. case.", "End"]


def test_world_blocks_fit_and_keep_spans(world, tokenizer):
    passages = world_passages(world)
    for block_len in (128, 40):
        blocks, stats = make_blocks(passages, tokenizer, block_len)
        assert stats["blocks"] == len(blocks) and stats["passages"] == len(passages)
        assert stats["spans_dropped"] == 0
        assert max(_ntokens(tokenizer, b) for b in blocks) <= block_len
        # every mention survives, re-based onto its block's text
        assert sum(len(b.spans) for b in blocks) == sum(len(d.mentions) for d in world.documents)
        for b in blocks:
            for s in b.spans:
                surface = b.text[s.start:s.end]
                if s.entity:
                    assert surface == world.entities[s.entity].name
                else:
                    assert any(world.facts[f].value == surface for f in s.facts)
            for s, e, facts in b.sentences:
                assert b.text[s:e].endswith(".")
                for fid in facts:
                    assert b.doc_id in world.docs_stating(fid)
    assert len(blocks) > len(passages)  # block_len=40 splits documents


def test_block_ids_stable_and_unique(world, tokenizer):
    passages = world_passages(world)
    blocks, _ = make_blocks(passages, tokenizer, 40)
    again, _ = make_blocks(passages, tokenizer, 40)
    assert [b.id for b in blocks] == [b.id for b in again]
    assert len({b.id for b in blocks}) == len(blocks)
    by_doc = {}
    for b in blocks:
        doc, num = b.id.rsplit("#", 1)
        assert doc == b.doc_id
        by_doc.setdefault(doc, []).append(int(num))
    assert all(nums == list(range(len(nums))) for nums in by_doc.values())
    assert set(by_doc) == {p.id for p in passages}
    for p in passages:  # blocks of a document, in order, hold all of its words
        words = [w for b in blocks if b.doc_id == p.id for w in b.text.split()]
        assert words == p.text.split()


def test_make_blocks_rebases_jsonl_spans(tokenizer):
    text = "Ada Lovelace was born in London. " * 3 + "She met Charles Babbage in 1833."
    spans = [Span(text.index("Charles Babbage"), text.index("Charles Babbage") + 15, "PERSON"),
             Span(text.rindex("1833"), text.rindex("1833") + 4, "DATE")]
    blocks, stats = make_blocks([Passage("ada", "Ada", text, spans)], tokenizer, 24)
    assert len(blocks) > 1
    kept = [(b, s) for b in blocks for s in b.spans]
    assert [b.text[s.start:s.end] for b, s in kept] == ["Charles Babbage", "1833"]


def test_unannotated_passages_give_blocks_without_spans(tokenizer):
    blocks, _ = make_blocks([Passage("p", "P", "Plain text. Without spans.")], tokenizer, 64)
    assert blocks[0].spans is None
    assert [blocks[0].text[s:e] for s, e, _ in blocks[0].sentences] == ["Plain text.", "Without spans."]


def _long_sentence_with_span_at_cut(tokenizer, block_len):
    """One long sentence whose span straddles the wordpiece where a naive cut would fall."""
    title = "T"
    budget = block_len - len(tokenizer(title, add_special_tokens=False)["input_ids"]) - 3
    name = "Denver Broncos Stadium"
    n_name = len(tokenizer(name, add_special_tokens=False)["input_ids"])
    assert n_name >= 3
    lead = ["the"] * (budget - n_name // 2)  # "the" is one wordpiece; the cut falls inside the name
    text = " ".join(lead + name.split() + ["the"] * (3 * budget)) + "."
    start = text.index(name)
    return Passage("long", title, text, [Span(start, start + len(name), "ENT")]), name


def test_a_span_at_the_cut_point_is_never_split(tokenizer):
    block_len = 20
    passage, name = _long_sentence_with_span_at_cut(tokenizer, block_len)
    blocks, stats = make_blocks([passage], tokenizer, block_len)
    assert stats["split_sentences"] == 1 and len(blocks) > 2
    assert stats["spans_dropped"] == 0
    assert max(_ntokens(tokenizer, b) for b in blocks) <= block_len
    holding = [b for b in blocks if "Denver" in b.text or "Stadium" in b.text]
    assert len(holding) == 1
    (span,) = holding[0].spans
    assert holding[0].text[span.start:span.end] == name
    assert all(b.spans == [] for b in blocks if b is not holding[0])
    assert [w for b in blocks for w in b.text.split()] == passage.text.split()


def test_a_span_that_fits_a_block_is_kept_even_when_it_starts_at_the_second_wordpiece(tokenizer):
    block_len, title = 20, "T"
    budget = block_len - len(tokenizer(title, add_special_tokens=False)["input_ids"]) - 3
    assert len(tokenizer("city", add_special_tokens=False)["input_ids"]) == 1
    name = " ".join(["city"] * budget)  # exactly one block of text
    text = f"the {name} the the."
    passage = Passage("edge", title, text, [Span(4, 4 + len(name), "ENT")])
    blocks, stats = make_blocks([passage], tokenizer, block_len)
    assert stats["spans_dropped"] == 0
    assert sum(len(b.spans) for b in blocks) == 1


@pytest.mark.xfail(strict=True, reason="BUG: corpus._block_passage cuts a word longer than a block in the "
                                       "middle; the block's text then re-tokenizes into more wordpieces "
                                       "('##rst' becomes 'rs','##t') and exceeds block_len")
def test_blocks_fit_even_when_one_word_is_longer_than_a_block(minilm):
    passage = Passage("w", "T", "abcdefghijklmnopqrstuvwxyz" * 2 + ".")
    for block_len in range(10, 30):
        blocks, _ = make_blocks([passage], minilm, block_len)
        assert max(_ntokens(minilm, b) for b in blocks) <= block_len, block_len


def test_block_len_too_small_for_title(tokenizer):
    p = Passage("p1", "A rather long title for a very small block", "Some text here.")
    with pytest.raises(ValueError) as e:
        make_blocks([p], tokenizer, 12)
    assert "p1" in str(e.value) and "block_len" in str(e.value)


def test_make_blocks_empty_corpus(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        make_blocks([], tokenizer, 64)


def test_save_load_blocks_round_trip(world, tokenizer, tmp_path):
    blocks, _ = make_blocks(world_passages(world)[:30], tokenizer, 40)
    blocks.append(Block("plain#0", "plain", "Plain", "No spans.", None, [(0, 9, [])]))
    save_blocks(tmp_path / "blocks.jsonl", blocks)
    loaded = load_blocks(tmp_path / "blocks.jsonl")
    assert loaded == blocks
    assert loaded[-1].spans is None


def test_load_blocks_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no blocks"):
        load_blocks(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a#0", "doc_id": "a", "title": "A"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1.*text"):
        load_blocks(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_blocks(tmp_path / "missing.jsonl")


# ---- prepare_corpus / load_corpus / find_squad --------------------------------------------------------
def test_prepare_corpus_world(cfg, tmp_path):
    from realm_lite.config import Config
    from realm_lite.tokenizer import load_tokenizer

    out = tmp_path / "run"
    prepared = prepare_corpus("world", cfg, out)
    for name in ("config.json", "tokenizer", "blocks.jsonl", "questions.jsonl", "world"):
        assert (out / name).exists(), name
    assert Config.load(out) == cfg
    assert load_blocks(out / "blocks.jsonl") == prepared.blocks
    assert len((out / "questions.jsonl").read_text().splitlines()) == len(prepared.questions) > 0
    world = World.load(out / "world")
    assert [d.text for d in world.documents] == [d.text for d in prepared.world.documents]
    tok = load_tokenizer(out / "tokenizer")
    assert tok.get_vocab() == prepared.tokenizer.get_vocab()
    assert prepared.stats["corpus"] == "world" and prepared.stats["vocab"] == len(tok)
    assert max(_ntokens(tok, b) for b in prepared.blocks) <= cfg.block_len

    assert sorted(p.name for p in out.iterdir()) == ["blocks.jsonl", "config.json", "corpus.json", "questions.jsonl",
                                                     "tokenizer", "world"]  # no temporary leftovers
    again = prepare_corpus("world", cfg, out)  # a re-run into the same directory replaces its outputs
    assert sorted(p.name for p in out.iterdir()) == ["blocks.jsonl", "config.json", "corpus.json", "questions.jsonl",
                                                     "tokenizer", "world"]
    assert load_tokenizer(out / "tokenizer").get_vocab() == again.tokenizer.get_vocab()
    assert [b.id for b in again.blocks] == [b.id for b in load_blocks(out / "blocks.jsonl")]


def test_prepare_corpus_jsonl_file(cfg, tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "title": f"Doc {i}", "text": f"Document number {i} talks about Paris. It is short."}
            for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = prepare_corpus(str(path), cfg.replace(vocab_size=200), tmp_path / "run")
    assert prepared.world is None and prepared.questions == []
    assert [b.doc_id for b in prepared.blocks] == [r["id"] for r in rows]
    assert not (tmp_path / "run" / "world").exists()


def test_prepare_corpus_reports_long_stages_on_stderr(cfg, tmp_path, monkeypatch, capsys):
    from realm_lite import progress

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "title": f"Doc {i}", "text": f"Doc {i} is in Paris."}) + "\n"
                            for i in range(20)))
    prepare_corpus(str(path), cfg.replace(vocab_size=200), tmp_path / "quiet")
    assert capsys.readouterr().err == ""  # stages shorter than progress.DELAY say nothing
    monkeypatch.setattr(progress, "DELAY", 0.0)  # every stage counts as long
    prepare_corpus(str(path), cfg.replace(vocab_size=200), tmp_path / "run")
    err = capsys.readouterr().err
    for line in (f"corpus: reading {path}: done in", "tokenizer: training a 200-wordpiece vocabulary on 20 texts: "
                 "done in", "corpus: writing 20 blocks", "blocks: 100%"):
        assert line in err, err


def test_stage_announces_itself_once_it_runs_long(monkeypatch):
    import io
    import time

    from realm_lite import progress

    monkeypatch.setattr(progress, "DELAY", 0.05)
    out = io.StringIO()
    with progress.stage("slow stage", file=out):
        time.sleep(0.3)
    assert out.getvalue().splitlines() == ["slow stage ...", "slow stage: done in 0s"]
    out = io.StringIO()
    with progress.stage("fast stage", file=out):
        pass
    assert out.getvalue() == ""


def test_load_corpus_squad_uses_find_squad(squad_dir, monkeypatch, cfg):
    monkeypatch.setenv("REALM_LITE_SQUAD", str(squad_dir))
    passages, questions, world = load_corpus("squad", cfg)
    assert world is None
    assert len(passages) == 1023 + 1044
    assert len(questions) == 5397


def test_find_squad_respects_env(tmp_path, monkeypatch):
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(SQUAD_FIXTURE))
    monkeypatch.setenv("REALM_LITE_SQUAD", str(tmp_path))
    assert find_squad() == tmp_path


def test_find_squad_env_without_files_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "unrelated.json").write_text("{}")
    monkeypatch.setenv("REALM_LITE_SQUAD", str(tmp_path))
    monkeypatch.setattr(corpus, "SQUAD_DIRS", (Path("/nonexistent/a"),))
    with pytest.raises(FileNotFoundError) as e:
        find_squad()
    assert str(tmp_path) in str(e.value) and "REALM_LITE_SQUAD" in str(e.value)


def test_find_squad_default_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("REALM_LITE_SQUAD", raising=False)
    a, b = tmp_path / "raw", tmp_path / "shared"
    monkeypatch.setattr(corpus, "SQUAD_DIRS", (a, b))
    with pytest.raises(FileNotFoundError) as e:
        find_squad()
    assert str(a) in str(e.value) and str(b) in str(e.value)
    assert "download.py" in str(e.value)
    b.mkdir()
    (b / "dev-v1.1-part-a.json").write_text(json.dumps(SQUAD_FIXTURE))
    assert find_squad() == b
    a.mkdir()
    (a / "train-v1.1.json").write_text(json.dumps(SQUAD_FIXTURE))
    assert find_squad() == a  # data/raw comes first


def test_find_squad_reads_the_configured_path(squad_dir):
    assert find_squad().resolve() == squad_dir.resolve()  # REALM_LITE_SQUAD, set by conftest.py


def test_the_library_looks_for_squad_only_inside_the_repository():
    repo = Path(corpus.__file__).resolve().parents[1]
    assert all(Path(d).resolve().is_relative_to(repo) for d in corpus.SQUAD_DIRS)
