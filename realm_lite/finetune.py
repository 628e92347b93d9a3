"""Fine-tuning a QA system, its run directory, and the command-line flow (paper 3.4, 4.2). Notebook 07.

    realm-lite finetune --init runs/cpu --system realm --dataset world --out runs/cpu-qa/realm
    realm-lite evaluate --model runs/cpu-qa/realm --dataset world --split test

A QA run directory holds
  config.json, qa.json     the config; the system, the pre-training run it starts from, the data set;
  checkpoint.pt            weights, optimizer, schedule, random states, step and log (realm_lite.training),
                           written atomically every `checkpoint_every` steps, so `--resume` continues a killed run;
  index.pt                 the frozen Embed_doc index, stamped with Embed_doc's version (retrieval systems);
  log.jsonl                the fine-tuning log, one JSON object a line ({"stage": "qa", "step": ...});
  predictions-<split>.jsonl, metrics-<split>.json   after `evaluate`.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from realm_lite.distributed import Dist, ShardedIndex, barrier, data_parallel, global_row, my_share
from realm_lite.io import atomic_write_text, record_command, write_jsonl
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.qa import QAModel, QASystem, attach_retrieval, evaluate_qa, qa_loss, system_from_run
from realm_lite.training import (Checkpoints, Interrupted, Loop, load_checkpoint, load_weights, save_checkpoint,
                                 scalars)


def finetune(qa: QASystem, examples, out_dir, resume: bool = False, log=print, stop_after: int | None = None,
             dist: Dist | None = None) -> list[dict]:
    """cfg.qa_steps steps of the QA loss on `examples` (batches drawn with cfg.seed); returns the log.
    `stop_after` ends early with a checkpoint (to test that `resume` reaches the uninterrupted result). With
    `dist` of N > 1 ranks, each rank takes its share of every global batch of cfg.qa_batch questions through
    DistributedDataParallel (realm_lite.distributed); rank 0 alone logs and writes."""
    cfg, out = qa.cfg, Path(out_dir)
    if not examples:
        raise ValueError("no training questions: the data set or split is empty")
    dist = dist or Dist(device=qa.device)
    if not dist.main:
        log, cfg = (lambda s: None), cfg.replace(progress=False)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    ck = load_checkpoint(ckpt, "QA checkpoint", keys=("model", "step")) if resume and ckpt.exists() else {}
    if "optimizer" in ck:  # a training checkpoint (the step-0 file written by save_system has none)
        load_weights(qa.model, ck["model"], ckpt)
        log(f"resumed fine-tuning at step {ck['step']}")
    else:
        ck = None
        whole = qa.index.gathered() if isinstance(qa.index, ShardedIndex) else qa.index  # the shards, on rank 0
        if dist.main:
            save_system(qa, out, whole)  # config, qa.json, index: a run directory from the first step on

    def save(state: dict) -> None:
        save_checkpoint({**state, "model": qa.model.state_dict(), "system": qa.name}, ckpt)

    from realm_lite.pretrain import amp_dtype, autocast

    groups = qa.model.trainable(cfg)
    loop = Loop("qa", cfg.qa_steps, groups, cfg, weight_decay=cfg.weight_decay,
                warmup=cfg.qa_warmup_steps, clip=cfg.clip_norm, rng=random.Random(cfg.seed), device=qa.device,
                log=log, desc=f"QA {qa.name}",
                checkpoints=Checkpoints(out, save, resume=ck, stop_after=stop_after, writes=dist.main),
                scale_loss=amp_dtype(cfg, qa.device) == torch.float16)  # fp16 gradients underflow unscaled
    trained = {id(p) for g in groups for p in g["params"]}
    frozen = [p for p in qa.model.parameters() if id(p) not in trained and p.requires_grad]  # Embed_doc: the index's
    qa.model.train()
    try:
        for p in frozen:  # no gradient: DistributedDataParallel then expects none
            p.requires_grad_(False)
        step_loss = data_parallel(qa.model, lambda model, batch: qa_loss(qa, batch), dist)
        for _ in loop:
            batch, share = my_share([examples[loop.rng.randrange(len(examples))] for _ in range(cfg.qa_batch)], dist)
            with autocast(cfg, qa.device):  # cfg.autocast: "auto" is bf16 (fp16) on a GPU, fp32 on a CPU
                out_ = step_loss(batch)
            loop.opt.zero_grad(set_to_none=True)
            loop.backward(out_["loss"] * (dist.world * share))  # DDP averages: the global batch's mean gradient
            loop.step()
            loop.record(**global_row(scalars(out_), share, dist))
    except Interrupted:
        pass
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return loop.history


# ---- the QA run directory ----------------------------------------------------------------------------
def save_system(qa: QASystem, out_dir, index: MipsIndex | None = None) -> None:
    """config.json, qa.json and (neural retrievers) the frozen index (`index`, else the system's own); weights go in
    checkpoint.pt."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qa.cfg.save(out)
    atomic_write_text(out / "qa.json", json.dumps({"system": qa.name, **qa.info}, indent=2) + "\n")
    index = index if index is not None else qa.index
    if index is not None:
        index.save(out / "index.pt")
    save_checkpoint({"model": qa.model.state_dict(), "step": 0, "system": qa.name}, out / "checkpoint.pt")


def load_system(qa_dir, log=print, dist: Dist | None = None) -> QASystem:
    """A fine-tuned (or freshly initialised) QA system from its directory and its pre-training run; on N ranks
    (`dist`) each keeps its shard of the index."""
    from realm_lite.config import Config
    from realm_lite.pretrain import load_run, resolve_device

    qa_dir = Path(qa_dir)
    if not (qa_dir / "qa.json").exists() or not (qa_dir / "checkpoint.pt").exists():
        raise FileNotFoundError(f"{qa_dir} is not a realm-lite QA run (qa.json or checkpoint.pt missing); "
                                f"run `realm-lite finetune --out {qa_dir}` first")
    meta = json.loads((qa_dir / "qa.json").read_text())
    cfg = Config.load(qa_dir)
    _, blocks, tokenizer, world = load_run(meta["init"])
    device = resolve_device(cfg.device)
    model = QAModel(meta["system"], cfg, len(tokenizer))
    ck = load_checkpoint(qa_dir / "checkpoint.pt", "QA checkpoint", keys=("model", "step"))
    load_weights(model, ck["model"], qa_dir / "checkpoint.pt")
    model.to(device)
    qa = QASystem(meta["system"], cfg, model, blocks, tokenizer, device, world=world, info=meta)
    index = None
    if model.embed_doc is not None:
        index = MipsIndex.load(qa_dir / "index.pt", expect_version=fingerprint(model.embed_doc),
                               expect_size=len(blocks), device=device, backend=cfg.index)
    attach_retrieval(qa, index, dist)
    log(f"loaded {meta['system']} QA system from {qa_dir} (step {ck['step']}; corpus {meta['init']})")
    return qa


def run_finetune(init_run, system: str, dataset: str, out_dir, overrides=None, resume: bool = False,
                 log=print, command: str | None = None, dist: Dist | None = None) -> QASystem:
    """`realm-lite finetune`: build (or reload, with `resume`) a system and fine-tune it on the train split;
    `command` goes into out_dir/commands.jsonl once the system and its questions load. Under torchrun (`dist` of
    several ranks) every rank builds the same system, holds 1/N of its index and takes its share of each batch;
    rank 0 writes."""
    from realm_lite.qa_data import load_qa

    dist = dist or Dist()
    if not dist.main:
        log = lambda s: None  # noqa: E731
    out = Path(out_dir)
    if resume and not (out / "qa.json").exists():
        raise FileNotFoundError(f"{out} is not a realm-lite QA run (no qa.json): nothing to resume; "
                                f"drop --resume to start one")
    if not resume and (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a QA run; pass --resume to continue it, or choose another --out")
    barrier(dist)  # every rank has looked before rank 0 writes
    if resume:
        qa = load_system(out, log, dist)
        dataset = qa.info.get("dataset", dataset)
    else:
        qa = system_from_run(init_run, system, overrides, log, dist)
        qa.info["dataset"] = dataset
    train = load_qa(dataset, "train", world=qa.world, cfg=qa.cfg)
    log(f"fine-tuning {qa.name} on {len(train)} {dataset} questions: {qa.cfg.qa_steps} steps of "
        f"{qa.cfg.qa_batch}, retrieve {qa.cfg.qa_retrieve}, read {qa.cfg.qa_read}")
    if dist.main:
        record_command(out, command)
    t0 = time.time()
    finetune(qa, train, out, resume=resume, log=log, dist=dist)
    qa.info["finetune_seconds"] = round(time.time() - t0, 1)
    if dist.main:
        atomic_write_text(out / "qa.json", json.dumps({"system": qa.name, **qa.info}, indent=2) + "\n")
    return qa


def run_evaluate(qa: QASystem, dataset: str, split: str, out_dir) -> dict:
    """`realm-lite evaluate`: predictions-<split>.jsonl and metrics-<split>.json in `out_dir`."""
    from realm_lite.qa_data import load_qa

    examples = load_qa(dataset, split, world=qa.world, cfg=qa.cfg)
    if not examples:
        raise ValueError(f"no {split} questions in {dataset}")
    t0 = time.time()
    metrics, rows = evaluate_qa(qa, examples)
    metrics.update(dataset=dataset, split=split, seconds=round(time.time() - t0, 1))
    out = Path(out_dir)
    write_jsonl(out / f"predictions-{split}.jsonl", rows)
    atomic_write_text(out / f"metrics-{split}.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def compare_systems(init_run, dataset: str, out_dir, systems=None, split: str = "test", overrides=None,
                    update_facts: int = 0, log=print) -> list[dict]:
    """Fine-tune and evaluate each system on the same questions (out_dir/<system>/); with `update_facts`, also the
    knowledge update on each retrieval system (world only). Runs already finished in out_dir are reused."""
    from realm_lite.qa import SYSTEMS

    results = []
    for system in systems or SYSTEMS:
        d = Path(out_dir) / system
        t0 = time.time()
        # run_finetune records finetune_seconds in qa.json only once the run has finished
        done = (d / "qa.json").exists() and "finetune_seconds" in json.loads((d / "qa.json").read_text())
        qa = load_system(d, log) if done else run_finetune(init_run, system, dataset, d, overrides,
                                                           resume=(d / "checkpoint.pt").exists(), log=log)
        metrics = run_evaluate(qa, dataset, split, d)
        metrics["finetune_seconds"] = qa.info.get("finetune_seconds")
        if update_facts and system != "closed-book":
            from realm_lite.qa_data import load_qa
            from realm_lite.update import knowledge_update

            report = knowledge_update(qa, load_qa(dataset, split, world=qa.world, cfg=qa.cfg), update_facts,
                                      seed=qa.cfg.seed, log=log)
            atomic_write_text(d / "knowledge-update.json", json.dumps(report, indent=2) + "\n")
            metrics.update(update_new=report["new_value_returned"], update_old=report["old_value_after"])
        metrics["seconds"] = round(time.time() - t0, 1)
        log(f"{system}: {metrics}")
        results.append(metrics)
    return results


def qa_table(results: list[dict]) -> str:
    """One line per system: EM, top-1/top-5 retrieval accuracy and, where run, the knowledge update."""
    cols = [("em", "EM"), ("top1", "top-1"), ("top5", "top-5"), ("update_new", "new value"), ("update_old", "old value")]
    cols = [(k, name) for k, name in cols if any(k in r for r in results)]
    head = f"{'system':<12}{'questions':>10}" + "".join(f"{name:>11}" for _, name in cols)
    lines = [head]
    for r in results:
        lines.append(f"{r['system']:<12}{r['questions']:>10}" +
                     "".join(f"{r[k]:>11.3f}" if k in r else f"{'-':>11}" for k, _ in cols))
    return "\n".join(lines)
