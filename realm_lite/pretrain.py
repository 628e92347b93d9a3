"""The pre-training run: warm start, then REALM with a refreshed MIPS index (paper 3.3, 3.4). Notebook 06.

    realm-lite pretrain --preset cpu --corpus world --out runs/cpu          # ICT warm start, then REALM
    realm-lite pretrain --preset cpu --corpus world --out runs/cold --no-ict  # the cold-start control
    realm-lite pretrain ... --out runs/cpu --resume                          # continue from the last checkpoint

A run directory holds config.json, tokenizer/, blocks.jsonl (and world/ for the synthetic corpus),
warmstart.pt, checkpoint.pt with index/ckpt-<step>.pt (the index the checkpoint was using), and
metrics.json. Every file is written atomically (write, then rename), so a killed run resumes from
its last checkpoint; with `refresh_mode=sync` a resumed run reaches the same weights as an
uninterrupted one (async refreshes land when the builder finishes, which depends on timing).
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from realm_lite.ict import ict_recall, split_heldout, train_ict
from realm_lite.io import atomic_write_bytes, atomic_write_text
from realm_lite.marginal import marginal_log_likelihood, retrieval_utility, sequence_log_prob
from realm_lite.mips import MipsIndex
from realm_lite.queries import QueryPool
from realm_lite.realm import BlockInputs, Realm, candidate_scores, embed_queries, predict_spans, read, realm_loss
from realm_lite.refresh import IndexRefresher, build_index


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


def autocast(cfg, device: torch.device):
    """bf16 autocast on CUDA (cfg.autocast="auto"), or wherever cfg.autocast="bf16"."""
    on = cfg.autocast == "bf16" or (cfg.autocast == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: Realm, index: MipsIndex, queries, inputs: BlockInputs, cfg, device, reader: bool = True,
             batch_size: int = 32) -> dict:
    """Gold recall@1/@k (source excluded) and, with `reader`, exact masked-span accuracy with retrieval,
    with the null document alone and with the gold block alone, and retrieval utility."""
    was_training = model.training
    model.eval()
    n_search = max(cfg.k - 1, cfg.recall_k)
    sums = {"recall@1": 0, f"recall@{cfg.recall_k}": 0, "acc_retrieval": 0, "acc_null": 0, "acc_gold": 0, "ru": 0.0}
    n_gold = 0
    for i in range(0, len(queries), batch_size):
        qs = queries[i:i + batch_size]
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
            scores = candidate_scores(model, q, torch.tensor([c[1:] for c in cands]), inputs, device).float()  # (B, K)
            tok_logp, tgt = read(model, qs, cands, inputs, device)  # (B, K, M, V), (B, K, M)
        log_p_z = F.log_softmax(scores, -1)  # (B, K)
        targets, valid = tgt[:, 0], tgt[:, 0] != -100  # (B, M)

        def exact(pred):
            return ((pred == targets) | ~valid).all(-1)  # (B,)

        sums["acc_retrieval"] += exact(predict_spans(tok_logp, log_p_z, tgt)).sum().item()
        sums["acc_null"] += exact(tok_logp[:, 0].argmax(-1)).sum().item()
        seq = sequence_log_prob(tok_logp.flatten(0, 1), tgt.flatten(0, 1)).view(len(qs), -1)  # (B, K) log p(y|z,x)
        sums["ru"] += retrieval_utility(marginal_log_likelihood(scores, seq), seq[:, 0]).sum().item()
        with_gold = [(j, min(x.gold)) for j, x in enumerate(qs) if x.gold]
        if with_gold:
            gl, gt = read(model, [qs[j] for j, _ in with_gold], [[g] for _, g in with_gold], inputs, device)
            gv = gt[:, 0] != -100
            sums["acc_gold"] += ((gl[:, 0].argmax(-1) == gt[:, 0]) | ~gv).all(-1).sum().item()
    model.train(was_training)
    n = len(queries)
    out = {"queries": n, "queries_with_gold": n_gold}
    if n_gold:
        out.update({key: round(sums[key] / n_gold, 4) for key in ("recall@1", f"recall@{cfg.recall_k}")})
    if reader and n:
        out.update({key: round(sums[key] / n, 4) for key in ("acc_retrieval", "acc_null", "ru")})
        if n_gold:
            out["acc_gold"] = round(sums["acc_gold"] / n_gold, 4)
    return out


# ---- stage 1: warm starts -----------------------------------------------------------------------
def warm_start(model: Realm, pool: QueryPool, blocks, inputs: BlockInputs, tokenizer, cfg, device, log=print) -> dict:
    """The retriever warm start (cfg.warm_start: ict, salient or none), then the reader warm-up if asked for."""
    from realm_lite.warmstart import train_reader_warmup, train_salient

    result, t0 = {"warm_start": cfg.warm_start}, time.time()
    if cfg.warm_start == "none":
        log("warm start: none (cold start, a randomly initialised retriever)")
    elif cfg.warm_start == "ict":
        train_ids, heldout = split_heldout(blocks, 0.1, cfg.seed)
        history = train_ict(model.retriever, blocks, tokenizer, cfg, device, block_ids=train_ids, log=log)
        result.update(ict_recall(model.retriever, blocks, heldout, tokenizer, cfg, device))
        log(f"ict: held-out recall@1 {result['ict_recall@1']:.3f}  recall@5 {result['ict_recall@5']:.3f} "
            f"over {result['ict_queries']} sentences")
    else:
        history = train_salient(model, pool, blocks, inputs, cfg, device, log=log)
    if cfg.warm_start != "none":
        result.update(retriever_steps=cfg.ict_steps, retriever_seconds=round(time.time() - t0, 1),
                      in_batch_acc=history[-1]["in_batch_acc"] if history else None)
    if cfg.reader_warmup_steps:
        t1 = time.time()
        reader_history = train_reader_warmup(model, pool, blocks, tokenizer, cfg, device, log=log)
        result.update(reader_warmup_steps=cfg.reader_warmup_steps, reader_warmup_seconds=round(time.time() - t1, 1),
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
                resume: bool = False, log=print, stop_after: int | None = None) -> list[dict]:
    """cfg.realm_steps steps of -log p(y|x), the index refreshed every cfg.refresh_every steps; returns the log.

    `stop_after` ends the loop early (after a checkpoint), as a crash would: for tests of resume."""
    run_dir = Path(run_dir)
    _check_something_trains(cfg)
    params = [{"params": model.retriever.parameters(), "lr": cfg.retriever_lr},
              {"params": model.reader.parameters(), "lr": cfg.reader_lr}]
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, cfg.warmup_steps, cfg.realm_steps)
    refresher = IndexRefresher(blocks, tokenizer, cfg, run_dir, mode=cfg.refresh_mode, device=device, log=log)
    rng, history, window, step = random.Random(cfg.seed), [], [], 0  # window: steps since the last log line
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        rng.setstate(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        if ck.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        step, history, window = ck["step"], ck["history"], ck["window"]
        index = MipsIndex.load(run_dir / ck["index_file"], expect_version=ck["index_version"],
                               expect_size=len(blocks), device=device, backend=cfg.index)
        refresher.adopt(index, ck["index_step"])
        log(f"resumed at step {step} (index from step {ck['index_step']})")
    else:
        refresher.request(model.retriever.embed_doc, 0)
    model.train()
    bar = tqdm(total=cfg.realm_steps, initial=step, disable=not cfg.progress, file=sys.stderr, desc="REALM")
    say = bar.write if cfg.progress and log is print else log  # log lines above the bar, not through it
    t0, t_start = time.time(), step
    with contextlib.ExitStack() as cleanup:  # on exit, even by an exception: the bar, the builder, the freezing
        cleanup.callback(bar.close)
        cleanup.callback(refresher.close)
        cleanup.enter_context(freeze_untrained(model, cfg))
        while step < cfg.realm_steps:
            if step % cfg.refresh_every == 0 and step > 0 and cfg.retriever_lr > 0:  # a frozen Embed_doc: never stale
                refresher.request(model.retriever.embed_doc, step)  # snapshot of Embed_doc after `step` updates
            refresher.poll(step)
            queries = pool.sample(rng, cfg.batch_size)
            with autocast(cfg, device):
                out = realm_loss(model, queries, refresher.index, inputs, cfg.k, device)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            window.append({"loss": out["loss"].item(), "token_acc": out["token_acc"], "ru": out["ru"],
                           "gold_hits": out["gold_hits"], "gold_known": out["gold_known"],
                           "staleness": refresher.staleness(step - 1)})
            if step % cfg.log_every == 0 or step == cfg.realm_steps:
                history.append(_summarize(window, step, (step - t_start) / (time.time() - t0), cfg))
                window = []
                r = history[-1]
                say(f"realm step {step:5d}  loss {r['loss']:.3f}  token acc {r['token_acc']:.3f}  "
                    f"RU {r['ru']:+.3f}  gold@{cfg.k - 1} {r['gold_recall']}  staleness {r['staleness']}  "
                    f"{r['steps_per_s']:.2f} steps/s")
            if step % cfg.checkpoint_every == 0 or step == cfg.realm_steps or step == stop_after:
                _checkpoint(model, opt, sched, rng, step, history, window, refresher, run_dir, device)
            if stop_after is not None and step >= stop_after:
                break
    return history


def _summarize(window: list[dict], step: int, steps_per_s: float, cfg) -> dict:
    mean = lambda key: sum(w[key] for w in window) / len(window)  # noqa: E731
    known = sum(w["gold_known"] for w in window)
    return {"step": step, "loss": round(mean("loss"), 4), "token_acc": round(mean("token_acc"), 4),
            "ru": round(mean("ru"), 4), "gold_recall": round(sum(w["gold_hits"] for w in window) / known, 3)
            if known else None, "staleness": max(w["staleness"] for w in window),
            "steps_per_s": round(steps_per_s, 2)}


def _checkpoint(model, opt, sched, rng, step, history, window, refresher, run_dir: Path, device) -> None:
    """The index in use first (its own file), then the checkpoint that names it; older index files go last."""
    index_file = f"index/ckpt-{refresher.index_step}.pt"
    if not (run_dir / index_file).exists():
        refresher.index.save(run_dir / index_file)
    _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
           "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
           "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
           "step": step, "history": history, "window": window, "index_file": index_file, "index_step": refresher.index_step,
           "index_version": refresher.index.version}, run_dir / "checkpoint.pt")
    for old in (run_dir / "index").glob("ckpt-*.pt"):
        if old.name != Path(index_file).name:
            old.unlink(missing_ok=True)


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
        if (out / "checkpoint.pt").exists() or (out / "warmstart.pt").exists():
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


def pretrain(spec: str, cfg, out_dir, resume: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Corpus -> warm start -> REALM -> evaluation; writes everything under `out_dir`, returns metrics."""
    out, t0 = Path(out_dir), time.time()
    if not resume:
        _check_something_trains(cfg)  # before the corpus and warm starts, not after them
    r = setup_run(spec, cfg, out, resume, log)
    cfg, spec, model, pool, blocks, inputs, tokenizer, eval_queries, device = (
        r.cfg, r.spec, r.model, r.pool, r.blocks, r.inputs, r.tokenizer, r.eval_queries, r.device)

    warm_path = out / "warmstart.pt"
    if resume and warm_path.exists():
        saved = torch.load(warm_path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        warm = saved["result"]
        log("warm start: loaded from warmstart.pt")
    else:
        warm = warm_start(model, pool, blocks, inputs, tokenizer, cfg, device, log)
        index = build_index(model.retriever.embed_doc, blocks, tokenizer, cfg, device)
        warm["eval"] = evaluate(model, index, eval_queries, inputs, cfg, device, reader=cfg.reader_warmup_steps > 0)
        _save({"model": model.state_dict(), "result": warm}, warm_path)
    log(f"after warm start: {_fmt(warm['eval'])}")

    t1 = time.time()
    history = train_realm(model, pool, blocks, inputs, tokenizer, cfg, out, device, resume, log, stop_after)
    if stop_after is not None and stop_after < cfg.realm_steps:
        return {"stopped_at": stop_after}
    index = build_index(model.retriever.embed_doc, blocks, tokenizer, cfg, device)
    final = evaluate(model, index, eval_queries, inputs, cfg, device)
    log(f"after REALM: {_fmt(final)}")
    metrics = {"preset": cfg.preset, "corpus": spec, "masking": cfg.masking, "warm_start": cfg.warm_start,
               "device": str(device), "blocks": len(blocks), "realm_steps": cfg.realm_steps,
               "after_warm_start": warm["eval"], "after_realm": final,
               "warm_start_details": {k: v for k, v in warm.items() if k not in ("eval", "history")},
               "realm_seconds": round(time.time() - t1, 1), "total_seconds": round(time.time() - t0, 1),
               "train_log": history[-1] if history else None}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _fmt(m: dict) -> str:
    return "  ".join(f"{k} {v}" for k, v in m.items())


def metrics_table(metrics: dict) -> str:
    """The run's evaluation as a small table: one row after the warm start, one after REALM."""
    cols = [c for c in ("recall@1", "recall@5", "acc_retrieval", "acc_null", "acc_gold", "ru")
            if any(c in metrics[row] for row in ("after_warm_start", "after_realm"))]
    head = f"held-out queries: {metrics['after_realm']['queries']}"
    lines = [f"{head:<38}" + "".join(f"{c:>14}" for c in cols)]
    warm = metrics["warm_start"] + (" + reader" if metrics["warm_start_details"].get("reader_warmup_steps") else "")
    for row, name in (("after_warm_start", f"after warm start ({warm})"), ("after_realm", "after REALM")):
        lines.append(f"{name:<38}" + "".join(f"{metrics[row][c]:>14}" if c in metrics[row] else f"{'-':>14}"
                                             for c in cols))
    return "\n".join(lines)
