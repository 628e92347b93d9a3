"""Masked sentences x for REALM pre-training and their gold blocks (paper 3.4 and 4.x). Notebooks 04 and 06.

Pre-training draws a sentence from the corpus and masks it (salient span by default). Evaluation uses
sentences that state a *held-out* fact of the synthetic world: pre-training never masks them, so the
model can only fill the span in by retrieving the *other* document that states the fact (the gold
block); the source block is excluded from retrieval. Corpora without fact annotations (SQuAD, text)
hold out a seeded fraction of blocks instead and have no gold blocks (recall is then not reported).
"""
from __future__ import annotations

import random

from realm_lite.ict import split_heldout
from realm_lite.masking import get_tagger, mask, mask_salient_span, sentence_spans
from realm_lite.realm import Query


class QueryPool:
    """Training sentences (no held-out fact) and evaluation sentences (a held-out fact masked, with gold blocks)."""

    def __init__(self, blocks, tokenizer, cfg, world=None, tagger=None):
        if not blocks:
            raise ValueError("the corpus has no blocks: nothing to pre-train on")
        self.tokenizer, self.cfg, self.world = tokenizer, cfg, world
        tagger = tagger or get_tagger()[1]
        heldout_facts = {f.id for f in world.facts.values() if f.split == "heldout"} if world is not None else set()
        heldout_blocks = set() if world is not None else set(split_heldout(blocks, cfg.heldout_fraction, cfg.seed)[1])
        by_fact: dict[str, set] = {}  # fact id -> blocks with a sentence stating it
        for bi, b in enumerate(blocks):
            for _, _, facts in b.sentences:
                for f in facts:
                    by_fact.setdefault(f, set()).add(bi)
        self.by_fact = by_fact
        self.train: list[tuple] = []  # (block index, sentence, spans)
        self.eval: list[tuple] = []  # (block index, sentence, span, gold blocks or None)
        for bi, b in enumerate(blocks):
            for text, spans, facts in sentence_spans(b, tagger):
                if bi in heldout_blocks:
                    self.eval += [(bi, text, s, None) for s in spans]
                elif set(facts) & heldout_facts:
                    for s in spans:
                        held = set(s.facts) & heldout_facts
                        gold = frozenset(g for f in held for g in by_fact[f]) - {bi}
                        if gold:
                            self.eval.append((bi, text, s, gold))
                elif spans or cfg.masking != "salient":
                    self.train.append((bi, text, spans))
        if not self.train:
            raise ValueError("no sentence to pre-train on: the corpus has no sentence with a salient span "
                             "(try --masking random-span)")

    def sample(self, rng: random.Random, n: int) -> list[Query]:
        """n masked training sentences drawn with `rng`, masked with the run's strategy; an error, not an endless
        loop, when (almost) no sentence can be masked."""
        out, draws, limit = [], 0, 1000 + 100 * n
        while len(out) < n:
            if draws == limit:
                raise ValueError(f"masked only {len(out)} of {n} sentences in {limit} draws from {len(self.train)} "
                                 f"training sentences: with masking={self.cfg.masking!r} and query_len="
                                 f"{self.cfg.query_len} (almost) none can be masked (a salient span past query_len "
                                 f"wordpieces is cut off)")
            draws += 1
            bi, text, spans = self.train[rng.randrange(len(self.train))]
            ex = mask(text, spans, self.tokenizer, self.cfg, rng)
            if ex is not None:
                out.append(Query(ex, bi, self._gold(ex, spans, bi)))
        return out

    def _gold(self, ex, spans, source: int) -> frozenset | None:
        """Blocks other than the source that state a fact of the masked salient span (world corpora only)."""
        if self.world is None or ex.span is None:
            return None
        facts = next((s.facts for s in spans if (s.start, s.end) == ex.span), [])
        gold = frozenset(g for f in facts for g in self.by_fact.get(f, ())) - {source}
        return gold or None

    def evaluation(self, n: int = 0, seed: int = 1234) -> list[Query]:
        """A fixed set of held-out queries (all of them when n is 0), salient span masked."""
        items = list(self.eval)
        if n and n < len(items):
            items = random.Random(seed).sample(items, n)
        out = []
        rng = random.Random(seed)
        for bi, text, span, gold in items:
            ex = mask_salient_span(text, [span], self.tokenizer, rng, self.cfg.query_len)
            if ex is not None:
                out.append(Query(ex, bi, gold))
        return out
