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

from realm_lite.retriever import Retriever, encode_blocks, encode_queries
from realm_lite.training import Checkpoints, Loop, warm_schedule


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


def ict_loss(retriever: Retriever, queries: list[str], titles: list[str], contexts: list[str], tokenizer, cfg,
             device) -> tuple[torch.Tensor, float]:
    """In-batch softmax loss and accuracy: query i's positive is context i, the others are negatives."""
    q = retriever.embed_input(**encode_queries(queries, tokenizer, cfg.query_len, device))  # (B, D)
    z = retriever.embed_doc(**encode_blocks(titles, contexts, tokenizer, cfg.block_len, device))  # (B, D)
    logits = retriever.relevance(q, z)  # (B, B)
    target = torch.arange(len(queries), device=logits.device)
    return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean().item()


def train_ict(retriever: Retriever, blocks, tokenizer, cfg, device="cpu", block_ids=None, log=print,
              checkpoints: Checkpoints | None = None) -> list[dict]:
    """`cfg.ict_steps` steps of ICT on `blocks` (or the subset `block_ids`); returns the logged history.
    With `checkpoints`, log.jsonl rows and checkpoints (see realm_lite.training)."""
    rng = random.Random(cfg.seed)
    pool = [i for i in (block_ids if block_ids is not None else range(len(blocks))) if len(blocks[i].sentences) >= 2]
    if len(pool) < 2:
        raise ValueError("ICT needs at least two blocks with two or more sentences")
    retriever.to(device).train()
    loop = Loop("ict", cfg.ict_steps, retriever.parameters(), cfg, lr=cfg.ict_lr, clip=1.0, rng=rng, device=device,
                warmup=warm_schedule(cfg, cfg.ict_steps), log=log, desc="ICT", checkpoints=checkpoints)
    for _ in loop:
        batch = rng.sample(pool, min(cfg.ict_batch, len(pool)))  # distinct blocks: no false negatives
        pairs = [ict_pair(blocks[i], rng, cfg.ict_remove_prob) for i in batch]
        loss, acc = ict_loss(retriever, [p[0] for p in pairs], [blocks[i].title for i in batch],
                             [p[1] for p in pairs], tokenizer, cfg, device)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.step()
        loop.record(loss=loss.item(), in_batch_acc=acc)
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
