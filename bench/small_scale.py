"""Does REALM's retriever update teach the retriever anything? A paired comparison over seeds.

    python bench/small_scale.py --preset cpu --seeds 0 1 2      # docs/results.md's table (15 min a seed with three arms, Intel AVX-512)
    python bench/small_scale.py --preset quick --seeds 0        # a smoke run (about a minute)

For each seed: one corpus and one warm start (the preset's recipe), then four arms from that same
state, each with the preset's number of REALM steps and the same evaluation on every held-out query:

  realm      the preset's REALM stage: both towers (and the reader unless reader_lr = 0, as in cpu and quick)
             trained through p(y|x)
  frozen     the same with retriever_lr = 0: the warm-started retriever is kept as it is; with reader_lr = 0
             too (cpu, quick) this arm trains nothing: it is exactly the warm start, evaluated again
  warmstart  the retriever first gets as many more warm-start steps as REALM has steps, then as `frozen`
  cold       the retriever re-initialised at random (the cold-start control), the reader warm-started

`--warm-from RUN` takes the warm start of a finished `realm-lite pretrain` run of the same recipe (its
corpus, tokenizer and warmstart.pt) as that seed's, instead of training one:

    python bench/small_scale.py --preset cpu --seeds 0 --warm-from runs/cpu --arms realm frozen

`--set` overrides the whole recipe; `--arm-set` overrides only the arms' REALM stage (learning rates,
k, steps, refresh interval), so such ablations reuse the warm start saved under --runs:

    python bench/small_scale.py --preset cpu --seeds 0 --arms realm --arm-set retriever_lr=1e-4 \
        --out bench/results/small_scale-cpu-rlr1e-4.json

Results go to bench/results/small_scale-<preset>.json after every arm, so a killed run resumes where
it stopped (a finished arm is not run again). The table gives mean ± standard error over seeds, and
the paired difference realm - other per seed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.config import get_config, parse_overrides  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.pretrain import evaluate, setup_run, train_realm, warm_start  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.retriever import Retriever  # noqa: E402
from realm_lite.training import load_checkpoint  # noqa: E402
from realm_lite.warmstart import train_salient  # noqa: E402

ARMS = ("realm", "frozen", "warmstart", "cold")
METRICS = ("recall@1", "recall@5", "acc_retrieval", "acc_null", "acc_gold")


def run_arm(arm: str, parts, cfg, warm_state: dict, out: Path, log) -> dict:
    """One arm from the shared warm start: its retriever treatment, then cfg.realm_steps of REALM, then evaluation."""
    model = parts.model
    model.load_state_dict(warm_state)
    t0 = time.time()
    if arm == "cold":
        torch.manual_seed(cfg.seed + 1)
        model.retriever = Retriever(cfg, len(parts.tokenizer)).to(parts.device)
    if arm == "warmstart":
        if cfg.warm_start != "salient":
            raise ValueError("the warmstart arm continues the salient warm start; this preset uses "
                             f"warm_start={cfg.warm_start!r}")
        train_salient(model, parts.pool, parts.blocks, parts.inputs, cfg, parts.device, log=log,
                      steps=cfg.realm_steps, seed=cfg.seed + 1000)
    arm_cfg = cfg.replace(retriever_lr=0.0) if arm in ("frozen", "warmstart") else cfg
    (out / arm).mkdir(parents=True, exist_ok=True)
    if arm_cfg.reader_lr or arm_cfg.retriever_lr:  # with reader_lr=0 (cpu, quick) the frozen arm trains nothing
        train_realm(model, parts.pool, parts.blocks, parts.inputs, parts.tokenizer, arm_cfg, out / arm,
                    parts.device, log=log)
    index = build_index(model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, parts.device)
    result = evaluate(model, index, parts.eval_queries, parts.inputs, cfg, parts.device)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def adopt_warm_start(run, cfg, base: Path) -> None:
    """Copy a pre-training run's corpus, tokenizer and warm start into `base` (warm.pt, warm.json), as if trained here."""
    import shutil

    from realm_lite.config import Config

    run = Path(run)
    if not (run / "warmstart.pt").exists():
        raise FileNotFoundError(f"{run} has no warmstart.pt: not a `realm-lite pretrain` run past its warm start")
    theirs = {**Config.load(run).to_dict(), "progress": False}
    diff = sorted(k for k, v in cfg.to_dict().items() if theirs.get(k) != v)
    if diff:
        raise ValueError(f"{run} was trained with another recipe (differs in {', '.join(diff)}); "
                         f"its warm start cannot stand for this one")
    base.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "corpus.json", "blocks.jsonl", "questions.jsonl", "tokenizer", "world"):
        src = run / name
        if src.is_dir():
            shutil.copytree(src, base / name, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, base / name)
    saved = load_checkpoint(run / "warmstart.pt", "warm start", keys=("model", "result"))
    result = saved["result"]  # the warm start's evaluation and its stages' seconds
    warm = {**result["eval"], "from": str(run),
            "seconds": round(result.get("retriever_seconds", 0) + result.get("reader_warmup_seconds", 0), 1)}
    atomic_write_text(base / "warm.json", json.dumps(warm) + "\n")
    torch.save(saved["model"], base / "warm.tmp")
    os.replace(base / "warm.tmp", base / "warm.pt")


# Config keys added after results were recorded, with their defaults: hashed only when set to something else,
# so a results file written before a key existed can still take more seeds of its recipe.
LATER_KEYS = {"world_phrasings": 3, "world_restate": 2}


def _digest(d: dict) -> str:
    """A recipe's short hash; the QA fine-tuning keys (qa_*) do not change a pre-training run."""
    d = {k: v for k, v in d.items() if not k.startswith("qa_") and not (k in LATER_KEYS and v == LATER_KEYS[k])}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def summarize(results: dict) -> dict:
    """Mean and standard error over seeds per arm, and paired differences realm - other."""
    def stats(xs):
        n = len(xs)
        mean = sum(xs) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
        return {"mean": round(mean, 4), "se": round(sd / math.sqrt(n), 4) if n > 1 else None, "n": n}

    seeds = results["seeds"]
    rows = {arm: {m: stats([s[arm][m] for s in seeds.values() if arm in s and m in s[arm]])
                  for m in METRICS} for arm in ("warm",) + ARMS
            if any(arm in s for s in seeds.values())}
    diffs = {}
    for other in ("frozen", "warmstart"):
        paired = [s for s in seeds.values() if "realm" in s and other in s]
        if paired:
            diffs[f"realm-{other}"] = {m: stats([s["realm"][m] - s[other][m] for s in paired])
                                       for m in ("recall@5", "acc_retrieval")}
    return {"arms": rows, "paired": diffs}


def table(summary: dict) -> str:
    def cell(st):
        if not st["n"]:
            return f"{'-':>16}"
        return f"{st['mean']:>9.3f} ± {st['se']:.3f}" if st["se"] is not None else f"{st['mean']:>16.3f}"

    lines = [f"{'arm':<16}{'seeds':>6}" + "".join(f"{m:>16}" for m in METRICS)]
    for arm, row in summary["arms"].items():
        lines.append(f"{arm:<16}{row['recall@5']['n']:>6}" + "".join(cell(row[m]) for m in METRICS))
    for name, row in summary["paired"].items():
        lines.append(f"{name:<16}{row['recall@5']['n']:>6}" + f"{'':>16}" + cell(row["recall@5"])
                     + cell(row["acc_retrieval"]))
    return "\n".join(lines)


def markdown(summary: dict) -> str:
    """The same table as `table`, in Markdown (for docs/results.md)."""
    def cell(st):
        if not st["n"]:
            return ""
        return f"{st['mean']:.3f} ± {st['se']:.3f}" if st["se"] is not None else f"{st['mean']:.3f}"

    lines = ["| arm | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for arm, row in summary["arms"].items():
        lines.append(f"| {arm} | {row['recall@5']['n']} | " + " | ".join(cell(row[m]) for m in METRICS) + " |")
    for name, row in summary["paired"].items():
        lines.append(f"| {name} (paired) | {row['recall@5']['n']} | | {cell(row['recall@5'])} | "
                     f"{cell(row['acc_retrieval'])} | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--arm-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for the arms' REALM stage only (the warm start is shared)")
    ap.add_argument("--warm-from", default=None, metavar="RUN",
                    help="a finished `realm-lite pretrain` run of this recipe whose warm start the (single) seed uses")
    ap.add_argument("--runs", default="runs/bench", help="where the per-seed run directories go")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/small_scale-<preset>.json)")
    ap.add_argument("--markdown", action="store_true", help="only print the table of --out in Markdown, run nothing")
    args = ap.parse_args(argv)

    overrides, arm_overrides = parse_overrides(args.set), parse_overrides(args.arm_set)
    if args.warm_from and len(args.seeds) != 1:
        ap.error("--warm-from stands for one seed's warm start: pass a single --seeds")
    out_json = Path(args.out or f"bench/results/small_scale-{args.preset}.json")
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    if args.markdown:
        print(markdown(results["summary"]) if results else f"no results in {out_json}")
        return 0
    # The recipe's hash (seed aside) guards against resuming into results of an older version of the preset.
    recipe = _digest({**get_config(args.preset, **{**overrides, "seed": 0}).to_dict(), "progress": False})
    setting = (args.preset, overrides, arm_overrides, recipe)
    if results and (results.get("preset"), results.get("overrides"), results.get("arm_overrides", {}),
                    results.get("recipe")) != setting:
        print(f"{out_json} holds results for another preset, recipe or other overrides; pass another --out",
              file=sys.stderr)
        return 2
    command = " ".join(["python bench/small_scale.py"] + (argv or sys.argv[1:]))
    results.update(preset=args.preset, overrides=overrides, arm_overrides=arm_overrides, recipe=recipe)
    results["commands"] = results.get("commands", [results["command"]] if "command" in results else [])
    results["commands"] += [command] if command not in results["commands"] else []  # every call that added to it
    results.pop("command", None)
    results.setdefault("seeds", {})

    def save():
        results["summary"] = summarize(results)
        atomic_write_text(out_json, json.dumps(results, indent=2) + "\n")

    for seed in args.seeds:
        done = results["seeds"].setdefault(str(seed), {})
        todo = [a for a in args.arms if a not in done]
        if not todo:
            continue
        cfg = get_config(args.preset, **{**overrides, "seed": seed, "progress": False})
        run_dir = Path(args.runs) / f"{args.preset}-seed{seed}-{_digest(cfg.to_dict())}"  # one warm start per recipe
        warm_path = run_dir / "base" / "warm.pt"
        if args.warm_from and not warm_path.exists():
            adopt_warm_start(args.warm_from, cfg, run_dir / "base")
        elif args.warm_from:
            print(f"{warm_path} exists: that warm start is used, not {args.warm_from}'s", flush=True)
        parts = setup_run("world", cfg, run_dir / "base", resume=warm_path.exists())
        if warm_path.exists():
            warm_state = torch.load(warm_path, map_location="cpu", weights_only=True)
            parts.model.load_state_dict(warm_state)
        else:
            t0 = time.time()
            warm_start(parts.model, parts.pool, parts.blocks, parts.inputs, parts.tokenizer, cfg, parts.device)
            warm_state = {k: v.clone() for k, v in parts.model.state_dict().items()}
            index = build_index(parts.model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, parts.device)
            warm = evaluate(parts.model, index, parts.eval_queries, parts.inputs, cfg, parts.device)
            warm["seconds"] = round(time.time() - t0, 1)
            atomic_write_text(run_dir / "base" / "warm.json", json.dumps(warm) + "\n")
            torch.save(warm_state, warm_path.with_suffix(".tmp"))
            os.replace(warm_path.with_suffix(".tmp"), warm_path)
        done.setdefault("warm", json.loads((run_dir / "base" / "warm.json").read_text()))
        save()
        for arm in todo:
            print(f"--- seed {seed}: arm {arm}", flush=True)
            arm_dir = run_dir / (f"arms-{_digest(arm_overrides)}" if arm_overrides else "arms")
            done[arm] = run_arm(arm, parts, cfg.replace(**arm_overrides), warm_state, arm_dir, log=print)
            print(f"seed {seed} {arm}: {done[arm]}", flush=True)
            save()
    save()
    print(table(results["summary"]))
    print(f"results in {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
