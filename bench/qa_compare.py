"""Two QA systems on the same questions, paired: EM difference with its standard error, and where they differ.

    python bench/qa_compare.py runs/bench-qa/world-cpu/qa --splits test dev     # realm against ict

Reads `<dir>/<system>/predictions-<split>.jsonl` (written by `realm-lite evaluate` or bench/qa.py) and prints,
for each split and for all of them together: EM of each system, the paired difference a - b with its standard
error and the questions each wins; where only one retrieves an answer in its top 5; then where the first read
block is the question's subject's own page (its title is named in the question) or another entity's, and how
often each system answers from each kind.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def load(qa_dir, system: str, splits) -> dict:
    """{question id: prediction row} over the splits; a missing file is an error naming it."""
    rows = {}
    for split in splits:
        path = Path(qa_dir) / system / f"predictions-{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run `realm-lite evaluate --model {path.parent} --split {split}`")
        rows.update({r["id"]: r for r in map(json.loads, path.read_text().splitlines())})
    return rows


def paired(a: dict, b: dict) -> dict:
    """EM of a and b on their shared questions, mean difference a - b, its standard error, and the wins."""
    ids = sorted(a.keys() & b.keys())
    d = [int(a[i]["correct"]) - int(b[i]["correct"]) for i in ids]
    n, mean = len(d), sum(d) / max(1, len(d))
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n) if n > 1 else float("nan")
    rank = lambda r: r.get("answer_in_top") or math.inf  # noqa: E731
    only_a = [i for i in ids if rank(a[i]) <= 5 < rank(b[i])]
    both_first = [i for i in ids if rank(a[i]) == rank(b[i]) == 1]
    return {"only_a_top5": len(only_a), "only_a_top5_answered": sum(a[i]["correct"] for i in only_a),
            "only_b_top5": sum(rank(b[i]) <= 5 < rank(a[i]) for i in ids),
            "both_first": len(both_first), "both_first_answered_a": sum(a[i]["correct"] for i in both_first),
            "both_first_answered_b": sum(b[i]["correct"] for i in both_first),
            "questions": n, "em_a": sum(a[i]["correct"] for i in ids) / n, "em_b": sum(b[i]["correct"] for i in ids) / n,
            "diff": mean, "se": se, "wins_a": sum(x > 0 for x in d), "wins_b": sum(x < 0 for x in d)}


def first_block(rows: dict) -> dict:
    """How often the first read block is the subject's own page, and EM from own pages and from other pages."""
    is_own = [bool(r["retrieved"]) and r["retrieved"][0]["title"].lower() in r["question"].lower() for r in rows.values()]
    own = [r for r, o in zip(rows.values(), is_own) if o]
    other = [r for r, o in zip(rows.values(), is_own) if not o]
    em = lambda rs: sum(r["correct"] for r in rs) / len(rs) if rs else float("nan")  # noqa: E731
    return {"own_first": len(own) / len(rows), "em_own_first": em(own), "em_other_first": em(other)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("qa_dir", help="a directory of QA runs, one per system (bench/qa.py's <runs>/<corpus>-<preset>/qa)")
    ap.add_argument("--a", default="realm")
    ap.add_argument("--b", default="ict")
    ap.add_argument("--splits", nargs="+", default=["test"])
    args = ap.parse_args(argv)
    try:
        groups = [[s] for s in args.splits] + ([args.splits] if len(args.splits) > 1 else [])
        for splits in groups:
            a, b = load(args.qa_dir, args.a, splits), load(args.qa_dir, args.b, splits)
            p = paired(a, b)
            print(f"{'+'.join(splits):<10} {p['questions']:>5} questions  {args.a} EM {p['em_a']:.3f}  {args.b} EM "
                  f"{p['em_b']:.3f}  {args.a} - {args.b} {p['diff']:+.3f} ± {p['se']:.3f}  wins {p['wins_a']} / {p['wins_b']}")
            print(f"{'':<17}an answer in {args.a}'s top 5 only: {p['only_a_top5']} ({args.a} answers "
                  f"{p['only_a_top5_answered']}); in {args.b}'s only: {p['only_b_top5']}; both rank one first: "
                  f"{p['both_first']} ({args.a} answers {p['both_first_answered_a']}, {args.b} {p['both_first_answered_b']})")
            for name, rows in ((args.a, a), (args.b, b)):
                f = first_block(rows)
                print(f"{'':<17}{name:<8} own page first {f['own_first']:.3f}  EM from own page {f['em_own_first']:.3f}"
                      f"  from another page {f['em_other_first']:.3f}")
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
