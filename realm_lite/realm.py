"""REALM: a retriever and a knowledge-augmented encoder trained through p(y|x) (paper 2.2, 3.1-3.3). Notebook 06.

    p(y | x) = sum_{z in top-k(x) + ∅} p(y | z, x) p(z | x)

One training step, as in the paper:
  1. x = a masked sentence; Embed_input(x) searches the (stale) MIPS index for the top k-1 blocks,
     never the block x came from (trivial retrieval);
  2. the null document ∅ joins them, so the k candidates are [∅, z_1 .. z_{k-1}];
  3. their scores f(x, z) are recomputed with the *live* Embed_doc, so gradients reach the document tower;
  4. the reader scores y under each candidate, and the loss is -log p(y|x).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from realm_lite.batching import by_length, encoder_inputs, join
from realm_lite.marginal import (KnowledgeAugmentedEncoder, marginal_gain, marginal_log_likelihood,
                                 pad_targets, sequence_log_prob, top_retrieval_utility)
from realm_lite.retriever import Retriever, build_bert
from realm_lite.tokenizer import resolve_checkpoint


@dataclass
class Query:
    """A masked sentence x with where it came from and, when the corpus knows, the blocks that hold its answer."""

    example: object  # realm_lite.masking.MaskedExample
    source: int  # index of the block x was taken from: never retrieved for x
    gold: frozenset | None = None  # indices of the other blocks that state the masked fact


class Realm(nn.Module):
    """The retriever p(z|x) and the knowledge-augmented encoder p(y|z,x), with block inputs cached."""

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.retriever = Retriever(cfg, vocab_size)
        reader_backbone = cfg.reader_backbone or cfg.backbone
        self.reader = KnowledgeAugmentedEncoder(build_bert(cfg, cfg.reader_layers, vocab_size, reader_backbone,
                                                           cfg.reader_backbone_layers))
        if reader_backbone:  # BERT's masked-LM head where the checkpoint has one (the paper's initialisation)
            self.reader.load_mlm_head(resolve_checkpoint(reader_backbone))


class BlockInputs:
    """Each block z tokenized once: `[CLS] title [SEP] body [SEP]` for Embed_doc, body wordpieces for the reader."""

    def __init__(self, blocks, tokenizer, block_len: int):
        self.pad, self.sep, self.block_len = tokenizer.pad_token_id, tokenizer.sep_token_id, block_len
        doc = tokenizer([b.title for b in blocks], [b.text for b in blocks], truncation="only_second",
                        max_length=block_len)
        self.doc_ids = [list(ids) for ids in doc["input_ids"]]
        self.body_ids = [list(ids[:block_len]) for ids in
                         tokenizer([b.text for b in blocks], add_special_tokens=False)["input_ids"]]
        self.null_doc = list(tokenizer("", "")["input_ids"])  # `[CLS] [SEP] [SEP]`: Embed_doc(∅)

    def doc_rows(self, ids: list[int], null: bool = False) -> list[list[int]]:
        """Embed_doc's wordpiece rows for blocks `ids` (plus ∅ first when `null`)."""
        return ([self.null_doc] if null else []) + [self.doc_ids[i] for i in ids]

    def doc_batch(self, ids: list[int], device, null: bool = False) -> dict:
        """Embed_doc inputs for blocks `ids` (plus ∅ first when `null`): (N, L) tensors."""
        return encoder_inputs(self.doc_rows(ids, null), self.pad, device=device)


def embed_queries(model: Realm, queries: list[Query], pad_id: int, device) -> torch.Tensor:
    """Embed_input(x) for masked sentences: (B, D)."""
    return model.retriever.embed_input.embed_rows([q.example.input_ids for q in queries], pad_id, device)


def retrieve(model: Realm, queries: list[Query], index, inputs: BlockInputs, k: int, device):
    """Top k-1 blocks from the index (source excluded) and the live scores of [∅, z_1..z_{k-1}]: (B, K-1), (B, K)."""
    q = embed_queries(model, queries, inputs.pad, device)  # (B, D)
    _, top = index.search(q.detach(), k - 1, exclude=[x.source for x in queries])  # (B, K-1)
    top = top.cpu()
    return top, candidate_scores(model, q, top, inputs, device)  # (B, K-1), (B, K)


def candidate_scores(model: Realm, q: torch.Tensor, top: torch.Tensor, inputs: BlockInputs, device) -> torch.Tensor:
    """f(x, z) in float32 for [∅, z_1..z_{K-1}] with the live Embed_doc: (B, D) queries, (B, K-1) ids -> (B, K)."""
    b = len(q)
    z = model.retriever.embed_doc.embed_rows(inputs.doc_rows(top.flatten().tolist(), null=True), inputs.pad,
                                             device)  # (1+B(K-1), D)
    null, z = z[:1], z[1:].view(b, top.shape[1], -1)  # (1, D), (B, K-1, D)
    z = torch.cat([null.expand(b, 1, -1), z], dim=1)  # (B, K, D): candidate 0 is ∅
    return model.retriever.relevance(q, z)  # float32


def read(model: Realm, queries: list[Query], candidates: list[list[int]], inputs: BlockInputs, device):
    """log p(y_j | z, x) for each query and each of its candidate blocks (-1 = ∅): (B, K, M, V), targets (B, K, M)."""
    b, kk = len(queries), len(candidates[0])
    xs = [q.example.input_ids for q in queries for _ in range(kk)]  # B*K rows: each x with each of its z
    zs = [inputs.body_ids[j][:inputs.block_len] if j >= 0 else [] for cands in candidates for j in cands]
    pos, tgt = pad_targets([q.example.masked_positions for q in queries], [q.example.target_ids for q in queries],
                           repeat=kk, device=device)  # (B*K, M)

    def rows(idx):  # join_BERT(x, z) for rows idx, padded to their own longest, read at x's masked positions
        enc = join([xs[i] for i in idx], [zs[i] for i in idx], inputs.sep, inputs.pad, device)
        return model.reader.token_log_probs(**enc, masked_positions=pos[idx])  # (n, M, V)

    logp = by_length([len(x) + len(z) for x, z in zip(xs, zs)], rows)  # (B*K, M, V)
    return logp.view(b, kk, *logp.shape[1:]), tgt.view(b, kk, -1)


def realm_loss(model: Realm, queries: list[Query], index, inputs: BlockInputs, k: int, device) -> dict:
    """-log p(y|x) over [∅ + top k-1], with what the training log reports: masked-token accuracy, the retrieval
    utility RU(z_1) of the best-scored block, the marginal gain log p(y|x) - log p(y|∅,x) and gold hits."""
    top, scores = retrieve(model, queries, index, inputs, k, device)  # (B, K-1), (B, K)
    candidates = [[-1] + row for row in top.tolist()]
    tok_logp, tgt = read(model, queries, candidates, inputs, device)  # (B, K, M, V), (B, K, M)
    log_p_y_zx = sequence_log_prob(tok_logp.flatten(0, 1), tgt.flatten(0, 1)).view(len(queries), k)  # (B, K)
    log_p_y = marginal_log_likelihood(scores, log_p_y_zx)  # (B,)
    with torch.no_grad():  # masked-token accuracy of the marginal p(y_j|x) = sum_z p(z|x) p(y_j|z,x)
        log_p_z = F.log_softmax(scores, -1)[:, :, None, None]  # (B, K, 1, 1)
        pred = torch.logsumexp(log_p_z + tok_logp, dim=1).argmax(-1)  # (B, M)
        valid = tgt[:, 0] != -100
        token_acc = ((pred == tgt[:, 0]) & valid).sum() / valid.sum().clamp(min=1)  # a tensor: no host sync
        gold = [(q.gold is not None, bool(q.gold and set(row) & q.gold)) for q, row in zip(queries, top.tolist())]
        ru = top_retrieval_utility(scores, log_p_y_zx).mean()  # RU(z_1), z_1 = argmax f(x, z)
        gain = marginal_gain(scores, log_p_y_zx).mean()  # log p(y|x) - log p(y|∅,x)
    return {"loss": -log_p_y.mean(), "token_acc": token_acc, "ru": ru, "gain": gain,
            "gold_hits": sum(h for known, h in gold if known), "gold_known": sum(known for known, _ in gold),
            "top": top, "scores": scores.detach()}


@torch.no_grad()
def predict_spans(tok_logp: torch.Tensor, log_p_z: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """argmax_y p(y|x) over the candidates y_z = argmax p(y|z,x) of each z (exact per z): (B, K, M, V) -> (B, M).

    Given z the wordpieces of y are independent, so argmax_y p(y|z,x) is the per-position argmax;
    each such y_z is then scored under the full mixture, log p(y_z|x) = logsumexp_z' [log p(z'|x) + log p(y_z|z',x)].
    """
    b, kk, m, _ = tok_logp.shape
    cand = tok_logp.argmax(-1)  # (B, K, M): y_z for each z
    valid = (tgt[:, 0] != -100)[:, None, None, :]  # (B, 1, 1, M)
    # score[b, c, z'] = log p(y_c | z', x): gather candidate c's wordpieces from every z''s distribution
    gathered = tok_logp[:, None].expand(b, kk, kk, m, -1).gather(-1, cand[:, :, None, :, None].expand(b, kk, kk, m, 1))
    score = (gathered.squeeze(-1) * valid).sum(-1)  # (B, K, K)
    mix = torch.logsumexp(log_p_z[:, None, :] + score, dim=-1)  # (B, K): log p(y_c | x)
    best = mix.argmax(-1)  # (B,)
    return cand[torch.arange(b), best]  # (B, M)
