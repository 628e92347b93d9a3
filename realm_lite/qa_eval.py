"""Open-QA metrics: exact match, regex match and top-k retrieval accuracy (paper section 4.3). Notebook 07.

    EM(ŷ, Y)     = max_{y in Y} [normalize(ŷ) == normalize(y)]            # SQuAD / ORQA evaluator
    RegexEM(ŷ, P) = max_{p in P} [re.match(p, ŷ, IGNORECASE)]               # CuratedTrec answers are patterns
    top-k acc    = [some answer occurs in one of the top k retrieved blocks]

`normalize` is the SQuAD v1.1 evaluator's, with ORQA's unicode NFD first: lower-case, drop
punctuation, drop the articles a/an/the, collapse whitespace.
"""
from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """NFD, lower-case, no punctuation, no articles, single spaces (SQuAD v1.1 / ORQA `normalize_answer`)."""
    s = unicodedata.normalize("NFD", s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


@lru_cache(maxsize=65536)
def _compile(pattern: str):
    try:
        return re.compile(pattern, flags=re.IGNORECASE | re.UNICODE | re.MULTILINE)
    except re.error:
        return None  # an unreadable reference pattern matches nothing, as in ORQA's evaluator


def exact_match(prediction: str, answers) -> bool:
    """EM: the normalized prediction equals one of the normalized reference answers."""
    p = normalize_answer(prediction)
    return any(p == normalize_answer(a) for a in answers)


def regex_match(prediction: str, patterns) -> bool:
    """CuratedTrec EM: one reference regex matches at the start of the prediction (ORQA `regex_match_score`)."""
    return any((c := _compile(p)) is not None and c.match(prediction) is not None for p in patterns)


def is_correct(prediction: str, answers, regex: bool = False) -> bool:
    """EM for string answers, RegexEM for pattern answers."""
    return regex_match(prediction, answers) if regex else exact_match(prediction, answers)


def span_matches(span_text: str, answers, regex: bool = False) -> bool:
    """Is this reader span an answer? Strings: normalized equality; patterns: the whole span matches."""
    if regex:
        return any((c := _compile(p)) is not None and c.fullmatch(span_text.strip()) is not None for p in answers)
    return exact_match(span_text, answers)


def contains_answer(text: str, answers, regex: bool = False) -> bool:
    """Does a block hold an answer? Strings: the normalized answer as whole words of the normalized text
    (DrQA/ORQA `has_answer` compare token sequences the same way); patterns: a regex search."""
    if regex:
        return any((c := _compile(p)) is not None and c.search(text) is not None for p in answers)
    t = f" {normalize_answer(text)} "
    return any((a := normalize_answer(ans)) and f" {a} " in t for ans in answers)


def summarize(rows: list[dict], ks=(1, 5)) -> dict:
    """EM and top-k retrieval accuracy over prediction rows with `correct` and `answer_in_top` (1-based rank or None)."""
    n = len(rows)
    if not n:
        return {"questions": 0}
    out = {"questions": n, "em": round(sum(r["correct"] for r in rows) / n, 4)}
    for k in ks:
        if any("answer_in_top" in r for r in rows):  # closed-book rows retrieve nothing
            out[f"top{k}"] = round(sum(r.get("answer_in_top") is not None and r["answer_in_top"] <= k
                                       for r in rows) / n, 4)
    return out
