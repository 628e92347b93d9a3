"""What one step of each `cpu` stage costs on this machine, and what dropout, a frozen reader's mode and bf16 change.

    python bench/step_speed.py --run runs/cpu9 --steps 30  # a run's corpus and warm start; about 5 min on 2 cores
    python bench/step_speed.py --preset quick --steps 3    # a fresh corpus and model: a smoke run

From a run's warm start (`--run`: its corpus, tokenizer and config, and its warmstart.pt, curves_state.pt
or `--state`; a warm retriever returns long, relevant blocks, so an untrained model's REALM steps are cheaper
than real ones) or a fresh `--preset` corpus and model, it times:

  index       embedding every block (build_index), embed_bf16 off and on
  salient     a salient warm-start step (batch ict_batch), dropout 0.1 and 0
  reader      an own-block reader warm-up step (batch batch_size), dropout 0.1 and 0
  realm       a REALM step with the reader frozen (reader_lr=0, retriever_lr=1e-4, k as the preset), the frozen
              reader in train mode (dropout 0.1) and in eval mode (freeze_untrained, the `cpu` recipe)

Each rate is over --steps steps: the index after one untimed build, each salient rate after 2 untimed steps,
REALM after 2 untimed steps; the reader warm-up's rate includes its first steps. Prints a table and writes JSON to --json
(default bench/results/step_speed-<preset>-<cpu capability>.json).
Run it alone: a second job on the cores halves every number.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.config import get_config, parse_overrides  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.pretrain import setup_run  # noqa: E402
from realm_lite.realm import Realm  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.training import load_checkpoint  # noqa: E402
from realm_lite.warmstart import train_reader_warmup, train_salient  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # realm_timing, also when loaded by path (tests)
from realm_timing import realm_steps  # noqa: E402


def model_with(parts, cfg, state: dict | None, dropout: float) -> Realm:
    """A fresh Realm at `dropout` holding `state` (dropout has no weights, so any state loads)."""
    torch.manual_seed(cfg.seed)
    model = Realm(cfg.replace(dropout=dropout), len(parts.tokenizer)).to(parts.device)
    if state is not None:
        model.load_state_dict(state)
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--run", default=None, help="a run directory (pretrain, warmup_curves or small_scale)")
    ap.add_argument("--state", default=None, help="a state dict file (default: the run's warmstart.pt or "
                    "curves_state.pt)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    state_file = Path(args.state) if args.state else None
    if args.run and not state_file:
        state_file = next((Path(args.run) / f for f in ("warmstart.pt", "curves_state.pt")
                           if (Path(args.run) / f).exists()), None)
        if state_file is None:
            raise SystemExit(f"--run {args.run}: no warmstart.pt or curves_state.pt in it; pass --state")
    if state_file and not state_file.exists():
        raise SystemExit(f"--state {state_file}: no such file")
    state = load_checkpoint(state_file, "saved state", keys=()) if state_file else None
    state = state.get("model", state) if state else None  # warmstart.pt holds {"model": ..., "result": ...}
    tmp = Path(tempfile.mkdtemp(prefix="step_speed-"))
    try:
        quiet = lambda s: None  # noqa: E731
        if args.run:  # the run's own config, corpus and tokenizer, which the state was trained on
            parts = setup_run("world", None, args.run, resume=True, log=quiet)
        else:
            parts = setup_run("world", get_config(args.preset), tmp / "run", log=quiet)
        cfg = parts.cfg.replace(progress=False, **parse_overrides(args.set))
        dev, n = parts.device, args.steps
        res = {}

        m = model_with(parts, cfg, state, cfg.dropout)
        build_index(m.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg.replace(embed_bf16="off"), dev)  # warm-up
        for bf in ("off", "on"):
            t0 = time.time()
            build_index(m.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg.replace(embed_bf16=bf), dev)
            res[f"index embed_bf16={bf} (s)"] = round(time.time() - t0, 2)

        for d in (0.1, 0.0):
            m = model_with(parts, cfg, state, d)
            train_salient(m, parts.pool, parts.blocks, parts.inputs, cfg, dev, log=quiet, steps=2)  # warm-up, untimed
            # the stages' own rate (their last log line): timed after their setup, over n steps
            hist = train_salient(m, parts.pool, parts.blocks, parts.inputs, cfg, dev, log=quiet, steps=n)
            res[f"salient dropout={d} (steps/s)"] = hist[-1]["steps_per_s"]
            hist = train_reader_warmup(m, parts.pool, parts.blocks, parts.tokenizer,
                                       cfg.replace(reader_warmup_steps=n, reader_warmup_z="own"), dev, log=quiet)
            res[f"reader dropout={d} (steps/s)"] = hist[-1]["steps_per_s"]

        rcfg = cfg.replace(reader_lr=0.0, retriever_lr=1e-4, dropout=0.1)
        m = model_with(parts, rcfg, state, 0.1)
        index = build_index(m.retriever.embed_doc, parts.blocks, parts.tokenizer, rcfg, dev)
        for mode in ("train", "eval"):
            key = f"realm, frozen reader in {mode} mode, k={cfg.k} (steps/s)"
            res[key] = round(realm_steps(m, rcfg, parts.pool, index, parts.inputs, dev, n,
                                         reader_train=mode == "train"), 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cap = torch.backends.cpu.get_cpu_capability()
    print(f"{'what':<52}{'value':>10}   (CPU {cap}, {torch.get_num_threads()} threads, {n} steps)")
    for key, v in res.items():
        print(f"{key:<52}{v:>10}")
    out = Path(args.json or f"bench/results/step_speed-{cfg.preset}-{cap.lower()}.json")
    atomic_write_text(out, json.dumps({
        "command": " ".join(["python bench/step_speed.py"] + (argv if argv is not None else sys.argv[1:])),
        "cpu_capability": cap, "threads": torch.get_num_threads(), "state": str(state_file) if state_file else None,
        "results": res},
        indent=1) + "\n")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
