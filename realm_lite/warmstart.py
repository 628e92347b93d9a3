"""Warm starts that are not in the paper, for small models trained from scratch. Notebook 06.

REALM starts from BERT and an ICT-trained retriever. At laptop scale, from scratch, both fall short
(docs/small-scale-recipe.md):
  - ICT teaches a tower to find a sentence's *own* block, but REALM's gold block is another entity's
    document that names the sentence's entities once. The salient co-occurrence warm start trains
    the retriever on that: x = a masked sentence, positive z = a random other block that contains one
    of x's unmasked salient spans (an entity or a date), in-batch softmax. It is a lexical teacher,
    close to distilling BM25, and uses no fact labels: only the salient spans masking uses anyway.
  - A reader trained from scratch does not discover copying from z inside REALM. The reader warm-up
    trains p(y|z,x) with z = x's own block with x removed (no retriever, no labels), so that copying
    a span seen elsewhere in z is learned before REALM starts.
"""
from __future__ import annotations

import random

import torch

from realm_lite.batching import by_length, join
from realm_lite.distributed import Dist, data_parallel, global_row, my_share
from realm_lite.ict import in_batch_loss
from realm_lite.marginal import pad_targets, sequence_log_prob
from realm_lite.realm import BlockInputs, Query
from realm_lite.training import Checkpoints, Loop, scalars, warm_schedule


READER_GROUP = 8  # rows per length group in the reader warm-up (batching.by_length)


class SalientIndex:
    """For each salient string (lower-cased), the blocks whose annotated or tagged spans contain it."""

    def __init__(self, blocks, tagger):
        self.blocks_with: dict[str, set] = {}
        for bi, b in enumerate(blocks):
            for s in (b.spans if b.spans is not None else tagger(b.text)):
                self.blocks_with.setdefault(b.text[s.start:s.end].lower(), set()).add(bi)

    def positives(self, query: Query, spans) -> list[int]:
        """Other blocks sharing an unmasked salient span with x."""
        out = set()
        for s in spans:
            if query.example.span is None or (s.start, s.end) != tuple(query.example.span):
                out |= self.blocks_with.get(query.example.text[s.start:s.end].lower(), set())
        return sorted(out - {query.source})

    def evidence(self, query: Query, spans) -> list[int]:
        """Other blocks holding the masked span y *and* another salient span of x: found by string match, no labels."""
        y = query.example.text[query.example.span[0]:query.example.span[1]].lower()
        return sorted(set(self.positives(query, spans)) & self.blocks_with.get(y, set()))


def train_salient(model, pool, blocks, inputs: BlockInputs, cfg, device, log=print, steps: int | None = None,
                  seed: int | None = None, checkpoints: Checkpoints | None = None, dist: Dist | None = None) -> list[dict]:
    """cfg.ict_steps (or `steps`) steps of the salient co-occurrence warm start (batch cfg.ict_batch, lr cfg.ict_lr).

    `seed` (default cfg.seed) seeds the sampling: a different one continues training on fresh batches.
    With `checkpoints`, log.jsonl rows and checkpoints (see realm_lite.training). With `dist` of N ranks, each
    takes its share of every global batch (realm_lite.distributed), its negatives every rank's positives."""
    from realm_lite.masking import get_tagger

    dist = dist or Dist(device=torch.device(device))
    steps = cfg.ict_steps if steps is None else steps
    index = SalientIndex(blocks, get_tagger()[1])
    spans_of = {(bi, text): spans for bi, text, spans in pool.train}
    rng = random.Random(cfg.seed if seed is None else seed)
    model.retriever.train()
    loop = Loop("salient", steps, model.retriever.parameters(), cfg, lr=cfg.ict_lr, clip=1.0, rng=rng, device=device,
                warmup=warm_schedule(cfg, steps), log=log, desc="salient warm start", checkpoints=checkpoints)

    def salient_loss(retriever, queries, positives):
        x = retriever.embed_input.embed_rows([q.example.input_ids for q in queries], inputs.pad, device)  # (B, D)
        z = retriever.embed_doc.embed_rows(inputs.doc_rows(positives), inputs.pad, device)  # (B, D)
        return in_batch_loss(retriever, x, z, dist)

    step_loss = data_parallel(model.retriever, salient_loss, dist)
    for _ in loop:
        queries, positives, used, tries = [], [], set(), 0
        while len(queries) < cfg.ict_batch and tries < 50 * cfg.ict_batch:
            tries += 1
            (q,) = pool.sample(rng, 1)
            cands = [c for c in index.positives(q, spans_of[(q.source, q.example.text)]) if c not in used]
            if cands:
                z = rng.choice(cands)
                queries.append(q)
                positives.append(z)
                used |= {z, q.source}  # distinct positives: no false negatives in the batch
        if len(queries) < 2:
            raise ValueError("salient warm start: too few sentences share a salient span with another block; "
                             "use warm_start=ict")
        mine, share = my_share(list(zip(queries, positives)), dist)  # the same draws on every rank
        out = step_loss([q for q, _ in mine], [z for _, z in mine])
        loop.opt.zero_grad(set_to_none=True)
        (out["loss"] * (dist.world * share)).backward()  # DDP averages: the global batch's mean gradient
        loop.step()
        loop.record(**global_row(scalars(out), share, dist))
    return loop.history


def train_reader_warmup(model, pool, blocks, tokenizer, cfg, device, log=print,
                        checkpoints: Checkpoints | None = None, dist: Dist | None = None) -> list[dict]:
    """cfg.reader_warmup_steps steps of -log p(y|z,x), lr cfg.reader_warmup_lr (the masked-LM head's: cfg.reader_head_lr
    when set), with z chosen by cfg.reader_warmup_z:
    "own" = x's own block minus x; "salient" = another block holding both y and another salient span of x;
    "mixed" = half of each batch of each kind (own blocks teach copying the block's subject, evidence blocks
    copying a related span, which is what REALM's gold blocks ask for); "own-then-mixed" = the first
    cfg.reader_warmup_own_frac of the steps "own", the rest "mixed" (copying is discovered on the easy own-block
    copies first); "none" = the null document ∅ for every x: plain masked-LM training without any block (the
    BERT-like baseline encoder of bench/ablation.py). With `checkpoints`, log.jsonl rows and checkpoints (see
    realm_lite.training). With `dist` of N ranks, each takes its share of every global batch (realm_lite.distributed)."""
    dist = dist or Dist(device=torch.device(device))
    rng = random.Random(cfg.seed + 7)
    evidence = _evidence_sampler(pool, blocks, rng) if cfg.reader_warmup_z not in ("own", "none") else None
    half = cfg.batch_size // 2
    n_own_steps = int(cfg.reader_warmup_own_frac * cfg.reader_warmup_steps + 1e-9)  # floor, robust to 2/3 * 6000

    def own_only(step):
        return cfg.batch_size

    def own(n):  # n training sentences, each with its own block minus the sentence
        qs = pool.sample(rng, n)
        return qs, [blocks[q.source].text.replace(q.example.text, " ", 1) for q in qs]
    n_own_of = {"own": own_only, "salient": lambda step: 0, "mixed": lambda step: half,
                "own-then-mixed": lambda step: cfg.batch_size if step <= n_own_steps else half,
                "none": own_only}[cfg.reader_warmup_z]
    seen: dict[str, list[int]] = {}

    def wordpieces(texts: list[str]) -> list[list[int]]:  # each z's body tokenized once, then remembered
        new = [t for t in dict.fromkeys(texts) if t not in seen]
        if new:
            seen.update(zip(new, tokenizer(new, add_special_tokens=False, truncation=True,
                                           max_length=cfg.block_len)["input_ids"]))
        return [seen[t] for t in texts]

    model.reader.train()
    params = model.reader.parameters()  # one group; with reader_head_lr >= 0, two: the body and the head (transform, bias)
    if cfg.reader_head_lr >= 0:
        named = list(model.reader.named_parameters())
        params = [{"params": [p for n, p in named if n.startswith("bert.")], "lr": cfg.reader_warmup_lr},
                  {"params": [p for n, p in named if not n.startswith("bert.")], "lr": cfg.reader_head_lr}]
    loop = Loop("reader_warmup", cfg.reader_warmup_steps, params, cfg, lr=cfg.reader_warmup_lr,
                weight_decay=cfg.weight_decay, clip=cfg.clip_norm, warmup=warm_schedule(cfg, cfg.reader_warmup_steps),
                rng=rng, device=device, log=log, desc="reader warm-up", checkpoints=checkpoints)

    def reader_loss(reader, xs, zs, masked, targets):  # -log p(y | z, x) over this rank's share
        pos, tgt = pad_targets(masked, targets, device=device)

        def rows(idx):  # join_BERT(x, z) for rows idx, padded to their own longest
            enc = join([xs[i] for i in idx], [zs[i] for i in idx], tokenizer.sep_token_id, tokenizer.pad_token_id,
                       device)
            return reader.token_log_probs(**enc, masked_positions=pos[idx])  # (n, M, V)

        logp = by_length([len(x) + len(z) for x, z in zip(xs, zs)], rows, READER_GROUP)  # (B, M, V)
        exact = ((logp.argmax(-1) == tgt) | (tgt == -100)).all(-1).float().mean()  # whole span right
        return {"loss": -sequence_log_prob(logp, tgt).mean(), "exact": exact}

    step_loss = data_parallel(model.reader, reader_loss, dist)
    for step in loop:
        n_own = n_own_of(step)
        queries, rest = own(n_own)
        if n_own < cfg.batch_size:
            try:
                more, texts = evidence(cfg.batch_size - n_own)
            except ValueError:
                if cfg.reader_warmup_z == "salient":
                    raise
                if n_own_of is not own_only:  # mixed on a corpus with too few evidence blocks: own blocks only
                    log("reader warm-up: too few evidence blocks in this corpus; using own blocks only")
                    n_own_of = own_only
                more, texts = own(cfg.batch_size - n_own)
            queries, rest = queries + more, rest + texts
        mine, share = my_share(list(zip(queries, rest)), dist)  # the same draws on every rank
        zs = [[] for _ in mine] if cfg.reader_warmup_z == "none" else wordpieces([z for _, z in mine])  # [] = ∅
        out = step_loss([q.example.input_ids for q, _ in mine], zs, [q.example.masked_positions for q, _ in mine],
                        [q.example.target_ids for q, _ in mine])
        loop.opt.zero_grad(set_to_none=True)
        (out["loss"] * (dist.world * share)).backward()  # DDP averages: the global batch's mean gradient
        loop.step()
        loop.record(**global_row(scalars(out), share, dist))
    return loop.history


def _evidence_sampler(pool, blocks, rng: random.Random):
    """For reader_warmup_z other than "own": a function n -> (n queries, the text of an evidence block for each)."""
    from realm_lite.masking import get_tagger

    index = SalientIndex(blocks, get_tagger()[1])
    spans_of = {(bi, text): spans for bi, text, spans in pool.train}

    def sample(n: int):
        queries, texts = [], []
        for _ in range(100 * n):
            if len(queries) == n:
                break
            (q,) = pool.sample(rng, 1)
            cands = index.evidence(q, spans_of[(q.source, q.example.text)]) if q.example.span is not None else []
            if cands:
                queries.append(q)
                texts.append(blocks[rng.choice(cands)].text)
        if len(queries) < 2:
            raise ValueError("reader warm-up: too few sentences whose masked span appears in another block "
                             "beside another of their salient spans; use reader_warmup_z=own")
        return queries, texts

    return sample
