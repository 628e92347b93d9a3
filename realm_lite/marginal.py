"""The knowledge-augmented encoder p(y|z,x) and the marginal likelihood p(y|x) (paper 2.2, 3.1, 3.2). Notebook 04.

    p(y | z, x) = prod_j p(y_j | z, x),   p(y_j | z, x) ∝ exp(w_j^T BERT_MASK(j)(join_BERT(x, z_body)))
    log p(y | x) = logsumexp_z [ log p(z | x) + log p(y | z, x) ]      over the top k and the null document ∅
    r(z)         = d log p(y | x) / d f(x, z) = [p(y|z,x) / p(y|x) - 1] p(z|x) = p(z|y,x) - p(z|x)
    RU(z)        = log p(y | z, x) - log p(y | ∅, x)                   retrieval utility of one document z

The MLM head is computed only at the masked positions: for a small model the vocabulary
projection over every position would cost more than the encoder itself. From a BERT checkpoint the head starts
as BERT's own (the paper initialises the knowledge-augmented encoder, head included, from BERT's masked LM).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertModel

from realm_lite.batching import join, pad


class KnowledgeAugmentedEncoder(nn.Module):
    """BERT over `[CLS] x [SEP] z [SEP]` with an MLM head tied to the word embeddings."""

    def __init__(self, bert: BertModel):
        super().__init__()
        h = bert.config.hidden_size
        self.bert = bert
        self.transform = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h, eps=bert.config.layer_norm_eps))
        self.bias = nn.Parameter(torch.zeros(bert.config.vocab_size))

    def load_mlm_head(self, checkpoint: str) -> bool:
        """Start the head as the checkpoint's masked-LM head (BERT's `cls.predictions`); False, the head left as
        initialised, when the checkpoint has none (a sentence encoder such as all-MiniLM-L6-v2)."""
        head = checkpoint_mlm_head(checkpoint)
        if head is None:
            return False
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name in _HEAD_KEYS:
                if head[name].shape != params[name].shape:
                    raise ValueError(f"the masked-LM head of {checkpoint!r} has {name} of shape "
                                     f"{tuple(head[name].shape)}, the encoder {tuple(params[name].shape)}")
                params[name].copy_(head[name])
        return True

    def token_log_probs(self, input_ids, attention_mask, token_type_ids, masked_positions) -> torch.Tensor:
        """log p(y_j = v | z, x) at each masked position: (N, L) inputs, (N, M) positions -> (N, M, V) float32."""
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state  # (N, L, H)
        h = h.gather(1, masked_positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (N, M, H): masked only
        logits = self.transform(h) @ self.bert.embeddings.word_embeddings.weight.T + self.bias  # (N, M, V)
        return F.log_softmax(logits.float(), dim=-1)

    def forward(self, input_ids, attention_mask, token_type_ids, masked_positions, target_ids) -> torch.Tensor:
        """log p(y | z, x) for each row: (N, L) inputs, (N, M) masked positions and targets (-100 = padding) -> (N,)."""
        logp = self.token_log_probs(input_ids, attention_mask, token_type_ids, masked_positions)  # (N, M, V)
        return sequence_log_prob(logp, target_ids)


# BERT's masked-LM head in a checkpoint (BertForMaskedLM, BertForPreTraining), by our names; older files name
# LayerNorm's parameters gamma and beta
_HEAD_KEYS = {"transform.0.weight": ("cls.predictions.transform.dense.weight",),
              "transform.0.bias": ("cls.predictions.transform.dense.bias",),
              "transform.2.weight": ("cls.predictions.transform.LayerNorm.weight",
                                     "cls.predictions.transform.LayerNorm.gamma"),
              "transform.2.bias": ("cls.predictions.transform.LayerNorm.bias",
                                   "cls.predictions.transform.LayerNorm.beta"),
              "bias": ("cls.predictions.bias", "cls.predictions.decoder.bias")}


def checkpoint_mlm_head(checkpoint: str) -> dict[str, torch.Tensor] | None:
    """The masked-LM head's tensors of a checkpoint directory or (cached) hub name, by KnowledgeAugmentedEncoder's
    names; None when its weights hold no such head (from safetensors only the head's tensors are read)."""
    files = _weight_files(checkpoint)
    if not files:
        raise OSError(f"no model.safetensors or pytorch_model.bin in checkpoint {checkpoint!r}")
    found: dict[str, torch.Tensor] = {}
    for f in files:
        if f.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(f, framework="pt") as st:
                found.update({k: st.get_tensor(k) for k in st.keys() if k.startswith("cls.predictions.")})
        else:
            state = torch.load(f, map_location="cpu", weights_only=True)
            found.update({k: v for k, v in state.items() if k.startswith("cls.predictions.")})
    head = {}
    for ours, theirs in _HEAD_KEYS.items():
        key = next((k for k in theirs if k in found), None)
        if key is None:
            return None
        head[ours] = found[key].float()
    return head


def _weight_files(checkpoint: str) -> list[str]:
    """The checkpoint's weight files (one, or the shards a *.index.json names): safetensors first, else .bin."""
    import json

    from transformers.utils import cached_file

    def get(name):
        if os.path.isdir(checkpoint):
            path = Path(checkpoint) / name
            return str(path) if path.is_file() else None
        return cached_file(checkpoint, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)

    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path := get(single)) is not None:
            return [path]
        if (path := get(index)) is not None:
            shards = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
            return [p for p in map(get, shards) if p is not None]
    return []


def sequence_log_prob(token_logp: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """log p(y | z, x) = sum_j log p(y_j | z, x): (N, M, V) and (N, M) targets (-100 = padding) -> (N,)."""
    valid = target_ids != -100  # (N, M)
    tok = token_logp.gather(-1, target_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, M)
    return (tok * valid).sum(-1)  # (N,)


def join_inputs(x_ids: list[list[int]], z_ids: list[list[list[int]]], sep_id: int, pad_id: int,
                max_z: int, device=None) -> dict:
    """`[CLS] x [SEP] z [SEP]` for every query b and each of its K candidates: tensors of shape (B*K, L).

    `x_ids[b]` already holds `[CLS] ... [SEP]` with masks applied; `z_ids[b][k]` is a block body's
    wordpieces (an empty list is the null document ∅), cut to `max_z`. Masked positions are unchanged by the join.
    """
    pairs = [(x, z[:max_z]) for x, zs in zip(x_ids, z_ids) for z in zs]
    return join([x for x, _ in pairs], [z for _, z in pairs], sep_id, pad_id, device)


def pad_targets(positions: list[list[int]], targets: list[list[int]], repeat: int = 1, device=None):
    """Masked positions and targets padded to (B*repeat, M); padded targets are -100."""
    pos, tgt = pad(positions, 0), pad(targets, -100)  # (B, M)
    return pos.repeat_interleave(repeat, 0).to(device), tgt.repeat_interleave(repeat, 0).to(device)


def marginal_log_likelihood(scores: torch.Tensor, log_p_y_given_zx: torch.Tensor) -> torch.Tensor:
    """log p(y|x) = logsumexp_z [log p(z|x) + log p(y|z,x)] with p(z|x) = softmax_z f(x,z): (B, K) -> (B,)."""
    log_p_z = F.log_softmax(scores, dim=-1)  # (B, K)
    return torch.logsumexp(log_p_z + log_p_y_given_zx, dim=-1)  # (B,)


@torch.no_grad()
def relevance_gradient(scores: torch.Tensor, log_p_y_zx: torch.Tensor) -> torch.Tensor:
    """r(z) = d log p(y|x) / d f(x,z) = [p(y|z,x)/p(y|x) - 1] p(z|x) = p(z|y,x) - p(z|x): (B, K) -> (B, K)."""
    log_p_z = F.log_softmax(scores, dim=-1)  # (B, K)
    return F.softmax(log_p_z + log_p_y_zx, dim=-1) - log_p_z.exp()  # posterior p(z|y,x) minus prior p(z|x)


def retrieval_utility(log_p_y_zx: torch.Tensor) -> torch.Tensor:
    """RU(z) = log p(y|z,x) - log p(y|∅,x) of each retrieved document (the paper's analysis): (B, K) with
    column 0 the null document ∅ -> (B, K-1) for z_1..z_{K-1}. Positive where z helps more than no document."""
    return log_p_y_zx[:, 1:] - log_p_y_zx[:, :1]


def top_retrieval_utility(scores: torch.Tensor, log_p_y_zx: torch.Tensor) -> torch.Tensor:
    """RU of the retrieved document with the highest f(x, z) (∅ in column 0 not counted): (B, K), (B, K) -> (B,)."""
    best = scores[:, 1:].argmax(-1, keepdim=True)  # (B, 1)
    return retrieval_utility(log_p_y_zx).gather(1, best).squeeze(1)


def marginal_gain(scores: torch.Tensor, log_p_y_zx: torch.Tensor) -> torch.Tensor:
    """log p(y|x) - log p(y|∅,x): what the mixture over [∅, z_1..z_{K-1}] gains over ∅ alone: (B, K) -> (B,)."""
    return marginal_log_likelihood(scores, log_p_y_zx) - log_p_y_zx[:, 0]
