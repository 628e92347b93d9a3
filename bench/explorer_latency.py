"""How long the explorer takes to answer with the shipped model here: loading, one query of each kind, a fact edit.

    python bench/explorer_latency.py                  # world-cpu, 100 queries of each kind; about a minute on 2 cores
    python bench/explorer_latency.py --n 10           # a smoke run

It times realm_lite.explain as the explorer calls it (the widgets add only HTML):

  load          load_pretrained (REALM weights, blocks, a fresh index) and load_qa("realm")
  held-out      explain_masked on a held-out sentence (its source block excluded), k = the model's
  typed [MASK]  explain_masked on the same sentences typed with one [MASK]: fill lengths 1-5 read together
  question      explain_question on a test question (the system's blocks read)
  fact edit     edit_fact on the QA system: one birthplace changed, its documents re-blocked and re-embedded
  compare       Explorer.run with two models side by side on a typed sentence (the Ask button)

Each query time is the median and the 90th percentile over --n queries after 3 untimed ones. Prints a table and
writes JSON to --json (default bench/results/explorer_latency-<cpu capability>.json). Run it alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.explain import edit_fact, explain_masked, explain_question  # noqa: E402
from realm_lite.export import load_pretrained, load_qa  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.qa_data import load_qa as load_questions  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, also when loaded by path
from common import cpu_model  # noqa: E402


def timed(fn, items, warm: int = 3) -> list[float]:
    """Seconds of fn(item) for each item, after `warm` untimed calls."""
    for item in items[:warm]:
        fn(item)
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t0)
    return out


def summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 1), "max_ms": round(ms[-1], 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-cpu", help="a shipped model's name or an export directory")
    ap.add_argument("--n", type=int, default=100, help="queries of each kind (default 100)")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    if args.n < 4:
        raise SystemExit(f"--n {args.n}: time 4 queries or more")
    rows = {}
    t0 = time.perf_counter()
    pre = load_pretrained(args.model)
    qa = load_qa(args.model, "realm")
    rows["load"] = {"n": 1, "median_ms": round((time.perf_counter() - t0) * 1000, 1)}
    sentences = pre.heldout_queries(args.n)
    rows["held-out"] = summary(timed(lambda x: explain_masked(pre, x), sentences))
    typed = [x.example.text[:x.example.span[0]] + "[MASK]" + x.example.text[x.example.span[1]:] for x in sentences]
    rows["typed [MASK]"] = summary(timed(lambda t: explain_masked(pre, t), typed))
    questions = load_questions("world", "test", world=qa.world, cfg=qa.cfg)[:args.n]
    rows["question"] = summary(timed(lambda ex: explain_question(qa, ex.question, ex.answers), questions))
    births = [f for f in qa.world.facts.values() if f.relation == "birthplace"][:min(args.n, 20)]
    cities = [e.id for e in qa.world.entities.values() if e.kind == "city"]
    edits = [(f.subject, next(c for c in cities[i:] if c != f.value)) for i, f in enumerate(births)]
    rows["fact edit"] = summary(timed(lambda e: edit_fact(qa, e[0], "birthplace", e[1]), edits))
    from realm_lite.explorer import Explorer

    app = Explorer(n_examples=5)
    app.model_b.value = "world-cpu: before REALM (warm start; QA: ICT only)"

    def ask(text):
        app.text.value = text  # the Ask of the text box: both models
        app.text.value = ""

    rows["compare"] = summary(timed(ask, typed[:min(args.n, 30)]))
    info = {"model": args.model, "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "rows": rows}
    print(f"{args.model} on {info['cpu']} ({info['cpu_capability']}, {info['threads']} threads, "
          f"torch {torch.__version__})")
    print(f"{'':<14}{'n':>5}{'median ms':>11}{'p90 ms':>9}{'max ms':>9}")
    for name, r in rows.items():
        print(f"{name:<14}{r['n']:>5}{r['median_ms']:>11}{r.get('p90_ms', ''):>9}{r.get('max_ms', ''):>9}")
    out = Path(args.json or Path(__file__).parent / "results" /
               f"explorer_latency-{info['cpu_capability'].lower()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(info, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
