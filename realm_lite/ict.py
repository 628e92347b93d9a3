"""Inverse Cloze Task warm start for the retriever (ORQA, Lee et al. 2019; REALM section 3.4). Notebook 02.

A random sentence of a block is the pseudo-query x; the rest of the block is its pseudo-evidence z.
The sentence is removed from its block with probability 0.9, so the towers must learn more than
word overlap. Loss: softmax over the batch's blocks (the other blocks are the negatives),

    P_ICT(z | x) = exp f(x, z) / sum_{z' in batch} exp f(x, z').
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from realm_lite.distributed import Dist, data_parallel, gather_with_grad, global_row, my_share
from realm_lite.retriever import Retriever, encode_blocks, encode_queries
from realm_lite.training import Checkpoints, Loop, scalars, warm_schedule


def split_heldout(blocks, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Block indices for ICT training and for held-out evaluation (a fixed, seeded split)."""
    idx = list(range(len(blocks)))
    random.Random(seed).shuffle(idx)
    n = max(1, int(round(fraction * len(idx))))
    return sorted(idx[n:]), sorted(idx[:n])


def ict_pair(block, rng: random.Random, remove_prob: float) -> tuple[str, str] | None:
    """(query sentence x, its block z with x removed w.p. remove_prob); None for a one-sentence block."""
    if len(block.sentences) < 2:
        return None
    i = rng.randrange(len(block.sentences))
    s, e, _ = block.sentences[i]
    query = block.text[s:e]
    context = block.text if rng.random() >= remove_prob else (block.text[:s] + block.text[e:]).strip()
    return query, " ".join(context.split())


def in_batch_loss(retriever: Retriever, x: torch.Tensor, z: torch.Tensor, dist: Dist | None = None) -> dict:
    """Softmax over the batch's blocks, x_i's positive z_i: -log P(z_i | x_i) averaged, and the in-batch accuracy.
    (B, D) queries and blocks; on N ranks this rank's share of them, scored against every rank's blocks."""
    z_all, first = gather_with_grad(z, dist or Dist())  # (B_all, D): the global batch's blocks
    logits = retriever.relevance(x, z_all)  # (B, B_all)
    target = torch.arange(first, first + len(x), device=logits.device)
    return {"loss": F.cross_entropy(logits, target), "in_batch_acc": (logits.argmax(-1) == target).float().mean()}


def ict_loss(retriever: Retriever, queries: list[str], titles: list[str], contexts: list[str], tokenizer, cfg,
             device) -> tuple[torch.Tensor, float]:
    """In-batch softmax loss and accuracy: query i's positive is context i, the others are negatives."""
    out = _ict_step(retriever, queries, titles, contexts, tokenizer, cfg, device)
    return out["loss"], out["in_batch_acc"].item()


def _ict_step(retriever: Retriever, queries, titles, contexts, tokenizer, cfg, device, dist: Dist | None = None):
    q = retriever.embed_input(**encode_queries(queries, tokenizer, cfg.query_len, device))  # (B, D)
    z = retriever.embed_doc(**encode_blocks(titles, contexts, tokenizer, cfg.block_len, device))  # (B, D)
    return in_batch_loss(retriever, q, z, dist)


def train_ict(retriever: Retriever, blocks, tokenizer, cfg, device="cpu", block_ids=None, log=print,
              checkpoints: Checkpoints | None = None, dist: Dist | None = None) -> list[dict]:
    """`cfg.ict_steps` steps of ICT on `blocks` (or the subset `block_ids`); returns the logged history.
    With `checkpoints`, log.jsonl rows and checkpoints (see realm_lite.training). With `dist` of N ranks, each
    takes its share of every global batch of cfg.ict_batch (realm_lite.distributed), its negatives every rank's."""
    dist = dist or Dist(device=torch.device(device))
    rng = random.Random(cfg.seed)
    pool = [i for i in (block_ids if block_ids is not None else range(len(blocks))) if len(blocks[i].sentences) >= 2]
    if len(pool) < 2:
        raise ValueError("ICT needs at least two blocks with two or more sentences")
    retriever.to(device).train()
    loop = Loop("ict", cfg.ict_steps, retriever.parameters(), cfg, lr=cfg.ict_lr, clip=1.0, rng=rng, device=device,
                warmup=warm_schedule(cfg, cfg.ict_steps), log=log, desc="ICT", checkpoints=checkpoints)
    step_loss = data_parallel(retriever, lambda r, *batch: _ict_step(r, *batch, tokenizer, cfg, device, dist), dist)
    for _ in loop:
        batch = rng.sample(pool, min(cfg.ict_batch, len(pool)))  # distinct blocks: no false negatives
        pairs = [ict_pair(blocks[i], rng, cfg.ict_remove_prob) for i in batch]  # the same draws on every rank
        mine, share = my_share(list(zip(batch, pairs)), dist)
        out = step_loss([p[0] for _, p in mine], [blocks[i].title for i, _ in mine], [p[1] for _, p in mine])
        loop.opt.zero_grad(set_to_none=True)
        (out["loss"] * (dist.world * share)).backward()  # DDP averages: the global batch's mean gradient
        loop.step()
        loop.record(**global_row(scalars(out), share, dist))
    return loop.history


@torch.no_grad()
def ict_recall(retriever: Retriever, blocks, heldout: list[int], tokenizer, cfg, device="cpu", ks=(1, 5)) -> dict:
    """Held-out ICT recall@k: a sentence of each held-out block must find that block (sentence removed) among all."""
    from realm_lite.mips import MipsIndex
    from realm_lite.retriever import embed_blocks

    rng = random.Random(cfg.seed + 1)
    pairs = [(i, ict_pair(blocks[i], rng, remove_prob=1.0)) for i in heldout if len(blocks[i].sentences) >= 2]
    if not pairs:
        raise ValueError("no held-out block has two sentences: ICT recall is undefined")
    was_training = retriever.training
    retriever.eval()
    # every row in float32, as the held-out contexts and the queries: a bf16 corpus against float32 contexts
    # would rank the held-out blocks at another precision than their competitors
    with torch.autocast(torch.device(device).type, enabled=False):
        emb = embed_blocks(retriever.embed_doc, blocks, tokenizer, cfg.block_len, device=device, autocast=False)
        ctx = retriever.embed_doc(**encode_blocks([blocks[i].title for i, _ in pairs], [p[1] for _, p in pairs],
                                                  tokenizer, cfg.block_len, device))  # (H, D)
        emb[torch.tensor([i for i, _ in pairs], device=emb.device)] = ctx  # (N, D): the held-out blocks lose x
        q = retriever.embed_input(**encode_queries([p[0] for _, p in pairs], tokenizer, cfg.query_len, device))
    _, top = MipsIndex(emb).search(q, max(ks))  # (H, max k)
    retriever.train(was_training)
    target = torch.tensor([i for i, _ in pairs], device=top.device).unsqueeze(1)
    return {f"ict_recall@{k}": round((top[:, :k] == target).any(1).float().mean().item(), 4) for k in ks} | \
        {"ict_queries": len(pairs)}
