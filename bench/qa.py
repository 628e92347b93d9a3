"""Open-domain QA: REALM against ICT-only (ORQA), BM25 and closed-book, on the same questions.

    python bench/qa.py --corpus world --preset cpu --init runs/cpu   # the synthetic world's test questions
    python bench/qa.py --corpus squad --preset cpu                   # SQuAD-open: held-out part-A articles
    python bench/qa.py --corpus world --preset quick                 # a smoke run (about a minute)

Pre-trains on the corpus with the preset (or starts from --init, a finished `realm-lite pretrain` run),
then fine-tunes every system with the same query-side recipe and evaluates it on the test split:
EM and top-1/top-5 retrieval accuracy (an answer in one of the top k blocks). On the world it also runs
the knowledge update (`--update-facts` facts changed, their blocks re-embedded, no retraining).

Results go to bench/results/qa-<corpus>-<preset>.json; finished systems are reused on a second call.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from common import machine  # noqa: E402
from realm_lite.config import get_config, parse_overrides  # noqa: E402
from realm_lite.finetune import compare_systems, qa_table  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.pretrain import pretrain, resolve_device  # noqa: E402
from realm_lite.qa import SYSTEMS  # noqa: E402


def markdown(results: dict) -> str:
    """The results table in Markdown (for docs/results.md): one row per system."""
    rows = results["systems"]
    cols = [k for k in ("em", "top1", "top5", "update_new", "update_old") if any(k in r for r in rows)]
    names = {"em": "EM", "top1": "top-1", "top5": "top-5", "update_new": "update: new value",
             "update_old": "update: old value"}
    lines = ["| system | questions | " + " | ".join(names[c] for c in cols) + " | fine-tuning s |",
             "|---" * (len(cols) + 3) + "|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['questions']} | " +
                     " | ".join(f"{r[c]:.3f}" if c in r else "–" for c in cols) + f" | {r.get('finetune_seconds')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="world", choices=["world", "squad"])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--init", help="a finished pre-training run to start from (default: pre-train one under --runs)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (pre-training and QA)")
    ap.add_argument("--update-facts", type=int, default=100, help="facts changed in the knowledge update (world)")
    ap.add_argument("--runs", default="runs/bench-qa")
    ap.add_argument("--out", help="results JSON (default bench/results/qa-<corpus>-<preset>.json)")
    ap.add_argument("--markdown", action="store_true", help="only print the table of --out in Markdown, run nothing")
    args = ap.parse_args(argv)

    out_json = Path(args.out or f"bench/results/qa-{args.corpus}-{args.preset}.json")
    if args.markdown:
        print(markdown(json.loads(out_json.read_text())) if out_json.exists() else f"no results in {out_json}")
        return 0
    overrides = parse_overrides(args.set)
    cfg = get_config(args.preset, **overrides)
    runs = Path(args.runs) / f"{args.corpus}-{args.preset}"
    t0 = time.time()
    init = Path(args.init) if args.init else runs / "pre"
    if not (init / "metrics.json").exists():
        if args.init:
            print(f"{init} is not a finished pre-training run (no metrics.json)", file=sys.stderr)
            return 2
        pretrain(args.corpus, cfg, init, resume=(init / "checkpoint.pt").exists())
    pre = json.loads((init / "metrics.json").read_text())
    qa_overrides = {k: v for k, v in overrides.items() if k.startswith("qa_")}
    dataset = "world" if args.corpus == "world" else "squad"
    results = compare_systems(init, dataset, runs / "qa", args.systems, "test", qa_overrides or None,
                              update_facts=args.update_facts if args.corpus == "world" else 0)
    report = {"command": " ".join(["python bench/qa.py"] + (argv if argv is not None else sys.argv[1:])),
              "corpus": args.corpus, "preset": args.preset, "overrides": overrides, "init": str(init),
              "pretrain_after_realm": pre.get("after_realm"), "systems": results,
              "seconds": round(time.time() - t0, 1), "machine": machine(resolve_device(cfg.device))}
    atomic_write_text(out_json, json.dumps(report, indent=2) + "\n")
    print(qa_table(results))
    print(f"results written to {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
