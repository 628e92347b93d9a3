"""The open-QA reader p(y|z,x): answer spans of a retrieved block z (paper section 3.4, as in ORQA). Notebook 07.

    S(z, s)      = MLP([h_START(s); h_END(s)])                   over BERT(`[CLS] x [SEP] z [SEP]`)
    p(s | z, x)  = exp S(z, s) / sum_{s' in z} exp S(z, s')        spans of up to `max_span` wordpieces
    p(y | z, x)  = sum_{s in z : TEXT(s) = y} p(s | z, x)          every span whose text matches an answer
    p(y | x)     = sum_{z in top k} p(z | x) p(y | z, x)

Spans start and end on word boundaries (never inside a word's ##pieces, never on bare punctuation), so
TEXT(s) is a slice of the block's text, found through the fast tokenizer's character offsets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from realm_lite.batching import join
from realm_lite.qa_eval import contains_answer, span_matches

NEG = -1e4  # the score of an impossible span (finite, so bf16 and log-sum-exp stay well defined)
LEFT_OUT = -1e9  # log-probability of what a sum leaves out: finite, so log-sum-exp never back-propagates NaN


class SpanReader(nn.Module):
    """BERT over `[CLS] x [SEP] z [SEP]` and an MLP over the start and end states of every span: S(z, s)."""

    def __init__(self, bert, max_span: int = 10):
        super().__init__()
        h = bert.config.hidden_size
        d = min(h, 256)
        self.bert, self.max_span = bert, max_span
        # MLP([h_s; h_e]) = w^T relu(W_s h_s + W_e h_e + b): the first layer split over the two halves
        self.start, self.end, self.out = nn.Linear(h, d), nn.Linear(h, d, bias=False), nn.Linear(d, 1)

    def forward(self, input_ids, attention_mask, token_type_ids, span_ok) -> torch.Tensor:
        """S(z, s) for every span (start t, length o+1): (N, L) inputs, (N, L, S) validity -> (N, L, S) float32."""
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state  # (N, L, H)
        a, b = self.start(h), self.end(h)  # (N, L, d)
        ends = torch.stack([F.pad(b[:, o:], (0, 0, 0, o)) for o in range(self.max_span)], dim=2)  # (N, L, S, d)
        scores = self.out(torch.relu(a.unsqueeze(2) + ends)).squeeze(-1).float()  # (N, L, S)
        return scores.masked_fill(~span_ok, NEG)


@dataclass
class BlockText:
    """A block body's wordpieces with character offsets and word boundaries (for span texts)."""

    ids: list
    offsets: list
    word_start: list
    word_end: list
    valid: torch.Tensor  # (n, S): span (start t, length o+1) starts and ends on word boundaries inside the body


class ReaderInputs:
    """`[CLS] x [SEP] z [SEP]` rows, valid-span masks and answer-span masks, with block bodies tokenized once."""

    def __init__(self, blocks, tokenizer, block_len: int, query_len: int, max_span: int = 10):
        self.blocks, self.tok, self.block_len, self.query_len, self.max_span = blocks, tokenizer, block_len, query_len, max_span
        self._cache: dict[int, BlockText] = {}

    def body(self, j: int) -> BlockText:
        if j not in self._cache:
            enc = self.tok(self.blocks[j].text, add_special_tokens=False, truncation=True, max_length=self.block_len,
                           return_offsets_mapping=True)
            words, text = enc.word_ids(), self.blocks[j].text
            n = len(enc["input_ids"])
            # a span starts and ends on a word that is not bare punctuation ("Paris", not ". Paris"), and does
            # not end on an article ("Paris. The" normalizes to "paris" too, but is no answer)
            off = enc["offset_mapping"]
            first = list(range(n))  # first[t]: the first piece of t's word
            for t in range(1, n):
                if words[t] == words[t - 1]:
                    first[t] = first[t - 1]
            word = [text[off[first[t]][0]:off[t][1]] for t in range(n)]  # the word up to and including piece t
            ok = [any(c.isalnum() for c in w) for w in word]
            starts = [(t == 0 or words[t] != words[t - 1]) and ok[t] for t in range(n)]
            ends = [(t == n - 1 or words[t] != words[t + 1]) and ok[t] and word[t].lower() not in ("a", "an", "the")
                    for t in range(n)]
            valid = torch.zeros((n, self.max_span), dtype=torch.bool)
            for s in (t for t in range(n) if starts[t]):
                for e in range(s, min(s + self.max_span, n)):
                    valid[s, e - s] = ends[e]
            self._cache[j] = BlockText(enc["input_ids"], enc["offset_mapping"], starts, ends, valid)
        return self._cache[j]

    def span_text(self, j: int, start: int, end: int) -> str:
        """TEXT(s) of body wordpieces start..end (inclusive) of block j."""
        off = self.body(j).offsets
        return self.blocks[j].text[off[start][0]:off[end][1]]

    def answer_spans(self, j: int, answers, regex: bool) -> list[tuple[int, int]]:
        """Every word-aligned span of block j, up to max_span wordpieces, whose text is an answer."""
        if not contains_answer(self.blocks[j].text, answers, regex):
            return []
        bt, out = self.body(j), []
        for s in range(len(bt.ids)):
            if not bt.word_start[s]:
                continue
            for e in range(s, min(s + self.max_span, len(bt.ids))):
                if bt.word_end[e] and span_matches(self.span_text(j, s, e), answers, regex):
                    out.append((s, e))
        return out

    def batch(self, questions: list[str], candidates: list[list[int]], device, answers=None) -> dict:
        """Inputs for B questions x K blocks: (B*K, L) ids/masks, (B*K, L, S) span validity and, with
        `answers` [(answers, regex)] per question, (B*K, L, S) answer-span masks and the (B*K,) z offsets."""
        q_ids = self.tok(questions, truncation=True, max_length=self.query_len)["input_ids"]
        flat = [(b, j) for b, cands in enumerate(candidates) for j in cands]
        enc = join([q_ids[b] for b, _ in flat], [self.body(j).ids for _, j in flat], self.tok.sep_token_id,
                   self.tok.pad_token_id, device)
        offs = [len(q_ids[b]) for b, _ in flat]  # z starts after `[CLS] x [SEP]`
        n, width, s_max = len(flat), enc["input_ids"].shape[1], self.max_span
        ok = torch.zeros((n, width, s_max), dtype=torch.bool)
        hit = torch.zeros((n, width, s_max), dtype=torch.bool) if answers is not None else None
        for r, ((b, j), off) in enumerate(zip(flat, offs)):
            bt = self.body(j)
            ok[r, off:off + len(bt.ids)] = bt.valid
            if hit is not None:
                for s, e in self.answer_spans(j, *answers[b]):
                    hit[r, off + s, e - s] = True
        out = {**enc, "span_ok": ok.to(device), "z_offset": offs}
        if hit is not None:
            out["answer_spans"] = hit.to(device)
        return out


def span_log_probs(scores: torch.Tensor) -> torch.Tensor:
    """log p(s | z, x): each row's span scores normalized over its own spans: (N, L, S) -> (N, L*S)."""
    return F.log_softmax(scores.flatten(1), dim=-1)


def reader_log_likelihood(log_p_z: torch.Tensor, log_p_s: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """log p(y|x) = logsumexp_z [log p(z|x) + log sum_{s matches y} p(s|z,x)]: (B, K), (B, K, L*S), (B, K, L*S)
    -> (B,); about LEFT_OUT (-1e9) where no read block holds an answer span."""
    log_p_y_z = log_p_s.masked_fill(~hit, LEFT_OUT).logsumexp(-1)  # (B, K)
    return (log_p_z + log_p_y_z).logsumexp(-1)  # (B,)
