"""Padded id tensors, and the readers' input join_BERT(x, z) = `[CLS] x [SEP] z [SEP]` (paper 2.2). Notebook 04.

Inputs already tokenized into id lists are padded here: masked sentences x and blocks z for the towers
(realm.py), and the rows both readers read (the knowledge-augmented encoder, marginal.py; the span reader, reader.py).
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device=None) -> torch.Tensor:
    """A host tensor on `device`; to a CUDA device from pinned memory, without waiting for the copy."""
    if device is None:
        return t
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def pad(rows: list[list[int]], value: int, device=None) -> torch.Tensor:
    """Lists of ints as one (N, L) LongTensor, each row right-padded with `value` to the longest."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return to_device(out, device)


def encoder_inputs(rows: list[list[int]], pad_id: int, types: list[list[int]] | None = None, device=None) -> dict:
    """Padded `input_ids` and `attention_mask` (1 over each row's own ids), and `token_type_ids` when given: (N, L)."""
    out = {"input_ids": pad(rows, pad_id, device), "attention_mask": pad([[1] * len(r) for r in rows], 0, device)}
    if types is not None:
        out["token_type_ids"] = pad(types, 0, device)
    return out


def join(xs: list[list[int]], zs: list[list[int]], sep_id: int, pad_id: int, device=None) -> dict:
    """join_BERT(x, z) row by row: `x z [SEP]` with token type 0 over x and 1 over `z [SEP]`: (N, L) tensors.

    Each `x` already holds `[CLS] ... [SEP]`, so positions inside x are unchanged by the join; an empty `z`
    is the null document ∅ (`[CLS] x [SEP] [SEP]`)."""
    if len(xs) != len(zs):
        raise ValueError(f"{len(xs)} queries x for {len(zs)} blocks z")
    rows = [list(x) + list(z) + [sep_id] for x, z in zip(xs, zs)]
    types = [[0] * len(x) + [1] * (len(z) + 1) for x, z in zip(xs, zs)]
    return encoder_inputs(rows, pad_id, types, device)


# ---- rows of similar length together ------------------------------------------------------------
GROUP_ROWS = 16  # rows per length group: enough for full matrix products, few enough that padding stays small


def length_groups(lengths: list[int], size: int = GROUP_ROWS) -> list[list[int]]:
    """Row indices sorted by length and cut into groups of `size`: each group is padded only to its own longest row.

    A block z holds 48 wordpieces on average in the cpu world, its longest 124; padded to the longest row of a
    whole batch, half of what an encoder computes is padding."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + size] for i in range(0, len(order), size)]


def by_length(lengths: list[int], fn, size: int = GROUP_ROWS) -> torch.Tensor:
    """fn(row indices) -> (n, ...) for each length group, concatenated back in row order: (N, ...).

    Encoders read each row independently of the others (padding is masked), so the result is the one a single
    padded batch gives, up to float rounding, for less arithmetic."""
    groups = length_groups(lengths, size)
    if len(groups) == 1:
        return fn(list(range(len(lengths))))
    out = torch.cat([fn(g) for g in groups])
    where = torch.empty(len(lengths), dtype=torch.long)
    where[torch.tensor([i for g in groups for i in g])] = torch.arange(len(lengths))
    return out[where.to(out.device)]
