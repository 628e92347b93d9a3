"""The neural knowledge retriever p(z|x) (paper section 3.2). Notebook 02.

    Embed_input(x) = W_input BERT_CLS(join_BERT(x))          # (B, D)
    Embed_doc(z)   = W_doc   BERT_CLS(join_BERT(z_title, z_body))
    f(x, z)        = Embed_input(x)^T Embed_doc(z)            # relevance score
    p(z | x)       = exp f(x, z) / sum_z' exp f(x, z')
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import BertConfig, BertModel

from realm_lite.batching import by_length, encoder_inputs
from realm_lite.tokenizer import resolve_checkpoint


def build_bert(cfg, n_layers: int, vocab_size: int, backbone: str | None = None, keep_layers: int = 0) -> BertModel:
    """A BertModel: `backbone` (default `cfg.backbone`) loaded from a directory or hub name, its lower
    `keep_layers` layers only when that is > 0; or, with no backbone, built from scratch at cfg's sizes."""
    backbone = cfg.backbone if backbone is None else backbone
    if backbone:
        name = resolve_checkpoint(backbone)
        try:
            # with its pooler, which checkpoints carry (else transformers reports its weights as unexpected);
            # a tower reads the hidden states, so the pooler is dropped once loaded
            bert = BertModel.from_pretrained(name, hidden_dropout_prob=cfg.dropout,
                                             attention_probs_dropout_prob=cfg.dropout)
        except OSError as e:
            raise OSError(f"could not load backbone {backbone!r} from {name!r}: {e}") from None
        bert.pooler = None
        if vocab_size > bert.config.vocab_size:  # the tokenizer would produce ids past the embedding table
            raise ValueError(f"backbone {backbone!r} has a vocabulary of {bert.config.vocab_size} wordpieces, the "
                             f"tokenizer {vocab_size}: use the backbone's own tokenizer (leave `tokenizer` empty)")
        if 0 < keep_layers < bert.config.num_hidden_layers:
            bert.encoder.layer = bert.encoder.layer[:keep_layers]  # the lower layers, as they were pre-trained
            bert.config.num_hidden_layers = keep_layers
        return bert
    config = BertConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=n_layers,
                        num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden,
                        max_position_embeddings=max(512, cfg.block_len + cfg.query_len + 8),
                        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    return BertModel(config, add_pooling_layer=False)


class Tower(nn.Module):
    """Embed_input or Embed_doc: a BERT whose [CLS] (or mean) state is projected to d dimensions (proj_dim = 0: the
    state itself, d = H, as a pretrained sentence encoder was trained to compare them)."""

    def __init__(self, bert: BertModel, proj_dim: int, pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}; valid: cls, mean")
        self.bert, self.pooling = bert, pooling
        self.dim = proj_dim or bert.config.hidden_size  # d
        self.proj = nn.Linear(bert.config.hidden_size, proj_dim, bias=False) if proj_dim else nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            pooled = h[:, 0]  # (B, H)
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H)
        return self.proj(pooled)  # (B, D)

    def embed_rows(self, rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
        """Embed(x) or Embed(z) of wordpiece-id rows, run in groups of similar length (batching.by_length): (N, D)."""
        return by_length([len(r) for r in rows],
                         lambda idx: self(**encoder_inputs([rows[i] for i in idx], pad_id, device=device)))


class Retriever(nn.Module):
    """The two towers and the relevance score f(x, z) = Embed_input(x)^T Embed_doc(z)."""

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.embed_input = Tower(build_bert(cfg, cfg.retriever_layers, vocab_size), cfg.proj_dim, cfg.pooling)
        self.embed_doc = Tower(build_bert(cfg, cfg.retriever_layers, vocab_size), cfg.proj_dim, cfg.pooling)
        # ORQA/REALM start both towers from the same weights; a from-scratch pair starts identical too.
        self.embed_doc.load_state_dict(self.embed_input.state_dict())

    def relevance(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """f(x, z) in float32, also under autocast: (B, D) x (N, D) -> (B, N), or (B, D) x (B, K, D) -> (B, K).

        A bf16 product would move p(z|x) = softmax f(x, z) by about 1e-3; the towers may still run in bf16."""
        with torch.autocast(q.device.type, enabled=False):
            q, z = q.float(), z.float()
            if z.dim() == 3:
                return torch.einsum("bd,bkd->bk", q, z)
            return q @ z.T


# ---- inputs -------------------------------------------------------------------------------------
def encode_queries(texts: list[str], tokenizer, max_len: int, device=None) -> dict:
    """`[CLS] x [SEP]` ids and mask for a batch of queries: (B, L)."""
    enc = tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def encode_blocks(titles: list[str], texts: list[str], tokenizer, max_len: int, device=None) -> dict:
    """`[CLS] title [SEP] body [SEP]` ids and mask for a batch of blocks z: (N, L)."""
    enc = tokenizer(titles, texts, truncation="only_second", max_length=max_len, padding=True,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def embed_in_bf16(cfg, device) -> bool:
    """Whether to embed the corpus under bf16 autocast (cfg.embed_bf16; "auto": on a CUDA GPU that has bf16, not
    on a V100 or T4, and on AVX-512 CPUs).

    Measured (docs/results.md): on an AVX-512 CPU bf16 embeds 2-3x faster; on an AVX2-only CPU, which
    has no bf16 arithmetic, 4.6x slower."""
    if cfg.embed_bf16 != "auto":
        return cfg.embed_bf16 == "on"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type != "cpu" or torch.backends.cpu.get_cpu_capability() == "AVX512"


def tokenize_blocks(blocks, tokenizer, max_len: int) -> list[list[int]]:
    """[CLS] title [SEP] body [SEP] wordpiece ids of every block z, truncated to `max_len`."""
    if not blocks:
        return []
    return tokenizer([b.title for b in blocks], [b.text for b in blocks], truncation="only_second",
                     max_length=max_len)["input_ids"]


def embed_blocks(tower: Tower, blocks, tokenizer, max_len: int, batch_size: int = 256,
                 device="cpu", autocast: bool = True) -> torch.Tensor:
    """Embed_doc(z) for every block, without gradients: (N, D) float32 (see `embed_ids`)."""
    return embed_ids(tower, tokenize_blocks(blocks, tokenizer, max_len), tokenizer.pad_token_id, batch_size,
                     device, autocast)


@torch.no_grad()
def embed_ids(tower: Tower, ids: list[list[int]], pad_id: int, batch_size: int = 256, device="cpu",
              autocast: bool = True) -> torch.Tensor:
    """Embed_doc(z) for pre-tokenized blocks, in batches of blocks of similar length: (N, D) float32.

    Sorted by length, a batch is padded only to its own longest block (in the cpu world that halves the work:
    53 wordpieces on average, 128 at most)."""
    was_training = tower.training
    tower.eval()
    device = torch.device(device)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.zeros(len(ids), tower.dim, device=device)  # (N, D)
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        enc = encoder_inputs([ids[j] for j in rows], pad_id, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out[torch.tensor(rows, device=device)] = tower(**enc).float()
    tower.train(was_training)
    return out
