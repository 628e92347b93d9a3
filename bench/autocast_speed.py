"""How much faster is bf16 autocast for the `cpu` recipe's training steps on this CPU, and how close are its losses?

    python bench/autocast_speed.py --run runs/cpu        # a `realm-lite pretrain` run with warmstart.pt (about 3 min)

From the run's warm start (its config, corpus and warmstart.pt) it times, in fp32 and under bf16 autocast:
  realm     REALM steps as `train_realm` takes them (the run's reader_lr and retriever_lr, so a frozen reader
            gets no backward pass), against one index built from the warm start;
  warm-up   reader warm-up steps (`train_reader_warmup` with z = own block), the whole step under autocast;
and -log p(y|x) of a few fixed REALM batches in both precisions (same weights, eval mode: no dropout).
A speed measurement only: whether bf16 training reaches the same quality needs a training run.
Writes JSON to --json (default bench/results/autocast_speed-<preset>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.pretrain import autocast, setup_run  # noqa: E402
from realm_lite.realm import realm_loss  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.training import load_checkpoint  # noqa: E402
from realm_lite.warmstart import train_reader_warmup  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # realm_timing, also when loaded by path (tests)
from realm_timing import realm_steps as timed_realm_steps  # noqa: E402

PRECISIONS = {"fp32": "off", "bf16": "bf16"}  # the config key `autocast` that pretrain.autocast reads


def precision(parts, name: str):
    """The library's autocast context for precision `name`."""
    return autocast(parts.cfg.replace(autocast=PRECISIONS[name]), parts.device)


def realm_steps(parts, index, state, steps: int, name: str) -> float:
    """steps/s of `steps` REALM steps (after 2 untimed ones) from `state`, each loss in precision `name`."""
    parts.model.load_state_dict(state)
    return timed_realm_steps(parts.model, parts.cfg, parts.pool, index, parts.inputs, parts.device, steps,
                             ctx=lambda: precision(parts, name))


@torch.no_grad()
def eval_losses(parts, index, state, batches: int, name: str) -> list[float]:
    """-log p(y|x) of `batches` fixed batches from `state`, in eval mode (no dropout), one value per batch."""
    parts.model.load_state_dict(state)
    parts.model.eval()
    rng, out = random.Random(parts.cfg.seed + 1), []
    for _ in range(batches):
        queries = parts.pool.sample(rng, parts.cfg.batch_size)
        with precision(parts, name):
            out.append(realm_loss(parts.model, queries, index, parts.inputs, parts.cfg.k, parts.device)["loss"].item())
    parts.model.train()
    return out


def warmup_steps(parts, state, steps: int, name: str) -> float:
    """steps/s of reader warm-up steps (z = own block) from `state`."""
    parts.model.load_state_dict(state)
    cfg = parts.cfg.replace(reader_warmup_steps=steps, reader_warmup_z="own", log_every=10 ** 9)
    t0 = time.time()
    with precision(parts, name):  # the library's warm-up has no autocast of its own
        train_reader_warmup(parts.model, parts.pool, parts.blocks, parts.tokenizer, cfg, parts.device, log=lambda s: None)
    return steps / (time.time() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a realm-lite pretrain run directory holding warmstart.pt")
    ap.add_argument("--realm-steps", type=int, default=20)
    ap.add_argument("--warmup-steps", type=int, default=150)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    run = Path(args.run)
    if not (run / "warmstart.pt").exists():
        print(f"{run} has no warmstart.pt: run `realm-lite pretrain` first", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    parts = setup_run("world", None, run, resume=True, log=lambda s: None)
    if parts.device.type != "cpu":
        print("this bench measures CPU autocast; the run's device is " + str(parts.device), file=sys.stderr)
        return 2
    state = load_checkpoint(run / "warmstart.pt", "warm start")["model"]
    parts.model.load_state_dict(state)
    index = build_index(parts.model.retriever.embed_doc, parts.blocks, parts.tokenizer, parts.cfg, parts.device)
    rows, losses = [], {p: eval_losses(parts, index, state, 5, p) for p in PRECISIONS}
    for name in PRECISIONS:
        rate = realm_steps(parts, index, state, args.realm_steps, name)
        rows.append({"stage": "realm", "precision": name, "steps": args.realm_steps, "steps_per_s": round(rate, 3)})
        print(rows[-1], flush=True)
        rate = warmup_steps(parts, state, args.warmup_steps, name)
        rows.append({"stage": "reader warm-up", "precision": name, "steps": args.warmup_steps,
                     "steps_per_s": round(rate, 3)})
        print(rows[-1], flush=True)
    diff = sum(abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"])) / len(losses["fp32"])
    speed = {r["stage"]: {} for r in rows}
    for r in rows:
        speed[r["stage"]][r["precision"]] = r["steps_per_s"]
    print(f"{'stage':<16}{'fp32 steps/s':>14}{'bf16 steps/s':>14}{'speed-up':>10}")
    for stage, s in speed.items():
        print(f"{stage:<16}{s['fp32']:>14.2f}{s['bf16']:>14.2f}{s['bf16'] / s['fp32']:>9.2f}x")
    print(f"-log p(y|x) of 5 fixed batches (eval mode): fp32 {[round(v, 3) for v in losses['fp32']]}, "
          f"bf16 {[round(v, 3) for v in losses['bf16']]}; mean |diff| {diff:.4f} nats")
    out = Path(args.json or f"bench/results/autocast_speed-{parts.cfg.preset}.json")
    atomic_write_text(out, json.dumps({"command": " ".join(["python bench/autocast_speed.py"] + (argv or sys.argv[1:])),
                                       "run": str(run), "threads": torch.get_num_threads(), "rows": rows,
                                       "eval_losses": {p: [round(v, 4) for v in vs] for p, vs in losses.items()},
                                       "mean_abs_loss_diff": round(diff, 4)},
                                      indent=2) + "\n")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
