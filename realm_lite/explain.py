"""What REALM did for one query: every quantity of the paper for the top k blocks z (paper 2.2, 2.3, 3.1). Notebook 08.

For a masked sentence x (typed, or held out from pre-training) and a loaded REALM (realm_lite.export):

    f(x, z)    = Embed_input(x)^T Embed_doc(z)                  relevance, for ∅ and the top k-1 blocks
    p(z | x)   = softmax_z f(x, z)                              the retriever's distribution, ∅ included
    p(y | z, x)                                                 the knowledge-augmented encoder, per block
    RU(z)      = log p(y | z, x) - log p(y | ∅, x)              how much z helps over no document
    r(z)       = p(z | y, x) - p(z | x)                         the masked-LM gradient on f(x, z): up (> 0) or down
    y_hat      = argmax_y p(y | x)                              the marginal prediction (realm.predict_spans)

For a question and a fine-tuned QA system (realm_lite.qa), the blocks read with f(x, z), p(z|x), the best span of
each block with p(s|z,x), and the system's answer. `edit_fact` changes a fact of the synthetic world and re-embeds
only the blocks that changed (realm_lite.update), so a query can be asked again against the new corpus.

A typed sentence marks what to predict either as `[MASK]` (y unknown: RU and r(z) are then those of the
prediction, as if it were the truth; one `[MASK]` stands for a span of 1 to `MAX_FILL` wordpieces, and the length
whose prediction has the highest log p(y_hat|x) wins: on 120 held-out sentences of world-cpu typed with one [MASK]
it recovers the answer 23 times, against 8 for the best mean per wordpiece and 36 when told the true length) or
as `[the answer]` in brackets (y known, masked wordpiece by wordpiece). With `exclude_trivial`, the blocks that contain the sentence itself are never retrieved, as in
pre-training (a held-out sentence: its source block).

Placement: beside the QA layer (it calls models, retrieval, QA and the update); the explorer and `make demo` use it.
"""
from __future__ import annotations

import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from realm_lite.corpus import Span
from realm_lite.marginal import relevance_gradient, sequence_log_prob
from realm_lite.masking import MaskedExample, mask_salient_span
from realm_lite.qa_eval import contains_answer, normalize_answer
from realm_lite.realm import BlockInputs, Query, candidate_scores, embed_queries, predict_spans, read

MAX_FILL = 5  # one typed [MASK]: spans of 1..MAX_FILL wordpieces are tried
_BRACKET = re.compile(r"\[([^\[\]]+)\]")


@dataclass
class Candidate:
    """One candidate z of a query: ∅ (block -1) or a retrieved block, with the paper's quantities for it."""

    block: int  # row in the corpus; -1 is the null document ∅
    title: str
    text: str
    f: float  # f(x, z)
    p_z: float  # p(z | x)
    p_y: float | None = None  # p(y | z, x) of the target (masked) or of the block's best span (question)
    ru: float | None = None  # RU(z) = log p(y|z,x) - log p(y|∅,x)
    r: float | None = None  # r(z) = p(z|y,x) - p(z|x): > 0 the masked-LM loss pushes f(x, z) up
    prediction: str = ""  # argmax_y p(y|z,x) (masked) or the best span of z (question)
    gold: bool = False  # a gold block of the query (states the masked fact / contains an answer)
    marks: list = field(default_factory=list)  # [(start, end, kind)] in `text`: kind "salient", "prediction"


@dataclass
class Explanation:
    """A query, the model's answer and its candidates, best p(z|x) first."""

    kind: str  # "masked" or "question"
    query: str  # x as the model saw it (masks shown as ___)
    prediction: str
    target: str | None  # y when known
    correct: bool | None
    candidates: list
    seconds: float
    excluded: list = field(default_factory=list)  # rows kept out as trivial retrievals
    note: str = ""


# ---- masked sentences ----------------------------------------------------------------------------------
def parse_masked(text: str, tokenizer, max_len: int) -> list[MaskedExample]:
    """A typed sentence as masked x: `[answer]` in brackets (one example, targets known) or `[MASK]` (one example per
    fill length when a single [MASK] is typed, targets unknown: empty). A sentence with neither is an error."""
    mask = tokenizer.mask_token
    spans = [m for m in _BRACKET.finditer(text) if f"[{m.group(1)}]" != mask]
    if spans and mask in text:
        raise ValueError(f"{text!r}: mark what to predict either with {mask} or with [brackets], not both")
    if len(spans) > 1:
        raise ValueError(f"{text!r}: bracket one span to predict, not {len(spans)}")
    if spans:
        m = spans[0]
        clean = text[:m.start()] + m.group(1) + text[m.end():]
        ex = mask_salient_span(clean, [Span(m.start(), m.start() + len(m.group(1)), "TYPED")], tokenizer,
                               random.Random(0), max_len)
        if ex is None:
            raise ValueError(f"{text!r}: the bracketed span lies past the first {max_len} wordpieces")
        return [ex]
    runs = re.findall(rf"(?:{re.escape(mask)}\s*)+", text)
    if not runs:
        raise ValueError(f"{text!r}: no {mask} and no [bracketed] span: mark the words to predict, e.g. "
                         f"'Paris is the capital of {mask}.' or 'Paris is the capital of [France].'")
    if len(runs) > 1:
        raise ValueError(f"{text!r}: one run of {mask} to fill, not {len(runs)}")
    fills = [1] if text.count(mask) > 1 else range(1, MAX_FILL + 1)  # several typed: exactly that many
    out = []
    for n in fills:
        typed = text if text.count(mask) > 1 else text.replace(mask, " ".join([mask] * n))
        ids = tokenizer(typed, truncation=True, max_length=max_len)["input_ids"]
        pos = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
        if not pos:
            raise ValueError(f"{text!r}: the {mask} lies past the first {max_len} wordpieces")
        out.append(MaskedExample(list(ids), pos, [], text, "typed"))
    return out


def trivial_blocks(blocks, text: str) -> set:
    """Rows of the blocks that contain the sentence itself (the `[MASK]` run or `[brackets]` filled by anything):
    retrieving them would be trivial retrieval."""
    parts = [p.strip() for p in re.split(r"\[[^\[\]]*\](?:\s*\[MASK\])*", text)]
    parts = [p for p in parts if len(p) >= 8]  # a fragment too short to identify a sentence is left out
    if not parts:
        return set()
    return {i for i, b in enumerate(blocks) if all(p in b.text for p in parts)}


@contextmanager
def _eval_mode(module):
    """The module in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def explain_masked(pre, x, k: int | None = None, exclude_trivial: bool = True) -> Explanation:
    """f(x,z), p(z|x), p(y|z,x), RU(z), r(z) and the marginal prediction for a masked sentence `x`: a Query
    (held out: its source block is the trivial one) or typed text (see parse_masked). `pre` is a Pretrained."""
    with torch.no_grad(), _eval_mode(pre.model):
        return _explain_masked(pre, x, k, exclude_trivial)


def _explain_masked(pre, x, k, exclude_trivial) -> Explanation:
    t0 = time.time()
    k = k or pre.cfg.k
    if not 2 <= k <= len(pre.blocks) + 1:
        raise ValueError(f"k={k}: between 2 (∅ and one block) and {len(pre.blocks) + 1} (∅ and every block)")
    device = next(pre.model.parameters()).device
    if isinstance(x, Query):
        queries, known, excluded = [x], True, {x.source} if exclude_trivial else set()
    else:
        examples = parse_masked(str(x), pre.tokenizer, pre.cfg.query_len)
        known = bool(examples[0].target_ids)
        excluded = trivial_blocks(pre.blocks, str(x)) if exclude_trivial else set()
        queries = [Query(ex, -1) for ex in examples]
    if len(pre.blocks) - len(excluded) < k - 1:
        raise ValueError(f"k={k}: only {len(pre.blocks) - len(excluded)} blocks can be retrieved")
    q = embed_queries(pre.model, queries, pre.inputs.pad, device)  # (B, D)
    _, top = pre.index.search(q, k - 1, exclude=[set(excluded)] * len(queries))  # (B, K-1)
    top = top.cpu()
    f = candidate_scores(pre.model, q, top, pre.inputs, device)  # (B, K): ∅ first
    candidates = [[-1] + row for row in top.tolist()]
    if not known:  # placeholder targets of the right length: predict_spans reads only which positions are valid
        for qq in queries:
            qq.example.target_ids = [pre.tokenizer.mask_token_id] * len(qq.example.masked_positions)
    tok_logp, tgt = read(pre.model, queries, candidates, pre.inputs, device)  # (B, K, M, V), (B, K, M)
    log_p_z = F.log_softmax(f, dim=-1)  # (B, K)
    pred = predict_spans(tok_logp, log_p_z, tgt)  # (B, M)
    valid = tgt[:, 0] != -100  # (B, M)
    if not known:  # y := y_hat; of several fill lengths keep the y_hat with the highest log p(y_hat|x)
        tgt = torch.where(valid, pred, torch.full_like(pred, -100))[:, None].expand_as(tgt)  # (B, K, M)
    b, kk = tok_logp.shape[:2]
    log_p_y_zx = sequence_log_prob(tok_logp.flatten(0, 1), tgt.flatten(0, 1)).view(b, kk)  # (B, K)
    log_p_y = torch.logsumexp(log_p_z + log_p_y_zx, dim=-1)  # (B,)
    i = int(log_p_y.argmax()) if not known else 0
    ex, y_hat = queries[i].example, pred[i][valid[i]].tolist()
    r = relevance_gradient(f[i:i + 1], log_p_y_zx[i:i + 1])[0]  # (K,)
    prediction = pre.tokenizer.decode(y_hat)
    target = pre.tokenizer.decode(ex.target_ids) if known else None
    rows = []
    for z, j in enumerate(candidates[i]):
        blk = pre.blocks[j] if j >= 0 else None
        y_z = pre.tokenizer.decode(tok_logp[i, z][valid[i]].argmax(-1).tolist())
        rows.append(Candidate(j, blk.title if blk else "∅ (null document)", blk.text if blk else "",
                              f[i, z].item(), log_p_z[i, z].exp().item(), log_p_y_zx[i, z].exp().item(),
                              (log_p_y_zx[i, z] - log_p_y_zx[i, 0]).item(), r[z].item(), y_z,
                              bool(isinstance(x, Query) and x.gold and j in x.gold),
                              _marks(blk, prediction) if blk else []))
    rows.sort(key=lambda c: -c.p_z)
    return Explanation("masked", _shown(ex, pre.tokenizer), prediction, target,
                       normalize_answer(prediction) == normalize_answer(target) if known else None,
                       rows, time.time() - t0, sorted(excluded),
                       "" if known else "y unknown: p(y|z,x), RU and r(z) are those of the prediction")


def _shown(ex: MaskedExample, tokenizer) -> str:
    """x as text, each run of masks one ___ (typed text keeps its own words)."""
    if ex.strategy == "typed":
        m = re.escape(tokenizer.mask_token)
        return re.sub(rf"{m}(?:\s*{m})*", "___", ex.text)
    a, b = ex.span
    return ex.text[:a] + "___" + ex.text[b:]


def _marks(block, answer: str) -> list:
    """Highlights in a block's text: its salient spans, and where `answer` occurs (case-insensitive)."""
    marks = [(s.start, s.end, "salient") for s in (block.spans or [])]
    if answer.strip():
        marks += [(m.start(), m.end(), "prediction") for m in re.finditer(re.escape(answer.strip()), block.text,
                                                                           re.IGNORECASE)]
    return marks


# ---- questions -----------------------------------------------------------------------------------------
@torch.no_grad()
def explain_question(qa, question: str, answers: list[str] | None = None, k: int | None = None) -> Explanation:
    """The blocks a QA system reads for `question` (f(x,z), p(z|x), each block's best span s and p(s|z,x)) and its
    answer argmax_{z,s} p(z|x) p(s|z,x); `answers`, when known, mark the correct prediction and the gold blocks."""
    from realm_lite.qa import predict, read_open, span_at
    from realm_lite.qa_data import QAExample

    t0 = time.time()
    if not question.strip():
        raise ValueError("an empty question")
    if qa.name == "closed-book":  # nothing is retrieved: the answer comes from the weights alone
        row = predict(qa, [QAExample("typed", question, answers or [""])])[0]
        return Explanation("question", question, row["prediction"], (answers or [None])[0],
                           row["correct"] if answers else None, [], time.time() - t0,
                           note="closed-book: no retrieval")
    with _eval_mode(qa.model):
        rd = read_open(qa, [question], k=k)
    n_pos = rd["log_p_s"].shape[-1]
    zi, pos = divmod(int(rd["total"][0].flatten().argmax()), n_pos)
    prediction = span_at(qa, rd, 0, zi, pos)
    rows = []
    for z in range(rd["k"]):
        j = rd["top"][0, z].item()
        best = int(rd["log_p_s"][0, z].argmax())
        span = span_at(qa, rd, 0, z, best)
        blk = qa.blocks[j]
        rows.append(Candidate(j, blk.title, blk.text, rd["scores"][0, z].item() if rd["scores"] is not None else 0.0,
                              rd["log_p_z"][0, z].exp().item(), rd["log_p_s"][0, z, best].exp().item(),
                              prediction=span, gold=bool(answers and contains_answer(blk.text, answers)),
                              marks=_marks(blk, span)))
    rows.sort(key=lambda c: -c.p_z)
    correct = normalize_answer(prediction) in {normalize_answer(a) for a in answers} if answers else None
    note = "" if rd["scores"] is not None else "BM25: p(z|x) uniform over the read blocks"
    return Explanation("question", question, prediction, answers[0] if answers else None, correct, rows,
                       time.time() - t0, note=note)


# ---- editing a fact ------------------------------------------------------------------------------------
def find_entity(world, name_or_id: str):
    """A world entity by id or by name (case-insensitive); an error naming close names when there is none."""
    if name_or_id in world.entities:
        return world.entities[name_or_id]
    want = name_or_id.strip().lower()
    hits = [e for e in world.entities.values() if e.name.lower() == want]
    if not hits:
        near = sorted(e.name for e in world.entities.values() if want[:4] and e.name.lower().startswith(want[:4]))
        hint = f" (names starting alike: {', '.join(near[:5])})" if near else ""
        raise KeyError(f"no entity named {name_or_id!r} in this world{hint}")
    return hits[0]


def edit_fact(model, subject: str, relation: str, value: str) -> dict:
    """Set `relation` of `subject` to `value` (names or ids; a date or year as text) in the world of `model` (a
    Pretrained or a QASystem), re-render the documents that state it and re-embed only their blocks."""
    from realm_lite.qa import QASystem, build_bm25
    from realm_lite.reader import ReaderInputs
    from realm_lite.update import reblock, reindex
    from realm_lite.world import RELATIONS

    world = model.world
    if world is None:
        raise ValueError("editing a fact needs the synthetic world (a model pre-trained with --corpus world)")
    if relation not in RELATIONS:
        raise KeyError(f"unknown relation {relation!r}; valid: {', '.join(RELATIONS)}")
    t0 = time.time()
    subj = find_entity(world, subject)
    value_kind = RELATIONS[relation][1]
    value_id = value.strip() if value_kind in ("date", "year") else find_entity(world, value).id
    fact = world.fact_of(subj.id, relation)
    name = (lambda v: world.entities[v].name if v in world.entities else v)
    old = name(fact.value)
    changed = set(world.set_fact(subj.id, relation, value_id))
    blocks, keep = reblock(world, model.blocks, changed, model.tokenizer, model.cfg.block_len)
    device = next(model.model.parameters()).device
    if isinstance(model, QASystem):
        if model.index is not None:
            model.index = reindex(model.index, blocks, keep, model.model.embed_doc, model.tokenizer, model.cfg, device)
        model.blocks = blocks
        model.inputs = ReaderInputs(blocks, model.tokenizer, model.cfg.block_len, model.cfg.query_len,
                                    model.cfg.qa_max_span)
        if model.bm25 is not None:
            model.bm25 = build_bm25(blocks)
    else:
        model.index = reindex(model.index, blocks, keep, model.model.retriever.embed_doc, model.tokenizer,
                              model.cfg, device)
        model.blocks = blocks
        model.inputs = BlockInputs(blocks, model.tokenizer, model.cfg.block_len)
        model._pool = None  # held-out queries name blocks by row: drawn again from the new corpus
    return {"subject": subj.name, "relation": relation, "old": old, "new": name(value_id),
            "documents": sorted(changed), "blocks_reembedded": keep.count(None), "blocks": len(blocks),
            "seconds": round(time.time() - t0, 2)}


# ---- text ----------------------------------------------------------------------------------------------
def format_explanation(e: Explanation, top: int = 3, width: int = 100) -> str:
    """An Explanation as plain text (`make demo`, the command line): the query, the answer and the top blocks."""
    lines = [f"x: {e.query}", f"   prediction: {e.prediction!r}" + (f"   (y = {e.target!r}, "
             f"{'correct' if e.correct else 'wrong'})" if e.target is not None else "")]
    if e.kind == "masked":
        lines.append(f"   {'p(z|x)':>7} {'f(x,z)':>7} {'p(y|z,x)':>9} {'RU(z)':>7} {'r(z)':>6}  block")
        for c in e.candidates[:top]:
            lines.append(f"   {c.p_z:7.3f} {c.f:7.2f} {c.p_y:9.3f} {c.ru:7.2f} {c.r:+6.2f}  "
                         f"{'*' if c.gold else ' '}{_snippet(c, width - 45)}")
    else:
        lines.append(f"   {'p(z|x)':>7} {'f(x,z)':>7} {'p(s|z,x)':>9}  best span | block")
        for c in e.candidates[:top]:
            lines.append(f"   {c.p_z:7.3f} {c.f:7.2f} {c.p_y:9.3f}  {c.prediction!r} | "
                         f"{'*' if c.gold else ' '}{_snippet(c, width - 50)}")
    return "\n".join(lines)


def _snippet(c: Candidate, width: int) -> str:
    """The block's title and the part of its text around the first predicted span."""
    if c.block < 0:
        return c.title
    at = next((a for a, _, kind in c.marks if kind == "prediction"), 0)
    start = max(0, at - width // 3)
    text = c.text[start:start + width].replace("\n", " ")
    return f"{c.title}: {'…' if start else ''}{text}{'…' if start + width < len(c.text) else ''}"
