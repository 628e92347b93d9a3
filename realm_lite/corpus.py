"""The knowledge corpus Z: documents from any source, cut into REALM blocks of at most `block_len` wordpieces.

Sources (data/README.md): the synthetic world, SQuAD v1.1 JSON, DPR Wikipedia TSV
(`id<TAB>text<TAB>title`), JSONL (`{"id","title","text"}`) and plain text. Each block keeps its
document's title (the document tower reads `[CLS] title [SEP] body [SEP]`) and a stable id
`"<doc id>#<block number>"`. Salient spans ride along with exact character offsets.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import re
from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from realm_lite.io import atomic_write_text, read_jsonl, write_jsonl
from realm_lite.progress import bar, stage


@dataclass
class Span:
    """A salient span: a named entity or a date, `text[start:end]`."""

    start: int
    end: int
    label: str
    entity: str | None = None  # world entity id, when known
    facts: list = field(default_factory=list)  # world fact ids it takes part in, when known


@dataclass
class Passage:
    """A source document before blocking. `spans` is None when the source has no annotations."""

    id: str
    title: str
    text: str
    spans: list | None = None
    sentences: list | None = None  # [(start, end, fact ids)] when the source knows them


@dataclass
class Block:
    """One retrievable block z."""

    id: str
    doc_id: str
    title: str
    text: str
    spans: list | None  # [Span] re-based to this block's text; None = not annotated
    sentences: list  # [(start, end, fact ids)]: sentences (or parts of over-long ones) of `text`


# ---- reading sources ---------------------------------------------------------------------------
def read_squad(path: str | Path) -> tuple[list[Passage], list[dict]]:
    """SQuAD v1.1 JSON: each paragraph a passage, each question {id, question, answers, passage}."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not SQuAD v1.1 JSON (expected an object with a 'data' list)")
    passages, questions = [], []
    for ai, article in enumerate(data["data"]):
        where = f"{path}: data[{ai}]"
        if not isinstance(article, dict) or "paragraphs" not in article:
            raise ValueError(f"{where}: missing 'paragraphs'")
        title = str(article.get("title", f"article {ai}")).replace("_", " ")
        for pi, para in enumerate(article["paragraphs"]):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise ValueError(f"{where}.paragraphs[{pi}]: missing 'context' text")
            pid = f"{article.get('title', ai)}/{pi}"
            passages.append(Passage(pid, title, para["context"]))
            for qi, qa in enumerate(para.get("qas", [])):
                if "question" not in qa or "answers" not in qa:
                    raise ValueError(f"{where}.paragraphs[{pi}].qas[{qi}]: needs 'question' and 'answers'")
                questions.append({"id": qa.get("id", f"{pid}/{qi}"), "question": qa["question"],
                                  "answers": list(dict.fromkeys(a["text"] for a in qa["answers"])),
                                  "passage": pid})
    return passages, questions


def read_dpr_tsv(path: str | Path) -> list[Passage]:
    """DPR Wikipedia TSV (psgs_w100.tsv): `id<TAB>text<TAB>title`, optional header, .gz accepted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    passages = []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for row in bar(reader, f"reading {path.name}", unit=" passages"):
            if reader.line_num == 1 and row[:1] == ["id"]:
                continue  # header
            if not row:
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{reader.line_num}: expected 3 tab-separated fields "
                                 f"(id, text, title), got {len(row)}")
            passages.append(Passage(row[0], row[2], row[1]))
    return passages


def read_jsonl_corpus(path: str | Path) -> list[Passage]:
    """JSONL, one `{"id", "title", "text"}` per line; optional "spans": [{"start","end","label"}]."""
    passages = []
    for row in read_jsonl(path, required=("id", "title", "text")):
        spans = None
        if "spans" in row:
            spans = [Span(s["start"], s["end"], s.get("label", "ENT")) for s in row["spans"]]
        passages.append(Passage(str(row["id"]), row["title"], row["text"], spans))
    return passages


def read_text(path: str | Path) -> list[Passage]:
    """Plain text: documents separated by blank lines; the title is the file name's stem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    chunks = [c.strip() for c in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
    return [Passage(f"{path.stem}-{i}", path.stem, " ".join(c.split())) for i, c in enumerate(c for c in chunks if c)]


def world_passages(world) -> list[Passage]:
    """The synthetic world's documents, with their exact mention offsets and sentence facts."""
    return [Passage(d.id, d.title, d.text,
                    [Span(m.start, m.end, m.label, m.entity, list(m.facts)) for m in d.mentions],
                    [(s.start, s.end, list(s.facts)) for s in d.sentences]) for d in world.documents]


@contextmanager
def _readable(path: Path):
    """Errors of a file that is not UTF-8 text (or not gzip) become ValueErrors naming the file."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x}: {e.reason}); "
                         "realm-lite reads every corpus file as UTF-8") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path}: not a complete gzip file ({e})") from None


def read_passages(path: str | Path) -> tuple[list[Passage], list[dict]]:
    """Any supported file or world directory, chosen by its name; returns (passages, questions)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no corpus at {path}")
    with _readable(path):
        if path.is_dir():
            from realm_lite.world import World

            world = World.load(path)
            passages, questions = world_passages(world), world.questions
        elif path.suffix == ".json":
            passages, questions = read_squad(path)
        elif path.name.endswith((".tsv", ".tsv.gz")):
            passages, questions = read_dpr_tsv(path), []
        elif path.suffix == ".jsonl":
            passages, questions = read_jsonl_corpus(path), []
        else:
            passages, questions = read_text(path), []
    if not passages:
        raise ValueError(f"{path}: the corpus is empty (no documents found)")
    return passages, questions


def _load_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


# ---- blocking ----------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character ranges of sentences (a light rule: end punctuation, space, capital or digit)."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append((start, m.start()))
        start = m.end()
    if start < len(text.rstrip()):
        out.append((start, len(text.rstrip())))
    return out


def make_blocks(passages: list[Passage], tokenizer, block_len: int) -> tuple[list[Block], dict]:
    """Cut passages into blocks of at most `block_len` wordpieces, `[CLS] title [SEP] body [SEP]` included.

    Blocks break between sentences; a sentence longer than a block breaks between words, never
    inside a salient span unless one span alone is longer than a block (then it is dropped and
    counted in `stats["spans_dropped"]`).
    """
    if not passages:
        raise ValueError("cannot make blocks from an empty corpus")
    blocks, stats = [], {"passages": len(passages), "blocks": 0, "spans_dropped": 0, "split_sentences": 0}
    with bar(None, "blocks", total=len(passages), unit=" passages") as progress:
        for c in range(0, len(passages), 1024):  # the fast tokenizer encodes a batch at a time
            chunk = passages[c:c + 1024]
            titles = tokenizer([p.title for p in chunk], add_special_tokens=False)["input_ids"]
            offsets = tokenizer([p.text for p in chunk], add_special_tokens=False,
                                return_offsets_mapping=True)["offset_mapping"]
            for p, title_ids, offs in zip(chunk, titles, offsets):
                blocks += _block_passage(p, len(title_ids), [s for s, _ in offs], block_len, stats)
            progress.update(len(chunk))
    stats["blocks"] = len(blocks)
    return blocks, stats


def _block_passage(p: Passage, title_len: int, starts: list[int], block_len: int, stats: dict) -> list[Block]:
    """Blocks of one passage; `starts` holds the character start of each of its wordpieces."""
    budget = block_len - title_len - 3
    if budget < 8:
        raise ValueError(f"passage {p.id}: title {p.title!r} leaves {budget} wordpieces of a "
                         f"{block_len}-wordpiece block for text; raise block_len")
    sentences = p.sentences or [(s, e, []) for s, e in split_sentences(p.text)]
    spans = p.spans or []
    pieces = []  # (char start, char end, fact ids, n wordpieces): sentences, or parts of long ones
    for s, e, facts in sentences:
        toks = list(range(bisect_left(starts, s), bisect_left(starts, e)))
        if len(toks) > budget:
            stats["split_sentences"] += 1
        while len(toks) > budget:
            cut = budget
            while cut > 0 and _inside_span(starts[toks[cut]], spans, p.text):
                cut -= 1  # step back to a word boundary outside every span
            if cut == 0:
                cut = budget  # no such boundary: cut mid-span (counted in spans_dropped)
            pieces.append((starts[toks[0]], starts[toks[cut]], list(facts), cut))
            s, toks = starts[toks[cut]], toks[cut:]
        pieces.append((s, e, list(facts), len(toks)))
    groups, cur, n = [], [], 0
    for piece in pieces:
        if cur and n + piece[3] > budget:
            groups.append(cur)
            cur, n = [], 0
        cur.append(piece)
        n += piece[3]
    groups.append(cur)
    blocks = []
    for bi, group in enumerate(groups):
        bs, be = group[0][0], group[-1][1]
        kept = [s for s in spans if bs <= s.start and s.end <= be]
        stats["spans_dropped"] += sum(1 for s in spans if bs <= s.start < be < s.end)
        block_spans = None if p.spans is None else [
            Span(s.start - bs, s.end - bs, s.label, s.entity, list(s.facts)) for s in kept]
        sents = [(s - bs, e - bs, facts) for s, e, facts, _ in group]
        blocks.append(Block(f"{p.id}#{bi}", p.id, p.title, p.text[bs:be], block_spans, sents))
    return blocks


def _inside_span(char: int, spans: list[Span], text: str) -> bool:
    """True if a cut before `char` would split a span or a word."""
    if char > 0 and not text[char - 1].isspace():
        return True
    return any(s.start < char < s.end for s in spans)


# ---- saving ------------------------------------------------------------------------------------
def save_blocks(path: str | Path, blocks: list[Block]) -> None:
    write_jsonl(path, (asdict(b) for b in blocks))


def load_blocks(path: str | Path) -> list[Block]:
    blocks = []
    for row in read_jsonl(path, required=("id", "doc_id", "title", "text")):
        spans = None if row.get("spans") is None else [Span(**s) for s in row["spans"]]
        blocks.append(Block(row["id"], row["doc_id"], row["title"], row["text"], spans,
                            [tuple(s) for s in row.get("sentences", [])]))
    if not blocks:
        raise ValueError(f"{path}: no blocks")
    return blocks


# ---- one call from a corpus name to blocks -----------------------------------------------------
_REPO = Path(__file__).resolve().parents[1]
SQUAD_DIRS = (_REPO / "data/raw/squad",)  # where `--corpus squad` looks without $REALM_LITE_SQUAD
SQUAD_GLOB = "*-v1.1*.json"  # train-v1.1.json, dev-v1.1.json (data/download.py), dev-v1.1-part-a.json, ...


@dataclass
class PreparedCorpus:
    blocks: list
    questions: list
    tokenizer: object
    world: object | None
    stats: dict


def find_squad(env_var: str = "REALM_LITE_SQUAD") -> Path:
    """The SQuAD directory for `--corpus squad`: $REALM_LITE_SQUAD, else data/raw/squad (data/download.py)."""
    candidates = [os.environ[env_var]] if os.environ.get(env_var) else list(SQUAD_DIRS)
    for c in candidates:
        if Path(c).is_dir() and any(Path(c).glob(SQUAD_GLOB)):
            return Path(c)
    raise FileNotFoundError(f"no SQuAD v1.1 JSON found in {candidates}; run `python data/download.py squad` "
                            f"or set {env_var}")


def load_corpus(spec: str, cfg):
    """(passages, questions, world) for `spec`: "world" (generated from cfg), "squad", or a path."""
    if spec == "world":
        from realm_lite.world import World

        world = World.generate(cfg)
        return world_passages(world), world.questions, world
    if spec == "squad":
        passages, questions = [], []
        for f in sorted(find_squad().glob(SQUAD_GLOB)):
            with _readable(f):
                p, q = read_squad(f)
            passages += p
            questions += q
        return passages, questions, None
    passages, questions = read_passages(spec)
    return passages, questions, None


def check_corpus_size(cfg, n_blocks: int, spec: str = "the corpus", keys=("k", "recall_k")) -> None:
    """The corpus holds what `keys` retrieve: k-1 blocks z per query x and recall_k, besides x's own block
    (pre-training); qa_retrieve per question (fine-tuning)."""
    room = {"k": (cfg.k - 1, n_blocks - 1, n_blocks), "recall_k": (cfg.recall_k, n_blocks - 1, n_blocks - 1),
            "qa_retrieve": (cfg.qa_retrieve, n_blocks, n_blocks)}  # key: (blocks wanted, available, largest value)
    for key in keys:
        wanted, available, largest = room[key]
        if wanted > available:
            raise ValueError(f"{key}={getattr(cfg, key)} retrieves {wanted} blocks per query, but {spec} has "
                             f"{n_blocks} blocks ({available} to retrieve from): set {key}={largest} or less")


def salient_words(passages: list[Passage]) -> set[str]:
    """The words of every annotated salient span (entity names, dates): made whole wordpieces by `span_words`."""
    words = set()
    for p in passages:
        for s in p.spans or ():
            words.update(re.findall(r"\w+", p.text[s.start:s.end]))
    return words


def prepare_corpus(spec: str, cfg, out_dir: str | Path) -> PreparedCorpus:
    """Corpus -> tokenizer -> blocks, written under `out_dir` (config.json, tokenizer/, blocks.jsonl, ...)."""
    from realm_lite.tokenizer import get_tokenizer

    what = f"a world of {cfg.world_entities} entities" if spec == "world" else spec
    with stage(f"corpus: reading {what}"):
        passages, questions, world = load_corpus(spec, cfg)  # bad input fails here, before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out)
    if world is not None:
        world.save(out / "world")
    words = salient_words(passages) if cfg.span_words else ()
    tokenizer = get_tokenizer(cfg, (f"{p.title} {p.text}" for p in passages), out / "tokenizer", whole_words=words)
    if cfg.tokenizer or cfg.backbone or cfg.reader_backbone:  # a pretrained vocabulary: keep a copy in the run
        tokenizer.save_pretrained(str(out / "tokenizer"))
    blocks, stats = make_blocks(passages, tokenizer, cfg.block_len)
    with stage(f"corpus: writing {len(blocks)} blocks to {out / 'blocks.jsonl'}"):
        save_blocks(out / "blocks.jsonl", blocks)
        write_jsonl(out / "questions.jsonl", questions)
    stats.update(corpus=spec, questions=len(questions), vocab=len(tokenizer))
    atomic_write_text(out / "corpus.json", json.dumps(stats, indent=2) + "\n")  # what was read, for resume
    return PreparedCorpus(blocks, questions, tokenizer, world, stats)
