"""Masking of the query x (paper section 3.4): salient spans, random tokens, random spans. Notebook 01.

All three return a `MaskedExample`: `[CLS] x [SEP]` input ids with masks applied, the masked
positions, and the original ids there (the targets y). REALM's choice is salient span masking:
one named-entity or date span of the sentence, every wordpiece of it masked, so that the model
must recall a *fact* rather than fill in syntax.

Salient spans come from the corpus's annotations when it has them (the synthetic world does);
otherwise from a tagger: spaCy's NER when an English model (en_core_web_sm/md/lg) is installed,
else the heuristic `regex_tagger`: dates ("3 May 1870", "May 3, 1870", "May 1870", "the 1870s",
a bare year 1000-2099) and runs of capitalised words ("Denver Broncos", "University of Chicago"),
dropping a single capitalised word that only starts its sentence.
"""
from __future__ import annotations

import random
import re
import weakref
from dataclasses import dataclass

from realm_lite.corpus import Span

STRATEGIES = ("salient", "random-token", "random-span")


@dataclass
class MaskedExample:
    """x with masks: `input_ids` (L,), `masked_positions` (M,), `target_ids` (M,)."""

    input_ids: list
    masked_positions: list
    target_ids: list
    text: str  # the unmasked sentence x
    strategy: str
    span: tuple | None = None  # (start, end) characters of the masked salient span


# ---- taggers ----------------------------------------------------------------------------------
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE = re.compile(
    rf"\b(?:\d{{1,2}} {_MONTH},? \d{{3,4}}|{_MONTH} \d{{1,2}},? \d{{3,4}}|{_MONTH} \d{{3,4}}|\d{{1,2}} {_MONTH}"
    rf"|1\d{{3}}s|20\d{{2}}s|1\d{{3}}|20\d{{2}})\b")
_CAP = r"(?:[A-Z][\w'\-]*|\d+)"
_NAME = re.compile(rf"\b[A-Z][\w'\-]*(?:\s+(?:(?:of|the|de|von|van|for|upon)\s+)*{_CAP})*")
_LEADING = re.compile(r"^(?:The|A|An|In|On|At|By|For|From|During|After|Before|This|That|These|Its|His|Her|Their)\s+")


def regex_tagger(text: str) -> list[Span]:
    """The fallback tagger: dates by regular expression, names as runs of capitalised words."""
    spans = [Span(m.start(), m.end(), "DATE") for m in _DATE.finditer(text)]
    taken = [(s.start, s.end) for s in spans]
    blanked = text
    for a, b in taken:  # names must not run into a date ("In 1995 Microsoft ...")
        blanked = blanked[:a] + "." * (b - a) + blanked[b:]
    for m in _NAME.finditer(blanked):
        start, end, name = m.start(), m.end(), m.group()
        lead = _LEADING.match(name)
        if lead:
            start, name = start + lead.end(), name[lead.end():]
        name_stripped = re.sub(r"(?:\s+(?:of|the|de|von|van|for|upon))+$", "", name)
        end = start + len(name_stripped)
        words = name_stripped.split()
        if not words:
            continue
        at_sentence_start = start == 0 or re.search(r"(?<!\.\.)[.!?]\s+[\"'(]?$", blanked[:start]) is not None
        if len(words) == 1 and at_sentence_start and not words[0].isupper():
            continue  # "However", "Many", ...: capitalised only because they start a sentence
        if any(a < end and start < b for a, b in taken):
            continue
        spans.append(Span(start, end, "ENT"))
        taken.append((start, end))
    return sorted(spans, key=lambda s: s.start)


def spacy_tagger(model: str = "en_core_web_sm"):
    """spaCy NER as a tagger, or None when spaCy or the English model is not installed."""
    try:
        import spacy

        nlp = spacy.load(model, disable=["parser", "lemmatizer"])
    except Exception:  # ImportError, OSError (model missing), and spaCy's own errors
        return None
    keep = {"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "DATE"}

    def tag(text: str) -> list[Span]:
        return [Span(e.start_char, e.end_char, e.label_) for e in nlp(text).ents if e.label_ in keep]

    return tag


def get_tagger(prefer: str = "auto"):
    """`(name, tag_fn)`: spaCy when an English model is installed (or `prefer="spacy"`), else the regex tagger."""
    if prefer not in ("auto", "spacy", "regex"):
        raise ValueError(f"unknown tagger {prefer!r}; valid: auto, spacy, regex")
    if prefer != "regex":
        for model in ("en_core_web_sm", "en_core_web_md", "en_core_web_lg"):
            fn = spacy_tagger(model)
            if fn is not None:
                return f"spacy:{model}", fn
        if prefer == "spacy":
            raise ImportError("tagger 'spacy' asked for, but spaCy or an English model (en_core_web_sm) is missing")
    return "regex", regex_tagger


# ---- masking ----------------------------------------------------------------------------------
_ENCODED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {(text, max_len): encoding}


def _encode(text: str, tokenizer, max_len: int):
    """`[CLS] x [SEP]` ids, truncated to max_len, and each wordpiece's character range (None for specials).

    Each sentence is tokenized once per tokenizer and remembered: pre-training masks the same sentences again and
    again, and the tokenizer would otherwise run inside every step."""
    try:
        seen = _ENCODED.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memory
        seen = {}
    if (text, max_len) not in seen:
        enc = tokenizer(text, truncation=True, max_length=max_len, return_offsets_mapping=True)
        special = set(tokenizer.all_special_ids)
        seen[text, max_len] = (tuple(enc["input_ids"]),
                               [None if i in special else tuple(o) for i, o in zip(enc["input_ids"],
                                                                                   enc["offset_mapping"])])
    ids, offsets = seen[text, max_len]
    return list(ids), offsets  # a fresh list: the maskers write [MASK] into it


def mask_salient_span(text: str, spans: list[Span], tokenizer, rng: random.Random, max_len: int = 64):
    """Mask every wordpiece of one salient span chosen at random; None if no span survives truncation."""
    ids, offsets = _encode(text, tokenizer, max_len)
    candidates = []
    for s in spans:
        positions = [i for i, o in enumerate(offsets) if o and o[0] < s.end and s.start < o[1]]
        last = max((o[1] for o in offsets if o), default=0)
        if positions and s.end <= last:  # wholly inside the (possibly truncated) input
            candidates.append((s, positions))
    if not candidates:
        return None
    span, positions = rng.choice(candidates)
    targets = [ids[i] for i in positions]
    for i in positions:
        ids[i] = tokenizer.mask_token_id
    return MaskedExample(ids, positions, targets, text, "salient", (span.start, span.end))


def _replace(ids: list, positions: list, tokenizer, rng: random.Random, groups: list[list[int]]) -> None:
    """BERT's 80/10/10 rule, per group of positions: [MASK], a random wordpiece, or unchanged."""
    special = set(tokenizer.all_special_ids)
    for group in groups:
        u = rng.random()
        for i in group:
            if u < 0.8:
                ids[i] = tokenizer.mask_token_id
            elif u < 0.9:
                while True:
                    r = rng.randrange(len(tokenizer))
                    if r not in special:
                        break
                ids[i] = r


def mask_random_tokens(text: str, tokenizer, rng: random.Random, max_len: int = 64, mask_prob: float = 0.15):
    """BERT-style: `mask_prob` of the wordpieces (at least one), each [MASK] 80% / random 10% / kept 10%."""
    ids, offsets = _encode(text, tokenizer, max_len)
    real = [i for i, o in enumerate(offsets) if o]
    if not real:
        return None
    positions = sorted(rng.sample(real, max(1, round(mask_prob * len(real)))))
    targets = [ids[i] for i in positions]
    _replace(ids, positions, tokenizer, rng, [[i] for i in positions])
    return MaskedExample(ids, positions, targets, text, "random-token")


def mask_random_spans(text: str, tokenizer, rng: random.Random, max_len: int = 64, mask_prob: float = 0.15,
                      geometric_p: float = 0.2, max_words: int = 10):
    """SpanBERT-style: whole-word spans of Geometric(p) length (<= max_words) until `mask_prob` of wordpieces."""
    ids, offsets = _encode(text, tokenizer, max_len)
    words: list[list[int]] = []  # wordpiece positions of each whitespace-separated word
    for i, o in enumerate(offsets):
        if not o:
            continue
        if words and offsets[words[-1][-1]][1] == o[0] and not text[o[0]:o[0] + 1].isspace():
            words[-1].append(i)  # continues the previous word (a ##piece or punctuation glued to it)
        else:
            words.append([i])
    if not words:
        return None
    n_real = sum(len(w) for w in words)
    budget = max(1, round(mask_prob * n_real))
    masked_words: set[int] = set()
    groups, n_masked, tries = [], 0, 0
    while n_masked < budget and tries < 100:
        tries += 1
        length = 1
        while length < max_words and rng.random() > geometric_p:
            length += 1
        start = rng.randrange(len(words))
        chosen = [w for w in range(start, min(start + length, len(words))) if w not in masked_words]
        while len(chosen) > 1 and n_masked + sum(len(words[w]) for w in chosen) > budget:
            chosen.pop()  # shorten the span to fit the budget
        if not chosen or (n_masked and n_masked + len(words[chosen[0]]) > budget):
            continue
        masked_words.update(chosen)
        group = [i for w in chosen for i in words[w]]
        groups.append(group)
        n_masked += len(group)
    positions = sorted(i for g in groups for i in g)
    targets = [ids[i] for i in positions]
    _replace(ids, positions, tokenizer, rng, groups)
    return MaskedExample(ids, positions, targets, text, "random-span")


def mask(text: str, spans: list[Span] | None, tokenizer, cfg, rng: random.Random,
         strategy: str | None = None) -> MaskedExample | None:
    """Mask one sentence x with `strategy` (default: the run's `cfg.masking`); None if nothing can be masked."""
    strategy = strategy or cfg.masking
    if strategy == "salient":
        if spans is None:
            raise ValueError("salient masking needs spans: tag the text first (get_tagger)")
        return mask_salient_span(text, spans, tokenizer, rng, cfg.query_len)
    if strategy == "random-token":
        return mask_random_tokens(text, tokenizer, rng, cfg.query_len, cfg.mask_prob)
    if strategy == "random-span":
        return mask_random_spans(text, tokenizer, rng, cfg.query_len, cfg.mask_prob, cfg.span_geometric_p,
                                 cfg.span_max_words)
    raise ValueError(f"unknown masking strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def sentence_spans(block, tagger=regex_tagger) -> list[tuple[str, list[Span], list]]:
    """(sentence text, its salient spans re-based to the sentence, fact ids) for each sentence of a block."""
    spans = block.spans if block.spans is not None else tagger(block.text)
    out = []
    for s, e, facts in block.sentences:
        inside = [Span(sp.start - s, sp.end - s, sp.label, sp.entity, list(sp.facts))
                  for sp in spans if s <= sp.start and sp.end <= e]
        out.append((block.text[s:e], inside, facts))
    return out
