"""Warm-start learning curves (docs/small-scale-recipe.md): retriever recall and reader copying, evaluated per chunk.

    python bench/warmup_curves.py --preset cpu --out runs/curves              # 20-30 min on 2 cores
    python bench/warmup_curves.py --preset quick --out runs/curves-quick \\
        --salient-chunks 1 --own-chunks 1 --mixed-chunks 1 --chunk 20         # a smoke run

The salient warm start runs in chunks of cfg.ict_steps (800 unless --set ict_steps=N), each followed by gold
recall on every held-out query; the reader warm-up runs `--own-chunks` chunks of `--chunk` own-block steps,
then `--mixed-chunks` chunks of mixed (half evidence-block) steps, each followed by acc_gold on every fourth
held-out query, split by whether the answer is the gold block's title. Each chunk is one library call (a fresh optimizer and sampling seed).
Each row's "t" is seconds since the start, evaluations included; "train_s" counts the training alone.
Writes JSON to --json (default bench/results/warmup_curves-<preset>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.config import get_config, parse_overrides  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.pretrain import evaluate, setup_run  # noqa: E402
from realm_lite.realm import read  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.warmstart import train_reader_warmup, train_salient  # noqa: E402


@torch.no_grad()
def gold_accuracy(parts, queries) -> dict:
    """Exact span accuracy when handed the gold block, for answers that are its title and for the rest."""
    model, blocks = parts.model, parts.blocks
    model.eval()
    hit = {True: [0, 0], False: [0, 0]}
    for i in range(0, len(queries), 32):
        qs = queries[i:i + 32]
        logp, tgt = read(model, qs, [[min(q.gold)] for q in qs], parts.inputs, parts.device)
        ok = ((logp[:, 0].argmax(-1) == tgt[:, 0]) | (tgt[:, 0] == -100)).all(-1).tolist()
        for q, o in zip(qs, ok):
            y = q.example.text[q.example.span[0]:q.example.span[1]].lower()
            h = hit[y == blocks[min(q.gold)].title.lower()]
            h[0] += o
            h[1] += 1
    model.train()
    rate = lambda h: round(h[0] / h[1], 3) if h[1] else None  # noqa: E731
    return {"title": rate(hit[True]), "n_title": hit[True][1], "other": rate(hit[False]), "n_other": hit[False][1],
            "all": round((hit[True][0] + hit[False][0]) / max(1, len(queries)), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True, help="run directory (corpus, tokenizer, final weights)")
    ap.add_argument("--salient-chunks", type=int, default=3)
    ap.add_argument("--own-chunks", type=int, default=6)
    ap.add_argument("--mixed-chunks", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1000, help="reader warm-up steps per chunk")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cfg = get_config(args.preset, **{"ict_steps": 800, **parse_overrides(args.set)})
    parts = setup_run("world", cfg, args.out)
    model, dev, ev = parts.model, parts.device, parts.eval_queries
    sub = [q for q in ev[::4] if q.gold]
    log, t0, train_s = [], time.time(), 0.0
    for c in range(args.salient_chunks):
        t1 = time.time()
        train_salient(model, parts.pool, parts.blocks, parts.inputs, cfg, dev, log=lambda s: None, seed=cfg.seed + 100 * c)
        train_s += time.time() - t1
        index = build_index(model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, dev)
        log.append({"stage": "salient", "steps": (c + 1) * cfg.ict_steps,
                    **evaluate(model, index, ev, parts.inputs, cfg, dev, reader=False), "t": round(time.time() - t0),
                    "train_s": round(train_s)})
        print(log[-1], flush=True)
    for z, chunks, offset in (("own", args.own_chunks, 0), ("mixed", args.mixed_chunks, 1000)):
        for c in range(chunks):
            c_cfg = cfg.replace(seed=cfg.seed + offset + 100 * c, reader_warmup_z=z, reader_warmup_steps=args.chunk)
            t1 = time.time()
            train_reader_warmup(model, parts.pool, parts.blocks, parts.tokenizer, c_cfg, dev, log=lambda s: None)
            train_s += time.time() - t1
            log.append({"stage": z, "steps": (c + 1) * args.chunk, **gold_accuracy(parts, sub),
                        "t": round(time.time() - t0), "train_s": round(train_s)})
            print(log[-1], flush=True)
    index = build_index(model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, dev)
    log.append({"stage": "final", **evaluate(model, index, ev, parts.inputs, cfg, dev), "t": round(time.time() - t0),
                "train_s": round(train_s)})
    print(log[-1], flush=True)
    torch.save(model.state_dict(), Path(args.out) / "curves_state.pt")
    out = Path(args.json or f"bench/results/warmup_curves-{args.preset}.json")
    atomic_write_text(out, json.dumps({"command": " ".join(["python bench/warmup_curves.py"] + (argv or sys.argv[1:])),
                                       "log": log}, indent=1) + "\n")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
