"""Open-domain QA: fine-tuning, prediction and the baselines, on top of a pre-training run (paper 3.4, 4). Notebook 07.

Four systems, one reader architecture and one evaluation:
  realm       : Embed_input, Embed_doc and the reader's BERT from REALM pre-training (the run's checkpoint.pt)
  ict         : ORQA: a retriever trained by ICT only, and the reader as it was before REALM (warmstart.pt)
  bm25        : BM25 (bm25s) instead of the neural retriever, and REALM's reader
  closed-book : no retrieval: the knowledge-augmented encoder fills `[MASK]`s after the question (z = ∅)

Query-side fine-tuning, as ORQA and REALM do it: Embed_doc and the index stay frozen; Embed_input and the
reader train. With c blocks retrieved and the top k read,

    loss = -log sum_{z in top c, z holds y} p(z|x)   -   log sum_{z in top k} p(z|x) p(y|z,x)

and each term is 0 for a question none of whose candidates holds an answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from realm_lite.distributed import Dist, ShardedIndex, shard_range
from realm_lite.marginal import join_inputs, pad_targets, sequence_log_prob
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.qa_eval import contains_answer, is_correct, summarize
from realm_lite.reader import LEFT_OUT, ReaderInputs, SpanReader, reader_log_likelihood, span_log_probs
from realm_lite.realm import Realm
from realm_lite.retriever import Retriever, embed_blocks, embed_in_bf16, encode_queries
from realm_lite.training import load_checkpoint

SYSTEMS = ("realm", "ict", "bm25", "closed-book")


class QAModel(nn.Module):
    """The trainable parts of a system: Embed_input (+ frozen Embed_doc), and a span reader or an MLM reader."""

    def __init__(self, system: str, cfg, vocab_size: int):
        super().__init__()
        if system not in SYSTEMS:
            raise ValueError(f"unknown QA system {system!r}; valid: {', '.join(SYSTEMS)}")
        self.system = system
        realm = Realm(cfg, vocab_size)  # the pre-trained parts are loaded into this layout, then taken apart
        self._realm = [realm]  # not a submodule: only the parts below are saved
        self.embed_input = self.embed_doc = self.reader = self.mlm = None
        if system in ("realm", "ict"):
            self.embed_input, self.embed_doc = realm.retriever.embed_input, realm.retriever.embed_doc
            self.embed_doc.requires_grad_(False)  # query-side fine-tuning: the document side is frozen
        if system == "closed-book":
            self.mlm = realm.reader
        else:
            self.reader = SpanReader(realm.reader.bert, cfg.qa_max_span)

    def load_pretrained(self, state: dict) -> None:
        """Load a pre-training state dict (Realm layout) into the shared modules."""
        self._realm[0].load_state_dict(state)

    def trainable(self, cfg) -> list[dict]:
        groups = []
        if self.embed_input is not None:
            groups.append({"params": list(self.embed_input.parameters()), "lr": cfg.qa_retriever_lr})
        reader = self.reader if self.reader is not None else self.mlm
        groups.append({"params": list(reader.parameters()), "lr": cfg.qa_lr})
        return groups


@dataclass
class QASystem:
    """A QA model with its corpus: blocks, tokenizer, the frozen MIPS index (or BM25) and the reader's inputs."""

    name: str
    cfg: object
    model: QAModel
    blocks: list
    tokenizer: object
    device: torch.device
    index: MipsIndex | ShardedIndex | None = None
    bm25: object | None = None
    inputs: ReaderInputs | None = None
    world: object | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.inputs = ReaderInputs(self.blocks, self.tokenizer, self.cfg.block_len, self.cfg.query_len,
                                   self.cfg.qa_max_span)


# ---- building a system from a pre-training run ---------------------------------------------------
def build_bm25(blocks):
    """A BM25 index (bm25s) over `title text` of every block."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    tok = Tokenizer(stopwords="en")
    bm25 = bm25s.BM25()
    bm25.index(tok.tokenize([f"{b.title} {b.text}" for b in blocks], show_progress=False, return_as="tuple"),
               show_progress=False)
    return bm25, tok


def index_documents(model: QAModel, blocks, tokenizer, cfg, device, dist: Dist | None = None) -> MipsIndex | ShardedIndex:
    """Embed_doc(z) for every block, once: the frozen index of query-side fine-tuning (on N ranks, each embeds and
    holds 1/N of the blocks, searched together)."""
    dist = dist or Dist()
    lo, hi = shard_range(len(blocks), dist.rank, dist.world)
    emb = embed_blocks(model.embed_doc, blocks[lo:hi], tokenizer, cfg.block_len, device=device,
                       autocast=embed_in_bf16(cfg, device))
    index = MipsIndex(emb, cfg.index, version=fingerprint(model.embed_doc))
    return index if dist.world == 1 else ShardedIndex(index, lo, len(blocks))


def system_from_run(run_dir, system: str, overrides: dict | None = None, log=print,
                    dist: Dist | None = None) -> QASystem:
    """A fresh QA system initialised from a pre-training run (see the module docstring for each system); on N ranks
    (`dist`) its index sharded."""
    from realm_lite.ict import split_heldout, train_ict
    from realm_lite.pretrain import load_run, resolve_device

    run_dir = Path(run_dir)
    cfg, blocks, tokenizer, world = load_run(run_dir)
    cfg = cfg.replace(**(overrides or {}))
    source = run_dir / ("warmstart.pt" if system == "ict" else "checkpoint.pt")
    if not source.exists():
        raise FileNotFoundError(f"{source} missing: {run_dir} has no finished pre-training run "
                                f"(run `realm-lite pretrain --out {run_dir}` first)")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = QAModel(system, cfg, len(tokenizer))
    model.load_pretrained(load_checkpoint(source, "pre-training checkpoint")["model"])
    info = {"init": str(run_dir.resolve()), "init_weights": source.name}
    if system == "ict" and cfg.warm_start != "ict":  # the run warmed up otherwise: train ORQA's ICT retriever now
        retriever = Retriever(cfg, len(tokenizer))
        train_ids, _ = split_heldout(blocks, 0.1, cfg.seed)
        t0 = time.time()
        train_ict(retriever, blocks, tokenizer, cfg, "cpu" if device.type == "cpu" else device, block_ids=train_ids,
                  log=log)
        model.embed_input.load_state_dict(retriever.embed_input.state_dict())
        model.embed_doc.load_state_dict(retriever.embed_doc.state_dict())
        info.update(ict_steps=cfg.ict_steps, ict_seconds=round(time.time() - t0, 1))
    model.to(device)
    qa = QASystem(system, cfg, model, blocks, tokenizer, device, world=world, info=info)
    attach_retrieval(qa, dist=dist)
    return qa


def attach_retrieval(qa: QASystem, index: MipsIndex | None = None, dist: Dist | None = None) -> None:
    """The system's retriever: `index` (else Embed_doc over every block) for realm and ict, on N ranks (`dist`)
    this rank's shard of it; BM25 for bm25."""
    if qa.name in ("realm", "ict"):
        qa.index = ShardedIndex.shard_of(index, dist or Dist()) if index is not None else \
            index_documents(qa.model, qa.blocks, qa.tokenizer, qa.cfg, qa.device, dist)
    elif qa.name == "bm25":
        qa.bm25 = build_bm25(qa.blocks)


# ---- retrieval -------------------------------------------------------------------------------------
def retrieve(qa: QASystem, questions: list[str], n: int):
    """The top n blocks per question and, for a neural retriever, f(x, z) with gradients to Embed_input:
    (B, n) ids, (B, n) scores or None (BM25: the reader treats its top k as equally likely)."""
    n = min(n, len(qa.blocks))
    if qa.bm25 is not None:
        bm25, tok = qa.bm25
        top, _ = bm25.retrieve(tok.tokenize(questions, update_vocab=False, show_progress=False, return_as="tuple"),
                               k=n, show_progress=False)
        return torch.as_tensor(top, dtype=torch.long), None
    enc = encode_queries(questions, qa.tokenizer, qa.cfg.query_len, qa.device)
    q = qa.model.embed_input(**enc).float()  # (B, D)
    _, top = qa.index.search(q.detach(), n)  # (B, n)
    z = qa.index.vectors(top).to(q.device)  # (B, n, D): frozen Embed_doc(z), wherever its shard is held
    return top.cpu(), torch.einsum("bd,bnd->bn", q, z)  # (B, n), (B, n)


def _log_p_z(scores, b: int, k: int, device) -> torch.Tensor:
    """log p(z|x) over the k read blocks: softmax of f(x, z), or uniform without scores: (B, K)."""
    if scores is None:
        return torch.full((b, k), -torch.log(torch.tensor(float(k))).item(), device=device)
    return F.log_softmax(scores[:, :k], dim=-1)


# ---- the loss ----------------------------------------------------------------------------------------
def qa_loss(qa: QASystem, batch) -> dict:
    """Retriever term + reader term for a batch of QAExamples (closed-book: -log p(y|∅, x))."""
    if qa.name == "closed-book":
        return closed_book_loss(qa, batch)
    questions = [ex.question for ex in batch]
    top, scores = retrieve(qa, questions, qa.cfg.qa_retrieve)  # (B, C)
    b, k = len(batch), min(qa.cfg.qa_read, top.shape[1])
    has_host = torch.tensor([[contains_answer(qa.blocks[j].text, ex.answers, ex.regex) for j in row]
                             for ex, row in zip(batch, top.tolist())])  # (B, C), found on the host
    has = has_host.to(qa.device, non_blocking=True)
    retr = torch.zeros((), device=qa.device)
    if scores is not None and has_host.any():  # masks, not boolean indexing: no wait for the GPU below
        log_p = F.log_softmax(scores, -1).masked_fill(~has, LEFT_OUT).logsumexp(-1)  # (B,)
        retr = -torch.where(has.any(-1), log_p, 0.0).sum() / b
    inp = qa.inputs.batch(questions, top[:, :k].tolist(), qa.device, answers=[(ex.answers, ex.regex) for ex in batch])
    span_scores = qa.model.reader(inp["input_ids"], inp["attention_mask"], inp["token_type_ids"], inp["span_ok"])
    log_p_s = span_log_probs(span_scores).view(b, k, -1)  # (B, K, L*S)
    hit = inp["answer_spans"].view(b, k, -1)  # (B, K, L*S)
    found = hit.flatten(1).any(-1)  # (B,)
    ll = reader_log_likelihood(_log_p_z(scores, b, k, qa.device), log_p_s, hit)  # (B,)
    read = -torch.where(found, ll, 0.0).sum() / b
    return {"loss": retr + read, "retriever_loss": retr.detach(), "reader_loss": read.detach(),
            "answer_in_c": has.any(-1).float().mean(), "answer_read": found.float().mean()}


def _closed_book_inputs(qa: QASystem, questions: list[str], lengths: list[int], device) -> tuple:
    """`[CLS] x [MASK]*n [SEP] [SEP]` (z = ∅): the question followed by n masks per row."""
    tok = qa.tokenizer
    q_ids = tok(questions, truncation=True, max_length=qa.cfg.query_len - qa.cfg.qa_max_span)["input_ids"]
    x_ids = [q[:-1] + [tok.mask_token_id] * n + [tok.sep_token_id] for q, n in zip(q_ids, lengths)]
    positions = [list(range(len(q) - 1, len(q) - 1 + n)) for q, n in zip(q_ids, lengths)]
    enc = join_inputs(x_ids, [[[]] for _ in x_ids], tok.sep_token_id, tok.pad_token_id, 0, device)
    return enc, positions


def closed_book_loss(qa: QASystem, batch) -> dict:
    """-log p(y | ∅, x) of the first reference answer's wordpieces at masks after the question."""
    batch = [ex for ex in batch if not ex.regex]  # a regex is not a string to generate
    if not batch:
        return {"loss": torch.zeros((), device=qa.device, requires_grad=True), "reader_loss": 0.0}
    targets = [qa.tokenizer(ex.answers[0], add_special_tokens=False)["input_ids"][:qa.cfg.qa_max_span] or
               [qa.tokenizer.unk_token_id] for ex in batch]
    enc, positions = _closed_book_inputs(qa, [ex.question for ex in batch], [len(t) for t in targets], qa.device)
    pos, tgt = pad_targets(positions, targets, device=qa.device)
    logp = qa.model.mlm.token_log_probs(**enc, masked_positions=pos)  # (B, M, V)
    loss = -sequence_log_prob(logp, tgt).mean()
    return {"loss": loss, "reader_loss": loss.detach()}


# ---- prediction ---------------------------------------------------------------------------------------
@torch.no_grad()
def predict(qa: QASystem, examples, batch_size: int = 16) -> list[dict]:
    """The best span over all read blocks, argmax_{z, s} p(z|x) p(s|z,x), one row per question."""
    from realm_lite.pretrain import autocast

    was_training = qa.model.training
    qa.model.eval()
    rows = []
    with autocast(qa.cfg, qa.device):  # as the system was fine-tuned (cfg.autocast)
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            rows += _predict_closed_book(qa, batch) if qa.name == "closed-book" else _predict_open(qa, batch)
    qa.model.train(was_training)  # a loaded system stays in eval mode, a system being fine-tuned goes on training
    return rows


def read_open(qa: QASystem, questions: list[str], k: int | None = None) -> dict:
    """Retrieve and read: the top c blocks, f(x, z), and log p(z|x) + log p(s|z,x) of every span s of the k read
    blocks (k: the system's qa_read unless given, as the explorer does). Notebooks 07 and 08."""
    if k is not None and k < 1:
        raise ValueError(f"k={k}: read 1 block or more")
    top, scores = retrieve(qa, questions, max(qa.cfg.qa_retrieve, 5, k or 0))  # (B, C)
    b, k = len(questions), min(k or qa.cfg.qa_read, top.shape[1])
    inp = qa.inputs.batch(questions, top[:, :k].tolist(), qa.device)
    span_scores = qa.model.reader(inp["input_ids"], inp["attention_mask"], inp["token_type_ids"], inp["span_ok"])
    log_p_s = span_log_probs(span_scores).view(b, k, -1)  # (B, K, L*S)
    log_p_z = _log_p_z(scores, b, k, qa.device)  # (B, K)
    return {"top": top, "scores": scores, "k": k, "inputs": inp, "log_p_z": log_p_z, "log_p_s": log_p_s,
            "total": log_p_z.unsqueeze(-1) + log_p_s}  # (B, K, L*S): log p(z|x) p(s|z,x)


def span_at(qa: QASystem, read: dict, bi: int, zi: int, pos: int) -> str:
    """TEXT(s) of flat span position `pos` (start t, length o+1) in question bi's zi-th read block."""
    t, o = divmod(pos, qa.cfg.qa_max_span)
    start = t - read["inputs"]["z_offset"][bi * read["k"] + zi]
    return qa.inputs.span_text(read["top"][bi, zi].item(), start, start + o)


def _predict_open(qa: QASystem, batch) -> list[dict]:
    rd = read_open(qa, [ex.question for ex in batch])
    k, scores, n_pos = rd["k"], rd["scores"], rd["log_p_s"].shape[-1]
    best = rd["total"].flatten(1).argmax(-1).tolist()  # (B,)
    rows = []
    for bi, (ex, row) in enumerate(zip(batch, rd["top"].tolist())):
        zi, pos = divmod(best[bi], n_pos)
        pred = span_at(qa, rd, bi, zi, pos)
        rank = next((r + 1 for r, jj in enumerate(row) if contains_answer(qa.blocks[jj].text, ex.answers, ex.regex)),
                    None)
        rows.append({"id": ex.id, "question": ex.question, "gold": ex.answers, "prediction": pred,
                     "correct": is_correct(pred, ex.answers, ex.regex), "answer_in_top": rank,
                     "retrieved": [{"block": qa.blocks[jj].id, "title": qa.blocks[jj].title,
                                    "score": round(scores[bi, r].item(), 4) if scores is not None else None}
                                   for r, jj in enumerate(row[:k])]})
    return rows


def _predict_closed_book(qa: QASystem, batch) -> list[dict]:
    """For n = 1..max_span masks, the greedy fill and its mean log-probability; the best n wins."""
    n_max, b = qa.cfg.qa_max_span, len(batch)
    questions = [ex.question for ex in batch for _ in range(n_max)]
    lengths = [n for _ in batch for n in range(1, n_max + 1)]
    enc, positions = _closed_book_inputs(qa, questions, lengths, qa.device)
    pos, _ = pad_targets(positions, [[0] * n for n in lengths], device=qa.device)
    logp = qa.model.mlm.token_log_probs(**enc, masked_positions=pos)  # (B*n_max, M, V)
    best_lp, best_id = logp.max(-1)  # (B*n_max, M)
    valid = torch.arange(pos.shape[1], device=qa.device)[None] < torch.tensor(lengths, device=qa.device)[:, None]
    mean_lp = (best_lp * valid).sum(-1) / valid.sum(-1)  # (B*n_max,)
    choice = mean_lp.view(b, n_max).argmax(-1).tolist()  # (B,)
    rows = []
    for bi, ex in enumerate(batch):
        r = bi * n_max + choice[bi]
        pred = qa.tokenizer.decode(best_id[r, :lengths[r]].tolist())
        rows.append({"id": ex.id, "question": ex.question, "gold": ex.answers, "prediction": pred,
                     "correct": is_correct(pred, ex.answers, ex.regex)})
    return rows


@torch.no_grad()
def answer_recall(qa: QASystem, examples, k: int = 5, batch_size: int = 64) -> float:
    """Top-k answer recall: the fraction of questions with an answer-bearing block among the k retrieved, nothing
    read; zero-shot before fine-tuning, as the paper's Table 2 reports it (bench/ablation.py). Notebook 07."""
    if qa.name == "closed-book":
        raise ValueError("closed-book retrieves nothing: it has no answer recall")
    if not examples:
        raise ValueError("no questions to measure answer recall on")
    was_training = qa.model.training
    qa.model.eval()
    hits = 0
    for i in range(0, len(examples), batch_size):
        batch = examples[i:i + batch_size]
        top, _ = retrieve(qa, [ex.question for ex in batch], k)  # (B, k)
        hits += sum(any(contains_answer(qa.blocks[j].text, ex.answers, ex.regex) for j in row)
                    for ex, row in zip(batch, top.tolist()))
    qa.model.train(was_training)
    return hits / len(examples)


def evaluate_qa(qa: QASystem, examples) -> tuple[dict, list[dict]]:
    """(metrics, prediction rows): EM and top-1/top-5 retrieval accuracy over `examples`."""
    rows = predict(qa, examples)
    return {"system": qa.name, **summarize(rows)}, rows
