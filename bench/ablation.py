"""The paper's ablations (its Table 2) at small scale, over seeds: which parts of REALM matter on the synthetic world.

    python bench/ablation.py --preset cpu --seeds 0 1 2       # docs/results.md's table (about 1.5 h a seed, 2 cores)
    python bench/ablation.py --preset quick --seeds 0          # a smoke run (a few minutes)
    python bench/ablation.py --preset full --seeds 0 1 2 --set device=cuda      # a GPU

For each seed: one corpus and one warm start (the preset's), then every row below from that same state. Each row
is pre-trained (or assembled from parts other rows share), evaluated as pre-training is (gold recall@5 on the
held-out masked sentences, accuracy with retrieval and with the null document), measured zero-shot (top-5 answer
recall of its retriever on the world's test questions, before any fine-tuning) and fine-tuned with the preset's QA
recipe, the same for every row (query-side, realm_lite.finetune), then scored by exact match on the test questions.

  realm                             REALM: the preset's recipe (cpu: salient warm start, reader warm-up, REALM with
                                    the reader frozen)
  realm-retriever+baseline-encoder  REALM's retriever; the baseline encoder: a reader given the same warm-up with
                                    the null document in every row (reader_warmup_z=none), masked LM without
                                    retrieval, the analogue of BERT (with no reader warm-up in the preset, as in
                                    `full`, the reader as initialised: BERT itself)
  baseline-retriever+realm-encoder  the baseline retriever: ORQA's ICT (cfg.ict_steps; the warm start itself when
                                    the preset warms up by ICT); REALM's encoder
  baseline                          ORQA: ICT retriever and baseline encoder
  random-token                      REALM with random-token masks (the REALM stage's masking only; warm starts as
  random-span                       REALM with random-span masks   realm's)
  stale-30x                         REALM refreshing its index --stale-factor times less often
  realm-reader-trained              REALM with the reader trained during REALM at the paper's 3e-5 (only when the
                                    preset freezes it: then realm's encoder is its warm-up reader)
  cold                              REALM from a randomly initialised retriever (the warm-started reader)
  frozen                            the warm start only: no REALM step
  bm25                              BM25 (bm25s) and REALM's encoder
  closed-book                       REALM's encoder, no retrieval (z = ∅)

Results go to bench/results/ablation-<preset>.json after every row, and each row's runs (REALM checkpoints, QA
runs) under --runs, so a killed run resumes row by row (a finished row is not run again). The table gives mean ±
standard error over seeds and the paired difference row - realm per seed; `--markdown` prints it beside the
paper's numbers, `--plot` draws it (bench/results/ablation-<preset>.png). When a seed's run directory is gone
(another machine), the rows left are run from a warm start trained again, and from realm's parts trained again
when rows left are made of them; "rebuilt" in the results says whether each evaluates as the recorded one did
(the warm start is deterministic on one kind of CPU; REALM's asynchronous refresh is not).

`--warm-from RUN` takes a finished `realm-lite pretrain` run of the same recipe as the (single) seed's warm start.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # small_scale, also when loaded by path (tests)

import torch  # noqa: E402

from realm_lite.config import get_config, parse_overrides  # noqa: E402
from realm_lite.io import atomic_write_text  # noqa: E402
from realm_lite.pretrain import evaluate, load_run, setup_run, train_realm, warm_start  # noqa: E402
from realm_lite.refresh import build_index  # noqa: E402
from realm_lite.retriever import Retriever  # noqa: E402
from realm_lite.training import load_checkpoint, save_checkpoint  # noqa: E402
from common import machine  # noqa: E402
from small_scale import _digest, adopt_warm_start  # noqa: E402

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Row:
    """One row of the table: where its retriever and reader come from, its REALM stage and its QA system."""

    name: str
    retriever: str  # warm | random | ict | realm (the realm row's, after REALM)
    reader: str  # warm | baseline | realm
    realm: dict | None = None  # the REALM stage's overrides; None: no REALM stage, the parts as they are
    system: str = "realm"  # the QA system: realm (neural retriever + span reader), bm25 or closed-book
    paper: str | None = None  # the paper's Table 2 row
    paper_em: float | None = None  # NQ dev exact match, %
    paper_recall: float | None = None  # zero-shot recall@5, %


ROWS = (
    Row("realm", "warm", "warm", {}, paper="REALM", paper_em=38.2, paper_recall=38.5),
    Row("realm-retriever+baseline-encoder", "realm", "baseline", paper="REALM retriever + baseline encoder",
        paper_em=37.4, paper_recall=38.5),
    Row("baseline-retriever+realm-encoder", "ict", "realm", paper="baseline retriever + REALM encoder",
        paper_em=35.3, paper_recall=13.9),
    Row("baseline", "ict", "baseline", paper="baseline (ORQA)", paper_em=31.3, paper_recall=13.9),
    Row("random-token", "warm", "warm", {"masking": "random-token"}, paper="REALM with random uniform masks",
        paper_em=32.3, paper_recall=24.2),
    Row("random-span", "warm", "warm", {"masking": "random-span"}, paper="REALM with random span masks",
        paper_em=35.3, paper_recall=26.1),
    Row("stale-30x", "warm", "warm", {"stale": True}, paper="30× stale MIPS", paper_em=28.7, paper_recall=15.1),
    Row("realm-reader-trained", "warm", "warm", {"reader_lr": 3e-5}),
    Row("cold", "random", "warm", {}),
    Row("frozen", "warm", "warm"),
    Row("bm25", "realm", "realm", system="bm25"),
    Row("closed-book", "realm", "realm", system="closed-book"),
)
BY_NAME = {r.name: r for r in ROWS}
METRICS = ("em", "zero_shot_recall@5", "recall@5", "acc_retrieval", "acc_null")
PRETRAIN_KEYS = ("recall@1", "recall@5", "acc_retrieval", "acc_null", "acc_gold")


def _save_state(state: dict, path: Path) -> None:
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


class Seed:
    """One seed's shared state: the corpus, the warm start, and (made once, on first use) the parts rows share."""

    def __init__(self, cfg, seed_dir: Path, warm_from=None, log=print):
        self.cfg, self.dir, self.log = cfg, Path(seed_dir), log
        base = self.dir / "base"
        warm_path = base / "warm.pt"
        if warm_from and not warm_path.exists():
            adopt_warm_start(warm_from, cfg, base)
        elif warm_from:
            log(f"{warm_path} exists: that warm start is used, not {warm_from}'s")
        self.made_warm = not warm_path.exists()  # trained here, not read from an earlier call's run directory
        self.parts = setup_run("world", cfg, base, resume=warm_path.exists(), log=log)
        self.world = load_run(base)[3]
        if warm_path.exists():
            self.warm = torch.load(warm_path, map_location="cpu", weights_only=True)
        else:
            t0 = time.time()
            p = self.parts
            warm_start(p.model, p.pool, p.blocks, p.inputs, p.tokenizer, cfg, p.device, log=log)
            self.warm = {k: v.detach().cpu().clone() for k, v in p.model.state_dict().items()}
            warm = self.evaluate(self.warm)
            warm["seconds"] = round(time.time() - t0, 1)
            atomic_write_text(base / "warm.json", json.dumps(warm) + "\n")
            _save_state(self.warm, warm_path)
        self.warm_eval = json.loads((base / "warm.json").read_text())

    # ---- the parts rows share ----
    def part(self, name: str) -> dict:
        """A state dict (Realm layout, possibly only retriever.* or reader.* keys) for a row's `retriever`/`reader`."""
        if name == "warm":
            return self.warm
        if name == "realm":
            if not (self.dir / "rows" / "realm" / "pretrain.json").exists():
                raise RuntimeError("the realm row must be pre-trained before the rows that take its parts")
            return load_checkpoint(self.dir / "rows" / "realm" / "checkpoint.pt", "realm row checkpoint")["model"]
        if name == "random":
            torch.manual_seed(self.cfg.seed + 1)
            return {f"retriever.{k}": v for k, v in Retriever(self.cfg, len(self.parts.tokenizer)).state_dict().items()}
        path = self.dir / "base" / f"{name}.pt"
        if not path.exists():
            t0 = time.time()
            state = self._train_ict() if name == "ict" else self._train_baseline_encoder()
            _save_state(state, path)
            atomic_write_text(path.with_suffix(".json"), json.dumps({"seconds": round(time.time() - t0, 1)}) + "\n")
        return torch.load(path, map_location="cpu", weights_only=True)

    def _train_ict(self) -> dict:
        """ORQA's retriever: ICT from a random initialisation (the warm start's own when the preset is ICT)."""
        from realm_lite.ict import split_heldout, train_ict

        if self.cfg.warm_start == "ict":
            return {k: v for k, v in self.warm.items() if k.startswith("retriever.")}
        p = self.parts
        torch.manual_seed(self.cfg.seed + 2)
        retriever = Retriever(self.cfg, len(p.tokenizer)).to(p.device)
        train_ids, _ = split_heldout(p.blocks, 0.1, self.cfg.seed)
        self.log(f"baseline retriever: {self.cfg.ict_steps} ICT steps")
        train_ict(retriever, p.blocks, p.tokenizer, self.cfg, p.device, block_ids=train_ids, log=self.log)
        return {f"retriever.{k}": v.detach().cpu() for k, v in retriever.state_dict().items()}

    def _train_baseline_encoder(self) -> dict:
        """The reader warm-up's steps with z = ∅ in every row, from the same initial reader (the BERT analogue)."""
        from realm_lite.realm import Realm
        from realm_lite.warmstart import train_reader_warmup

        p = self.parts
        torch.manual_seed(self.cfg.seed)  # setup_run's seed: the reader starts where the warm start's did
        model = Realm(self.cfg, len(p.tokenizer)).to(p.device)
        if self.cfg.reader_warmup_steps:
            self.log(f"baseline encoder: {self.cfg.reader_warmup_steps} masked-LM steps with the null document")
            train_reader_warmup(model, p.pool, p.blocks, p.tokenizer, self.cfg.replace(reader_warmup_z="none"),
                                p.device, log=self.log)
        return {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith("reader.")}

    def evaluate(self, state: dict) -> dict:
        """Pre-training's evaluation of a state: every held-out query, its own index."""
        p = self.parts
        p.model.load_state_dict(state)
        index = build_index(p.model.retriever.embed_doc, p.blocks, p.tokenizer, self.cfg, p.device)
        return evaluate(p.model, index, p.eval_queries, p.inputs, self.cfg, p.device)

    # ---- a row ----
    def row_config(self, row: Row, stale_factor: int):
        over = dict(row.realm or {})
        if over.pop("stale", False):
            over["refresh_every"] = stale_factor * self.cfg.refresh_every
        return self.cfg.replace(**over)

    def pretrain_row(self, row: Row, stale_factor: int) -> dict:
        """The row's weights in rows/<name>/checkpoint.pt (as a pre-training run directory) and their evaluation."""
        d = self.dir / "rows" / row.name
        if (d / "pretrain.json").exists():
            return json.loads((d / "pretrain.json").read_text())
        cfg = self.row_config(row, stale_factor)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("corpus.json", "blocks.jsonl", "tokenizer", "world"):  # what a QA run reads from its init run
            src = self.dir / "base" / name
            if src.is_dir():
                shutil.copytree(src, d / name, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, d / name)
        cfg.save(d)
        t0 = time.time()
        state = dict(self.warm)  # then the row's retriever and reader in place of the warm start's
        for part, prefix in ((row.retriever, "retriever."), (row.reader, "reader.")):
            if part != "warm":
                state.update({k: v for k, v in self.part(part).items() if k.startswith(prefix)})
        p = self.parts
        if row.realm is None:
            save_checkpoint({"model": state}, d / "checkpoint.pt")
        else:
            p.model.load_state_dict(state)
            pool = p.pool
            if cfg.masking != self.cfg.masking:
                from realm_lite.queries import QueryPool

                pool = QueryPool(p.blocks, p.tokenizer, cfg, self.world)
            self.log(f"{row.name}: {cfg.realm_steps} REALM steps ({_diff(self.cfg, cfg) or 'the preset'})")
            train_realm(p.model, pool, p.blocks, p.inputs, p.tokenizer, cfg, d, p.device,
                        resume=(d / "checkpoint.pt").exists(), log=self.log)
            state = {k: v.detach().cpu() for k, v in p.model.state_dict().items()}
        result = {"eval": self.evaluate(state) if row.system == "realm" else None,
                  "seconds": round(time.time() - t0, 1), "config": _diff(self.cfg, cfg)}
        atomic_write_text(d / "pretrain.json", json.dumps(result, indent=2) + "\n")
        return result

    def qa_row(self, row: Row) -> dict:
        """Zero-shot answer recall, then the preset's QA fine-tuning and exact match on the test questions."""
        from realm_lite.finetune import compare_systems
        from realm_lite.qa import answer_recall, system_from_run
        from realm_lite.qa_data import load_qa

        d = self.dir / "rows" / row.name
        out = {}
        if row.system != "closed-book":
            qa0 = system_from_run(d, row.system, log=self.log)
            out["zero_shot_recall@5"] = round(answer_recall(qa0, load_qa("world", "test", world=qa0.world), 5), 4)
        t0 = time.time()
        (metrics,) = compare_systems(d, "world", d / "qa", [row.system], "test", log=self.log)
        out.update({k: metrics[k] for k in ("em", "top1", "top5", "questions") if k in metrics},
                   qa_seconds=round(time.time() - t0, 1))
        return out


def _diff(base, cfg) -> dict:
    """The keys where a row's config differs from the preset's."""
    a, b = base.to_dict(), cfg.to_dict()
    return {k: b[k] for k in b if a[k] != b[k]}


def run_row(seed: Seed, row: Row, stale_factor: int) -> dict:
    pre = seed.pretrain_row(row, stale_factor)
    qa = seed.qa_row(row)
    return {**qa, **{k: pre["eval"][k] for k in PRETRAIN_KEYS if k in (pre["eval"] or {})},
            "pretrain_seconds": pre["seconds"], "config": pre["config"], "run": str(seed.dir / "rows" / row.name)}


def check_rebuilt(results: dict, seed: int, name: str, recorded: dict, now: dict) -> bool:
    """Record a part remade after its run directory was lost, and whether its evaluation is the recorded one's."""
    same = all(now.get(k) == v for k, v in recorded.items())
    results.setdefault("rebuilt", {}).setdefault(str(seed), {})[name] = {
        "recorded": recorded, "now": now, "matches_record": same}
    print(f"seed {seed}: {name} remade ({'the same as' if same else 'NOT the same as'} the recorded rows' {name})",
          flush=True)
    return same


# ---- the table ------------------------------------------------------------------------------------------
def _stats(xs: list[float]) -> dict:
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"mean": round(mean, 4), "se": round(sd / math.sqrt(n), 4) if sd is not None else None, "n": n}


def summarize(results: dict) -> dict:
    """Mean and standard error over seeds per row and metric; paired differences row - realm over shared seeds."""
    seeds = results["seeds"]
    rows, paired = {}, {}
    for name in [r.name for r in ROWS]:
        got = [s[name] for s in seeds.values() if name in s]
        if not got:
            continue
        rows[name] = {m: _stats([g[m] for g in got]) for m in METRICS if all(m in g for g in got)}
        if name != "realm":
            both = [s for s in seeds.values() if name in s and "realm" in s]
            paired[name] = {m: _stats([s[name][m] - s["realm"][m] for s in both]) for m in METRICS
                            if both and all(m in s[name] and m in s["realm"] for s in both)}
    return {"rows": rows, "paired": paired}


def _cell(st: dict | None, signed: bool = False) -> str:
    if not st:
        return "–"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return fmt.format(st["mean"]) + (f" ± {st['se']:.3f}" if st["se"] is not None else "")


def table(summary: dict) -> str:
    """A plain-text table: one line per row, mean ± se of each metric and the paired EM difference to realm."""
    head = f"{'row':<34}{'seeds':>6}" + "".join(f"{m:>21}" for m in METRICS) + f"{'EM - realm':>21}"
    lines = [head]
    for name, row in summary["rows"].items():
        n = max(st["n"] for st in row.values()) if row else 0
        lines.append(f"{name:<34}{n:>6}" + "".join(f"{_cell(row.get(m)):>21}" for m in METRICS)
                     + f"{_cell(summary['paired'].get(name, {}).get('em'), True):>21}")
    return "\n".join(lines)


def markdown(summary: dict) -> str:
    """The docs table: each row beside the paper's Table 2 (NQ dev EM / zero-shot recall@5, %)."""
    lines = ["| row | paper (NQ dev): EM / recall@5 | seeds | QA EM | EM − realm (paired) | zero-shot recall@5 "
             "| recall@5 − realm (paired) | pre-training recall@5 | accuracy with retrieval "
             "| with the null document |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in summary["rows"].items():
        r, pd = BY_NAME[name], summary["paired"].get(name, {})
        paper = f"{r.paper}: {r.paper_em} / {r.paper_recall}" if r.paper else "–"
        n = max(st["n"] for st in row.values()) if row else 0
        lines.append(f"| {name} | {paper} | {n} | {_cell(row.get('em'))} | {_cell(pd.get('em'), True)} | "
                     f"{_cell(row.get('zero_shot_recall@5'))} | {_cell(pd.get('zero_shot_recall@5'), True)} | "
                     f"{_cell(row.get('recall@5'))} | {_cell(row.get('acc_retrieval'))} | "
                     f"{_cell(row.get('acc_null'))} |")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> Path:
    """QA EM and zero-shot recall@5 per row (mean ± se) beside the paper's Table 2, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["rows"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 1.6), sharey=True,
                                 gridspec_kw={"width_ratios": [3, 2]})
    y = range(len(names))
    for offset, metric, label in ((-0.2, "em", "QA exact match"), (0.2, "zero_shot_recall@5", "zero-shot recall@5")):
        st = [summary["rows"][n].get(metric) for n in names]
        ax.barh([i + offset for i in y], [s["mean"] if s else 0 for s in st], height=0.4, label=label,
                xerr=[(s["se"] or 0) if s else 0 for s in st])
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("small scale (synthetic world, test questions)")
    ax.legend(loc="lower right")
    for offset, attr, label in ((-0.2, "paper_em", "EM"), (0.2, "paper_recall", "zero-shot recall@5")):
        bx.barh([i + offset for i in y], [getattr(BY_NAME[n], attr) or 0 for n in names], height=0.4, label=label)
    bx.set_xlim(0, 50)
    bx.set_title("the paper's Table 2 (NQ dev, %)")
    bx.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recipe_digest(cfg) -> str:
    """The recipe's short hash, seed aside: pre-training (small_scale's) and QA fine-tuning (the qa_* keys)."""
    d = {**cfg.to_dict(), "seed": 0, "progress": False}
    qa = hashlib.sha1(json.dumps({k: v for k, v in d.items() if k.startswith("qa_")}, sort_keys=True).encode())
    return f"{_digest(d)}-{qa.hexdigest()[:8]}"


# ---- the command ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=[r.name for r in ROWS], choices=[r.name for r in ROWS])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (every row)")
    ap.add_argument("--stale-factor", type=int, default=30,
                    help="stale-30x refreshes its index this many times less often than realm")
    ap.add_argument("--warm-from", default=None, metavar="RUN",
                    help="a finished `realm-lite pretrain` run of this recipe whose warm start the (single) seed uses")
    ap.add_argument("--runs", default="runs/ablation", help="where the per-seed run directories go")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/ablation-<preset>.json)")
    ap.add_argument("--plot", default=None, help="the plot (default: the results JSON's path with .png)")
    ap.add_argument("--markdown", action="store_true",
                    help="only print the table of --out in Markdown and draw its plot, run nothing")
    args = ap.parse_args(argv)

    out_json = Path(args.out) if args.out else RESULTS / f"ablation-{args.preset}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    if args.markdown:  # the docs table and the plot of a results file
        if not results.get("summary"):
            print(f"no results in {out_json}", file=sys.stderr)
            return 2
        print(markdown(results["summary"]))
        plot(results["summary"], Path(args.plot) if args.plot else out_json.with_suffix(".png"))
        return 0
    if args.stale_factor < 2:
        ap.error(f"--stale-factor {args.stale_factor}: at least 2 (a staler index than realm's)")
    if args.warm_from and len(args.seeds) != 1:
        ap.error("--warm-from stands for one seed's warm start: pass a single --seeds")
    overrides = parse_overrides(args.set)
    base_cfg = get_config(args.preset, **{**overrides, "seed": 0, "progress": False})
    recipe = recipe_digest(base_cfg)
    setting = (args.preset, overrides, args.stale_factor, recipe)
    if results and (results.get("preset"), results.get("overrides"), results.get("stale_factor"),
                    results.get("recipe")) != setting:
        print(f"{out_json} holds results for another preset, recipe, overrides or stale factor; pass another --out",
              file=sys.stderr)
        return 2
    if base_cfg.reader_lr > 0 and "realm-reader-trained" in args.rows:  # realm already trains its reader
        args.rows = [r for r in args.rows if r != "realm-reader-trained"]
        print(f"the {args.preset} preset trains the reader during REALM: realm-reader-trained is realm itself, "
              "not run", flush=True)
    needs_realm = [r for r in args.rows if "realm" in (BY_NAME[r].retriever, BY_NAME[r].reader)]
    # realm first, then the rows made of its parts: they need its run directory, which a later call may not have
    order = ["realm"] * bool(needs_realm or "realm" in args.rows) + needs_realm
    order += [r for r in args.rows if r not in order]
    command = " ".join(["python bench/ablation.py"] + (argv if argv is not None else sys.argv[1:]))
    results.update(preset=args.preset, overrides=overrides, stale_factor=args.stale_factor, recipe=recipe)
    results["commands"] = results.get("commands", []) + [command] * (command not in results.get("commands", []))
    results.setdefault("seeds", {})

    def save():
        results["summary"] = summarize(results)
        atomic_write_text(out_json, json.dumps(results, indent=2) + "\n")

    for s in args.seeds:
        done = results["seeds"].setdefault(str(s), {})
        todo = [r for r in order if r not in done]
        if not todo:
            continue
        cfg = get_config(args.preset, **{**overrides, "seed": s, "progress": False})
        seed = Seed(cfg, Path(args.runs) / f"{args.preset}-seed{s}-{_digest(cfg.to_dict())}", args.warm_from)
        warm = {k: seed.warm_eval.get(k) for k in (*PRETRAIN_KEYS, "seconds")}
        recorded = results.setdefault("warm", {}).get(str(s))
        if done and recorded and seed.made_warm:  # the rows recorded so far came from an earlier warm start
            check_rebuilt(results, s, "warm", {k: recorded[k] for k in PRETRAIN_KEYS if k in recorded},
                          {k: warm[k] for k in PRETRAIN_KEYS if k in warm})
        else:
            results["warm"][str(s)] = warm
        if "realm" in done and set(todo) & set(needs_realm) and not (seed.dir / "rows" / "realm"
                                                                      / "pretrain.json").exists():
            pre = seed.pretrain_row(BY_NAME["realm"], args.stale_factor)  # its parts, trained again
            check_rebuilt(results, s, "realm", {k: done["realm"][k] for k in PRETRAIN_KEYS if k in done["realm"]},
                          {k: pre["eval"][k] for k in PRETRAIN_KEYS if k in pre["eval"]})
        for name in todo:
            print(f"--- seed {s}: {name}", flush=True)
            t0 = time.time()
            done[name] = {**run_row(seed, BY_NAME[name], args.stale_factor), "seconds": round(time.time() - t0, 1),
                          "machine": machine(seed.parts.device)}
            results["seeds"][str(s)] = done = {r.name: done[r.name] for r in ROWS if r.name in done}  # table order
            print(f"seed {s} {name}: " + "  ".join(f"{m} {done[name][m]}" for m in METRICS if m in done[name]),
                  flush=True)
            save()
    save()
    print(table(results["summary"]))
    png = plot(results["summary"], Path(args.plot) if args.plot else out_json.with_suffix(".png"))
    print(f"results in {out_json}, plot in {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
