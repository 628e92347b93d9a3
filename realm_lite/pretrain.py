"""The pre-training run: corpus, warm starts, then REALM with a refreshed MIPS index (paper 3.3, 3.4). Notebook 06.

    realm-lite pretrain --preset cpu --corpus world --out runs/cpu            # the preset's warm starts, then REALM
    realm-lite pretrain --preset cpu --corpus world --out runs/cold --cold-start  # no retriever warm start
    realm-lite pretrain ... --out runs/cpu --resume                            # continue a killed run

The run, stage by stage:
  1. the corpus: the tokenizer and REALM's blocks (realm_lite.corpus), a fresh model seeded by cfg.seed;
  2. the retriever warm start, cfg.warm_start: "salient" (the small presets; realm_lite.warmstart),
     "ict" (the paper's ICT; realm_lite.ict) or "none"; then, with cfg.reader_warmup_steps, the reader
     warm-up; then the index and an evaluation of the warmed-up model;
  3. cfg.realm_steps of REALM, -log p(y|x), the index refreshed every cfg.refresh_every steps;
  4. the final index and evaluation.

A run directory holds
  config.json, corpus.json, tokenizer/, blocks.jsonl (and world/ for the synthetic corpus)  the corpus;
  warmstart-checkpoint.pt  the warm start in progress (every cfg.checkpoint_every steps of its current stage),
                           removed once warmstart.pt is written;
  warmstart.pt             the warmed-up weights, the warm start's results and the random state REALM starts from;
  checkpoint.pt            REALM's weights, optimizer, schedule, random states, step and log, every
                           cfg.checkpoint_every steps, with index/ckpt-<step>.pt, the index it was using;
  log.jsonl                one JSON object a line: every stage's log rows ({"stage": ..., "step": ...})
                           and the evaluations ({"stage": "evaluate", "after": ...});
  metrics.json             the evaluations after the warm start and after REALM.
Checkpoints are written atomically (write, then rename) and hold only tensors, numbers, strings and
containers (realm_lite.training), so `--resume` continues a killed run from its last checkpoint, in a
warm start or in REALM. With `refresh_mode=sync` the resumed run reaches the same weights, bit for bit,
as an uninterrupted one; async refreshes land when the builder finishes, which depends on timing.
"""
from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from realm_lite.distributed import Dist, barrier, data_parallel, global_row, my_share
from realm_lite.ict import ict_recall, split_heldout, train_ict
from realm_lite.io import atomic_write_text, record_command
from realm_lite.marginal import marginal_gain, sequence_log_prob, top_retrieval_utility
from realm_lite.mips import MipsIndex
from realm_lite.queries import QueryPool
from realm_lite.realm import BlockInputs, Realm, candidate_scores, embed_queries, predict_spans, read, realm_loss
from realm_lite.progress import Progress
from realm_lite.refresh import IndexRefresher, build_sharded
from realm_lite.training import (LOOP_KEYS, Checkpoints, Interrupted, Loop, append_log, load_checkpoint,
                                 load_weights, restore_rng, rng_states, save_checkpoint, scalars)

WARM_CHECKPOINT = "warmstart-checkpoint.pt"


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def amp_dtype(cfg, device) -> torch.dtype | None:
    """The REALM stage's and evaluation's autocast dtype. cfg.autocast "auto": bf16 on a CUDA GPU that has it (A100,
    H100), fp16 on one that does not (V100, T4; the REALM loop then scales its loss), none on a CPU; "bf16", "fp16"
    and "off" as named."""
    if cfg.autocast == "auto":
        if torch.device(device).type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[cfg.autocast]


def autocast(cfg, device: torch.device):
    """torch.autocast with `amp_dtype(cfg, device)`, or nothing when that is None."""
    dtype = amp_dtype(cfg, device)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()


# ---- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: Realm, index: MipsIndex, queries, inputs: BlockInputs, cfg, device, reader: bool = True,
             batch_size: int = 32, log=None) -> dict:
    """Gold recall@1/@k (source excluded) and, with `reader`, exact masked-span accuracy with retrieval,
    with the null document alone and with the gold block alone; the retrieval utility RU(z_1) of the best-scored
    block, RU of the gold block (ru_gold) and the marginal gain log p(y|x) - log p(y|∅,x).
    Progress: a bar with cfg.progress, else (with `log`) a line every 10 s."""
    progress = Progress(len(queries), "evaluate", cfg, log, every=10.0)
    try:
        return _evaluate(model, index, queries, inputs, cfg, device, reader, batch_size, progress)
    finally:
        progress.close()


def _evaluate(model, index, queries, inputs, cfg, device, reader, batch_size, progress: Progress) -> dict:
    was_training = model.training
    model.eval()
    n_search = max(cfg.k - 1, cfg.recall_k)
    sums = {"recall@1": 0, f"recall@{cfg.recall_k}": 0, "acc_retrieval": 0, "acc_null": 0, "acc_gold": 0,
            "ru": 0.0, "gain": 0.0, "ru_gold": 0.0}
    n_gold = 0
    for i in range(0, len(queries), batch_size):
        qs = queries[i:i + batch_size]
        progress.update(len(qs))
        with autocast(cfg, device):
            q = embed_queries(model, qs, inputs.pad, device).float()  # (B, D)
        _, top = index.search(q, n_search, exclude=[x.source for x in qs])  # (B, n)
        top = top.cpu().tolist()
        for x, row in zip(qs, top):
            if x.gold is not None:
                sums["recall@1"] += row[0] in x.gold
                sums[f"recall@{cfg.recall_k}"] += bool(set(row[:cfg.recall_k]) & x.gold)
        n_gold += sum(x.gold is not None for x in qs)
        if not reader:
            continue
        cands = [[-1] + row[:cfg.k - 1] for row in top]
        with autocast(cfg, device):
            scores = candidate_scores(model, q, torch.tensor([c[1:] for c in cands]), inputs, device)  # (B, K)
            tok_logp, tgt = read(model, qs, cands, inputs, device)  # (B, K, M, V), (B, K, M)
        log_p_z = F.log_softmax(scores, -1)  # (B, K)
        targets, valid = tgt[:, 0], tgt[:, 0] != -100  # (B, M)

        def exact(pred):
            return ((pred == targets) | ~valid).all(-1)  # (B,)

        sums["acc_retrieval"] += exact(predict_spans(tok_logp, log_p_z, tgt)).sum().item()
        sums["acc_null"] += exact(tok_logp[:, 0].argmax(-1)).sum().item()
        seq = sequence_log_prob(tok_logp.flatten(0, 1), tgt.flatten(0, 1)).view(len(qs), -1)  # (B, K) log p(y|z,x)
        sums["ru"] += top_retrieval_utility(scores, seq).sum().item()
        sums["gain"] += marginal_gain(scores, seq).sum().item()
        with_gold = [(j, min(x.gold)) for j, x in enumerate(qs) if x.gold]
        if with_gold:
            rows = [j for j, _ in with_gold]
            with autocast(cfg, device):  # as the candidates were read, so that RU compares like with like
                gl, gt = read(model, [qs[j] for j in rows], [[g] for _, g in with_gold], inputs, device)
            gv = gt[:, 0] != -100
            sums["acc_gold"] += ((gl[:, 0].argmax(-1) == gt[:, 0]) | ~gv).all(-1).sum().item()
            sums["ru_gold"] += (sequence_log_prob(gl[:, 0], gt[:, 0]) - seq[rows, 0]).sum().item()  # RU(gold)
    model.train(was_training)
    n = len(queries)
    out = {"queries": n, "queries_with_gold": n_gold}
    if n_gold:
        out.update({key: round(sums[key] / n_gold, 4) for key in ("recall@1", f"recall@{cfg.recall_k}")})
    if reader and n:
        out.update({key: round(sums[key] / n, 4) for key in ("acc_retrieval", "acc_null", "ru", "gain")})
        if n_gold:
            out.update({key: round(sums[key] / n_gold, 4) for key in ("acc_gold", "ru_gold")})
    return out


# ---- stage 1: warm starts -----------------------------------------------------------------------
def warm_start(model: Realm, pool: QueryPool, blocks, inputs: BlockInputs, tokenizer, cfg, device, log=print,
               run_dir=None, resume: bool = False, stop_after: tuple[str, int] | None = None,
               dist: Dist | None = None) -> dict:
    """The retriever warm start (cfg.warm_start: ict, salient or none), then the reader warm-up if asked for.

    With `run_dir`, each stage writes log.jsonl rows and checkpoints to warmstart-checkpoint.pt (weights,
    optimizer, random states; every cfg.checkpoint_every steps and at its end); with `resume`, a killed warm
    start continues from that file. `stop_after` = (stage, step) raises Interrupted after that step's
    checkpoint, as a crash would: for tests of resume. With `dist` of N ranks, every stage is data-parallel
    (realm_lite.distributed) and rank 0 writes; the held-out ICT recall is measured on rank 0."""
    from realm_lite.warmstart import train_reader_warmup, train_salient

    dist = dist or Dist(device=torch.device(device))
    result, ck = {"warm_start": cfg.warm_start}, None
    path = Path(run_dir) / WARM_CHECKPOINT if run_dir is not None else None
    if resume and path is not None and path.exists():
        ck = load_checkpoint(path, "warm-start checkpoint", keys=("model", "result", *LOOP_KEYS))
        load_weights(model, ck["model"], path)
        result = ck["result"]
        log(f"warm start: resumed {ck['stage']} at step {ck['step']} from {path.name}")

    def save(state: dict) -> None:  # every stage's checkpoint: its loop, the whole model, the results so far
        save_checkpoint({**state, "model": model.state_dict(), "result": result}, path)

    def checkpoints(stage: str) -> Checkpoints | None:
        return None if path is None else Checkpoints(
            Path(run_dir), save, resume=ck if ck and ck["stage"] == stage else None,
            stop_after=stop_after[1] if stop_after and stop_after[0] == stage else None, writes=dist.main)

    if cfg.warm_start == "none":
        log(f"warm start: none (the towers as {cfg.backbone!r} left them)" if cfg.backbone else
            "warm start: none (cold start, a randomly initialised retriever)")
    elif ck is None or ck["stage"] == cfg.warm_start:  # else the retriever's stage was done before the kill
        if cfg.warm_start == "ict":
            train_ids, heldout = split_heldout(blocks, 0.1, cfg.seed)
            history = train_ict(model.retriever, blocks, tokenizer, cfg, device, block_ids=train_ids, log=log,
                                checkpoints=checkpoints("ict"), dist=dist)
            if dist.main:
                result.update(ict_recall(model.retriever, blocks, heldout, tokenizer, cfg, device))
                log(f"ict: held-out recall@1 {result['ict_recall@1']:.3f}  recall@5 {result['ict_recall@5']:.3f} "
                    f"over {result['ict_queries']} sentences")
        else:
            history = train_salient(model, pool, blocks, inputs, cfg, device, log=log,
                                    checkpoints=checkpoints("salient"), dist=dist)
        result.update(retriever_steps=cfg.ict_steps, retriever_seconds=history[-1]["seconds"] if history else 0.0,
                      in_batch_acc=history[-1]["in_batch_acc"] if history else None)
    if cfg.reader_warmup_steps:
        reader_history = train_reader_warmup(model, pool, blocks, tokenizer, cfg, device, log=log,
                                             checkpoints=checkpoints("reader_warmup"), dist=dist)
        result.update(reader_warmup_steps=cfg.reader_warmup_steps,
                      reader_warmup_seconds=reader_history[-1]["seconds"] if reader_history else 0.0,
                      reader_warmup_exact=reader_history[-1]["exact"] if reader_history else None)
    return result


# ---- stage 2: REALM ----------------------------------------------------------------------------
@contextlib.contextmanager
def freeze_untrained(model: Realm, cfg):
    """Freeze for REALM the modules whose learning rate is 0: no gradients, and eval mode (no dropout).

    A frozen reader makes a step forward-only on the reader side; p(y|z,x) still weighs each z's gradient,
    [p(y|z,x)/p(y|x) - 1] p(z|x) (paper 3.1), as a constant, now without dropout noise (and, with dropout,
    1.17x cheaper on CPU, where attention dropout forces the unfused attention kernel). Restores both on exit."""
    grads = {p: p.requires_grad for p in model.parameters()}
    modes = {m: m.training for m in model.modules()}
    for module, lr in ((model.retriever, cfg.retriever_lr), (model.reader, cfg.reader_lr)):
        if lr == 0:
            module.requires_grad_(False)
            module.eval()
    try:
        yield
    finally:
        for p, flag in grads.items():
            p.requires_grad_(flag)
        for m, flag in modes.items():
            m.train(flag)


def _check_something_trains(cfg) -> None:
    if cfg.reader_lr == 0 and cfg.retriever_lr == 0:
        raise ValueError("reader_lr and retriever_lr are both 0: REALM would train nothing")


def train_realm(model: Realm, pool: QueryPool, blocks, inputs: BlockInputs, tokenizer, cfg, run_dir, device,
                resume: bool = False, log=print, stop_after: int | None = None, dist: Dist | None = None) -> list[dict]:
    """cfg.realm_steps steps of -log p(y|x), the index refreshed every cfg.refresh_every steps; returns the log.

    Checkpoints to run_dir/checkpoint.pt; with `resume`, continues from it. `stop_after` raises Interrupted
    after that step's checkpoint, as a crash would: for tests of resume. With `dist` of N > 1 ranks
    (realm_lite.distributed), each rank takes its share of every global batch of cfg.batch_size queries through
    DistributedDataParallel and holds and refreshes 1/N of the index (a ShardedIndex); rank 0 alone logs and writes
    the checkpoint, each rank its index shard, and a resumed run needs as many ranks."""
    run_dir = Path(run_dir)
    _check_something_trains(cfg)
    dist = dist or Dist(device=torch.device(device))
    if not dist.main:
        log, cfg = (lambda s: None), cfg.replace(progress=False)
    refresher = IndexRefresher(blocks, tokenizer, cfg, run_dir, mode=cfg.refresh_mode, device=device, log=log,
                               dist=dist)
    ckpt_path, ck = run_dir / "checkpoint.pt", None
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, "REALM checkpoint",
                             keys=("model", "scheduler", "index_file", "index_step", "index_version", *LOOP_KEYS[1:]))
        load_weights(model, ck["model"], ckpt_path)
        refresher.resume(ck)
        log(f"resumed at step {ck['step']} (index from step {ck['index_step']})")
    params = [{"params": model.retriever.parameters(), "lr": cfg.retriever_lr},
              {"params": model.reader.parameters(), "lr": cfg.reader_lr}]

    def save(state: dict) -> None:
        _checkpoint(state, model, refresher, run_dir)

    loop = Loop("realm", cfg.realm_steps, params, cfg, weight_decay=cfg.weight_decay, warmup=cfg.warmup_steps,
                clip=cfg.clip_norm, rng=random.Random(cfg.seed), device=device, log=log, desc="REALM",
                summarize=_summarize, checkpoints=Checkpoints(run_dir, save, resume=ck, stop_after=stop_after,
                                                                  writes=dist.main,
                                                                  every_rank=refresher.save_for_checkpoint),
                scale_loss=amp_dtype(cfg, device) == torch.float16)  # fp16 gradients underflow unscaled
    if ck is None:
        refresher.request(model.retriever.embed_doc, 0)
    model.train()
    with contextlib.ExitStack() as cleanup:  # on exit, even by an exception: the builder, the freezing
        cleanup.callback(refresher.close)
        cleanup.enter_context(freeze_untrained(model, cfg))
        step_loss = data_parallel(model, realm_loss, dist)  # after freezing: DDP keeps what trains
        for step in loop:
            done = step - 1  # updates so far
            if done % cfg.refresh_every == 0 and done > 0 and cfg.retriever_lr > 0:  # a frozen Embed_doc: never stale
                refresher.request(model.retriever.embed_doc, done)  # snapshot of Embed_doc after `done` updates
            refresher.poll(done)
            queries, share = my_share(pool.sample(loop.rng, cfg.batch_size), dist)  # the same draw on every rank
            with autocast(cfg, device):
                out = step_loss(queries, refresher.index, inputs, cfg.k, device)
            loop.opt.zero_grad(set_to_none=True)
            loop.backward(out["loss"] * (dist.world * share))  # DDP averages: the global batch's mean gradient
            loop.step()
            loop.record(**global_row(scalars(out), share, dist, sums=("gold_hits", "gold_known")),
                        staleness=refresher.staleness(done))
    return loop.history


def _summarize(window: list[dict]) -> dict:
    """The mean of each number realm_loss reports; gold recall over the queries with a known gold block; the
    largest staleness."""
    pooled = ("gold_hits", "gold_known", "staleness")
    row = {k: round(sum(w[k] for w in window) / len(window), 4) for k in window[0] if k not in pooled}
    known = sum(w.get("gold_known", 0) for w in window)
    row["gold_recall"] = round(sum(w.get("gold_hits", 0) for w in window) / known, 3) if known else None
    row["staleness"] = max(w["staleness"] for w in window)
    return row


def _checkpoint(state: dict, model: Realm, refresher: IndexRefresher, run_dir: Path) -> None:
    """The checkpoint that names the index in use (written before it by every rank: refresher.save_for_checkpoint);
    older index files go last."""
    save_checkpoint({**state, "model": model.state_dict(), **refresher.checkpoint_fields()}, run_dir / "checkpoint.pt")
    refresher.forget_older()


# ---- the whole run -----------------------------------------------------------------------------
def load_run(run_dir):
    """(config, blocks, tokenizer, world or None) of an existing run directory."""
    from realm_lite.config import Config
    from realm_lite.corpus import load_blocks
    from realm_lite.tokenizer import load_tokenizer
    from realm_lite.world import World

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "blocks.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} is not a realm-lite run (config.json or blocks.jsonl missing)")
    cfg = Config.load(run_dir)
    world = World.load(run_dir / "world") if (run_dir / "world").exists() else None
    return cfg, load_blocks(run_dir / "blocks.jsonl"), load_tokenizer(run_dir / "tokenizer"), world


@dataclass
class RunParts:
    """What every stage of a run works on: the model, its corpus and the held-out queries."""

    cfg: object
    spec: str
    model: Realm
    pool: QueryPool
    blocks: list
    inputs: BlockInputs
    tokenizer: object
    eval_queries: list
    device: torch.device


def setup_run(spec: str, cfg, out_dir, resume: bool = False, log=print) -> RunParts:
    """Prepare (or, with `resume`, reload) the corpus under `out_dir` and build a fresh model seeded by cfg.seed."""
    from realm_lite.corpus import check_corpus_size, prepare_corpus

    out = Path(out_dir)
    if resume:
        cfg, blocks, tokenizer, world = load_run(out)  # the saved tokenizer: retraining WordPiece is not exact
        if (out / "corpus.json").exists():
            spec = json.loads((out / "corpus.json").read_text()).get("corpus", spec)
        log(f"resuming {out} (config, tokenizer and blocks from the run)")
        device = resolve_device(cfg.device)
    else:
        if any((out / name).exists() for name in ("checkpoint.pt", "warmstart.pt", WARM_CHECKPOINT)):
            raise FileExistsError(f"{out} already holds a pre-training run; pass --resume to continue it, "
                                  f"or choose another --out")
        device = resolve_device(cfg.device)  # a missing GPU is an error before the corpus is prepared
        prepared = prepare_corpus(spec, cfg, out)
        blocks, tokenizer, world = prepared.blocks, prepared.tokenizer, prepared.world
    check_corpus_size(cfg, len(blocks), spec)  # k and recall_k fit the corpus, before any training
    torch.manual_seed(cfg.seed)
    model = Realm(cfg, len(tokenizer)).to(device)
    pool = QueryPool(blocks, tokenizer, cfg, world)
    inputs = BlockInputs(blocks, tokenizer, cfg.block_len)
    eval_queries = pool.evaluation(cfg.eval_queries)
    log(f"corpus: {len(blocks)} blocks, {len(pool.train)} training sentences, {len(eval_queries)} held-out "
        f"queries; device {device}")
    return RunParts(cfg, spec, model, pool, blocks, inputs, tokenizer, eval_queries, device)


def pretrain(spec: str, cfg, out_dir, resume: bool = False, log=print,
             stop_after: int | tuple[str, int] | None = None, command: str | None = None,
             dist: Dist | None = None) -> dict:
    """Corpus -> warm start -> REALM -> evaluation; writes everything under `out_dir`, returns metrics.

    `command` (the CLI's command line) goes into out_dir/commands.jsonl once the run is set up: bad input
    leaves nothing behind.

    `stop_after` ends the run early, as a crash would, for tests of resume: n = after REALM step n's
    checkpoint; (stage, n) = after step n of "ict", "salient" or "reader_warmup", or ("realm", 0) = once
    warmstart.pt is written. Returns {"stopped_at": stop_after} then.

    Under torchrun (`dist` of N > 1 ranks): rank 0 prepares the corpus while the others wait, then they load it;
    the warm starts and REALM are data-parallel, REALM's index sharded (train_realm); every rank embeds its shard
    for the evaluations, rank 0 reports and writes. The others return {}."""
    out, t0 = Path(out_dir), time.time()
    dist = dist or Dist()
    if not resume:
        _check_something_trains(cfg)  # before the corpus and warm starts, not after them
    if not dist.main:
        log = lambda s: None  # noqa: E731
    stop = ("realm", stop_after) if isinstance(stop_after, int) else stop_after
    if dist.main:
        r = setup_run(spec, cfg, out, resume, log)
        record_command(out, command)
    barrier(dist)
    if not dist.main:  # the corpus rank 0 prepared, and this rank's device
        r = setup_run(spec, cfg, out, resume=True, log=log)
        r.cfg, r.device = r.cfg.replace(device=str(dist.device), progress=False), dist.device  # rank 0 shows progress
        r.model.to(dist.device)
    cfg, spec, model, pool, blocks, inputs, tokenizer, eval_queries, device = (
        r.cfg, r.spec, r.model, r.pool, r.blocks, r.inputs, r.tokenizer, r.eval_queries, r.device)
    try:
        warm = _warm_start_once(r, out, resume, log, stop, dist)
        if stop == ("realm", 0):
            raise Interrupted("stopped before REALM")
        history = train_realm(model, pool, blocks, inputs, tokenizer, cfg, out, device, resume, log,
                              stop[1] if stop and stop[0] == "realm" else None, dist=dist)
    except Interrupted:
        return {"stopped_at": stop_after}
    index = build_sharded(model.retriever.embed_doc, blocks, tokenizer, cfg, device, dist)  # searched together
    final = evaluate(model, index, eval_queries, inputs, cfg, device, log=log)
    if not dist.main:
        return {}
    append_log(out, {"stage": "evaluate", "after": "REALM", **final})
    log(f"after REALM: {_fmt(final)}")
    metrics = {"preset": cfg.preset, "corpus": spec, "masking": cfg.masking, "warm_start": cfg.warm_start,
               "device": str(device), "blocks": len(blocks), "realm_steps": cfg.realm_steps,
               "after_warm_start": warm["eval"], "after_realm": final,
               "warm_start_details": {k: v for k, v in warm.items() if k not in ("eval", "history")},
               "realm_seconds": history[-1]["seconds"] if history else 0.0,
               "total_seconds": round(time.time() - t0, 1), "train_log": history[-1] if history else None}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _warm_start_once(r: RunParts, out: Path, resume: bool, log, stop, dist: Dist) -> dict:
    """warmstart.pt's results, loaded (and its random state restored: REALM starts from the state the warm
    start left), or the warm start run (resumed from warmstart-checkpoint.pt), evaluated and saved (by rank 0)."""
    warm_path = out / "warmstart.pt"
    if resume and warm_path.exists():
        saved = load_checkpoint(warm_path, "warm start", keys=("model", "result"))
        load_weights(r.model, saved["model"], warm_path)
        restore_rng(saved, r.device)
        log(f"warm start: loaded from warmstart.pt; after it: {_fmt(saved['result']['eval'])}")
        return saved["result"]
    warm = warm_start(r.model, r.pool, r.blocks, r.inputs, r.tokenizer, r.cfg, r.device, log, run_dir=out,
                      resume=resume, stop_after=stop, dist=dist)
    index = build_sharded(r.model.retriever.embed_doc, r.blocks, r.tokenizer, r.cfg, r.device, dist)
    warm["eval"] = evaluate(r.model, index, r.eval_queries, r.inputs, r.cfg, r.device,
                            reader=r.cfg.reader_warmup_steps > 0, log=log)
    if dist.main:
        save_checkpoint({"model": r.model.state_dict(), "result": warm, **rng_states(r.device)}, warm_path)
        (out / WARM_CHECKPOINT).unlink(missing_ok=True)
        append_log(out, {"stage": "evaluate", "after": "warm start", **warm["eval"]})
        log(f"after warm start: {_fmt(warm['eval'])}")
    barrier(dist)  # warmstart.pt written before any rank goes on (a resume finds it)
    return warm


def _fmt(m: dict) -> str:
    return "  ".join(f"{k} {v}" for k, v in m.items())


def metrics_table(metrics: dict) -> str:
    """The run's evaluation as a small table: one row after the warm start, one after REALM."""
    cols = [c for c in ("recall@1", "recall@5", "acc_retrieval", "acc_null", "acc_gold", "ru", "gain")
            if any(c in metrics[row] for row in ("after_warm_start", "after_realm"))]
    head = f"held-out queries: {metrics['after_realm']['queries']}"
    lines = [f"{head:<38}" + "".join(f"{c:>14}" for c in cols)]
    warm = metrics["warm_start"] + (" + reader" if metrics["warm_start_details"].get("reader_warmup_steps") else "")
    for row, name in (("after_warm_start", f"after warm start ({warm})"), ("after_realm", "after REALM")):
        lines.append(f"{name:<38}" + "".join(f"{metrics[row][c]:>14}" if c in metrics[row] else f"{'-':>14}"
                                             for c in cols))
    return "\n".join(lines)
