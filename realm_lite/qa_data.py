"""Open-domain QA data sets (paper section 4.1): question x, answers y, no gold passage. Notebook 07.

    load_qa("world", split="test", world=world)            # the synthetic world's questions, split by entity
    load_qa("squad", split="train", cfg=cfg)               # SQuAD-open: questions only, split by article
    load_qa("nq-open:data/raw/nq-open/NQ-open.dev.jsonl")   # {"question", "answer": [...]} per line
    load_qa("webquestions:PATH")   # original JSON (utterance, targetValue) or brmson main/*.json (qText, answers)
    load_qa("curatedtrec:PATH")    # brmson TSV, DrQA JSONL or DPR TSV; answers are regular expressions

Every loader raises a clear error that names the file (and line or item) it could not read.
"""
from __future__ import annotations

import ast
import bz2
import csv
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from realm_lite.io import read_jsonl

DATASETS = ("world", "squad", "nq-open", "webquestions", "curatedtrec")
SPLITS = ("train", "dev", "test", "all")


@dataclass
class QAExample:
    """One open-domain question x with its reference answers (regular expressions when `regex`)."""

    id: str
    question: str
    answers: list
    regex: bool = False
    meta: dict = field(default_factory=dict)  # the world's fact id, SQuAD's article, ...


def _need_file(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def _answers(value, where: str) -> list:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError(f"{where}: answers must be a non-empty list of strings, got {value!r}")
    return value


# ---- the formats ----------------------------------------------------------------------------------
def read_nq_open(path) -> list[QAExample]:
    """NQ-open JSONL: `{"question": str, "answer": [str, ...]}` per line."""
    path = Path(path)
    return [QAExample(f"{path.stem}-{i}", row["question"], _answers(row["answer"], f"{path}:{i + 1}"))
            for i, row in enumerate(read_jsonl(path, required=("question", "answer")))]


_DESCRIPTION = re.compile(r'\(description (?:"((?:[^"\\]|\\.)*)"|([^()"]+?))\)')


def parse_target_value(target: str) -> list[str]:
    """WebQuestions' `targetValue`: `(list (description "A") (description B))` -> ["A", "B"]."""
    return [(q.replace('\\"', '"') if q else bare).strip() for q, bare in _DESCRIPTION.findall(target)]


def read_webquestions(path) -> list[QAExample]:
    """WebQuestions: the original JSON list (`utterance`, `targetValue`; .bz2 accepted) or the brmson
    layout (`qId`, `qText`, `answers`; a file, or a directory whose `main/*.json` are read in name order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "main").glob("*.json")) or sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"{path}: no WebQuestions JSON files (looked for main/*.json and *.json)")
        return [ex for f in files for ex in read_webquestions(f)]
    opener = bz2.open if _need_file(path).suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    out = []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        if isinstance(item, dict) and "utterance" in item and "targetValue" in item:
            answers = parse_target_value(item["targetValue"])
            if not answers:
                raise ValueError(f"{where}: no (description ...) answer in targetValue {item['targetValue']!r}")
            out.append(QAExample(f"{path.stem}-{i}", item["utterance"], answers))
        elif isinstance(item, dict) and "qText" in item and "answers" in item:
            out.append(QAExample(str(item.get("qId", f"{path.stem}-{i}")), item["qText"],
                                 _answers(item["answers"], where)))
        else:
            raise ValueError(f"{where}: expected utterance/targetValue (original) or qText/answers (brmson)")
    return out


def read_curatedtrec(path) -> list[QAExample]:
    """CuratedTrec, answers as regexes: brmson TSV `id<TAB>type<TAB>question<TAB>regex`, DrQA JSONL
    `{"question", "answer": [regex]}` (.txt/.jsonl) or DPR `question<TAB>['regex', ...]` (.csv)."""
    path = _need_file(Path(path))
    if path.suffix in (".txt", ".jsonl", ".json"):
        return [QAExample(f"{path.stem}-{i}", row["question"], _answers(row["answer"], f"{path}:{i + 1}"), regex=True)
                for i, row in enumerate(read_jsonl(path, required=("question", "answer")))]
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row or not any(row):
                continue
            if len(row) == 4:  # brmson: id, type, question, one regex
                out.append(QAExample(row[0], row[2], [row[3]], regex=True))
            elif len(row) == 2:  # DPR: question, a Python list literal of regexes
                try:
                    answers = ast.literal_eval(row[1])
                except (ValueError, SyntaxError):
                    raise ValueError(f"{where}: answers {row[1]!r} are not a Python list literal") from None
                out.append(QAExample(f"{path.stem}-{reader.line_num}", row[0], _answers(answers, where), regex=True))
            else:
                raise ValueError(f"{where}: expected 4 tab-separated fields (id, type, question, regex) "
                                 f"or 2 (question, answer list), got {len(row)}")
    return out


def world_qa(world) -> list[QAExample]:
    """The synthetic world's questions; `meta` holds the fact, its relation and the split (by entity)."""
    return [QAExample(q["id"], q["question"], list(q["answers"]),
                      meta={"fact": q["fact"], "relation": q["relation"], "split": q["split"]})
            for q in world.questions]


def squad_open(files, splits=(0.8, 0.1, 0.1), seed: int = 0) -> list[QAExample]:
    """SQuAD-open: SQuAD v1.1 questions without their paragraphs, split train/dev/test by article."""
    from realm_lite.corpus import read_squad

    questions = [q for f in files for q in read_squad(f)[1]]
    articles = sorted({q["passage"].rsplit("/", 1)[0] for q in questions})
    random.Random(seed).shuffle(articles)
    n_train = round(splits[0] * len(articles))
    n_dev = round(splits[1] * len(articles))
    split_of = {a: "train" if i < n_train else "dev" if i < n_train + n_dev else "test"
                for i, a in enumerate(articles)}
    return [QAExample(q["id"], q["question"], q["answers"],
                      meta={"article": q["passage"].rsplit("/", 1)[0], "split": split_of[q["passage"].rsplit("/", 1)[0]]})
            for q in questions]


# ---- one entry point ------------------------------------------------------------------------------
def load_qa(spec: str, split: str = "all", world=None, cfg=None) -> list[QAExample]:
    """Questions for `spec` ("world", "squad", or "nq-open:PATH", "webquestions:PATH", "curatedtrec:PATH").

    `split` selects train/dev/test where the data set is split here (world: by entity; SQuAD: by article);
    a file-based set is used whole (pass the file of the split you want)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    name, _, path = spec.partition(":")
    if name == "world":
        if world is None:
            raise ValueError("the world questions need the run's world (fine-tune from a run with --corpus world)")
        examples = world_qa(world)
    elif name == "squad":
        from realm_lite.corpus import SQUAD_GLOB, find_squad

        files = sorted(Path(path).glob(SQUAD_GLOB)) if path else sorted(find_squad().glob(SQUAD_GLOB))
        if not files:
            raise FileNotFoundError(f"no SQuAD v1.1 JSON in {path}")
        splits, seed = (cfg.question_splits, cfg.seed) if cfg is not None else ((0.8, 0.1, 0.1), 0)
        examples = [q for q in squad_open(files, splits, seed) if q.answers]
    elif name in ("nq-open", "webquestions", "curatedtrec"):
        if not path:
            raise ValueError(f"data set {name!r} needs a file: --dataset {name}:PATH")
        reader = {"nq-open": read_nq_open, "webquestions": read_webquestions, "curatedtrec": read_curatedtrec}[name]
        examples = reader(path)
        if split != "all":  # the file is the split
            return examples
    else:
        raise ValueError(f"unknown QA data set {name!r}; valid: world, squad, nq-open:PATH, webquestions:PATH, "
                         f"curatedtrec:PATH")
    if split == "all":
        return examples
    return [ex for ex in examples if ex.meta.get("split") == split]
