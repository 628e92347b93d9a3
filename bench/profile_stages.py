"""Where the time of each stage of the `cpu` recipe goes, from torch.profiler: matrix products, attention, the MLM
head, optimizer, MIPS search, tokenization and batching in Python, other operators and the rest of the Python.

    python bench/profile_stages.py                     # the shipped model (world-cpu): about 3 min on 2 cores
    python bench/profile_stages.py --steps 10 --quick  # a smoke run of seconds (the quick preset, from scratch)

It runs, from the shipped model's warm start (`--model`, or any run or export directory; its weights before REALM,
so that REALM is profiled on the blocks it really retrieves), each stage as the library runs it:

  salient       salient warm-start steps (realm_lite.warmstart.train_salient: batch ict_batch, both towers)
  reader        reader warm-up steps (train_reader_warmup, own-then-mixed z, batch batch_size)
  realm         REALM steps as the cpu recipe takes them: reader frozen, both towers trained, k candidates
  index         one index build: every block embedded with Embed_doc (realm_lite.refresh.build_index)
  evaluate      the evaluation of held-out masked sentences (realm_lite.pretrain.evaluate, with the reader)

Each stage is timed twice: once plainly (its rate, `--steps` steps after 2 untimed) and once under torch.profiler
(the split). The split assigns each operator's self time to one category: inside `optimizer` (gradient clipping,
AdamW and the schedule), `search` (MipsIndex.search), `mlm head` (the vocabulary projection at masked positions and
its log-softmax, forward) or `tokenize + batch` (the tokenizer, masking x, sampling, padding and joining id lists:
Python functions wrapped here in named ranges, whose whole wall time counts); outside them by operator: `matmul`
(mm, addmm, bmm, linear), `attention` (scaled dot-product attention and its backward), `other ops` (layer norm,
GELU, embedding, element-wise, copies). `python` is the rest of the stage's wall time: the interpreter between
operators. Shares are of the profiled time, which the profiler itself inflates by a few percent; the rate column is
the plain run's.

Prints a table and writes JSON (default bench/results/profile_stages-<tag>.json). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, realm_timing, also when loaded by path (tests)
from common import PeakMemory, machine, sync, write  # noqa: E402

CATEGORIES = ("matmul", "attention", "mlm head", "other ops", "optimizer", "search", "tokenize + batch", "python")
SCOPES = {"optimizer": "optimizer", "search": "search", "mlm_head": "mlm head", "batching": "tokenize + batch"}
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm", "aten::einsum")
ATTENTION = ("scaled_dot_product", "flash_attention", "_efficient_attention", "aten::_softmax")


def categorize(events, others: dict | None = None) -> dict:
    """Seconds of operator self time per category, from a profiler's function events (CPU); with `others`, the
    seconds of each operator counted as `other ops`, by name."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for e in events:
        scope, p = None, e
        while p is not None:  # the innermost named range that holds this event
            if p.name in SCOPES:
                scope = SCOPES[p.name]
                break
            p = p.cpu_parent
        if e.name in SCOPES:  # a named range itself: its own wall time only where it stands for Python work
            if SCOPES[e.name] == "tokenize + batch" and not _inside(e, "batching"):
                out["tokenize + batch"] += e.cpu_time_total / 1e6
            continue
        if scope == "tokenize + batch":
            continue  # counted in its range's wall time
        if scope is not None:
            out[scope] += e.self_cpu_time_total / 1e6
        elif any(a in e.name for a in ATTENTION) or _under(e, ATTENTION):
            out["attention"] += e.self_cpu_time_total / 1e6
        elif e.name in MATMUL:
            out["matmul"] += e.self_cpu_time_total / 1e6
        elif e.name.startswith("aten::") or e.name.startswith("autograd::"):
            out["other ops"] += e.self_cpu_time_total / 1e6
            if others is not None:
                others[e.name] = others.get(e.name, 0.0) + e.self_cpu_time_total / 1e6
    return out


def _inside(e, name: str) -> bool:
    p = e.cpu_parent
    while p is not None:
        if p.name == name:
            return True
        p = p.cpu_parent
    return False


def _under(e, names) -> bool:
    """Whether an operator runs inside an attention kernel (its internal bmm, softmax, copies)."""
    p = e.cpu_parent
    while p is not None:
        if any(a in p.name for a in names[:3]):
            return True
        p = p.cpu_parent
    return False


@contextlib.contextmanager
def named_ranges():
    """Wrap the library's Python-side input work, the optimizer step, MIPS search and the MLM head in named
    profiler ranges, for the duration of the block (nothing is changed outside it)."""
    import realm_lite.batching as batching
    import realm_lite.marginal as marginal
    import realm_lite.mips as mips
    import realm_lite.queries as queries
    import realm_lite.realm as realm
    import realm_lite.retriever as retriever
    import realm_lite.training as training
    import realm_lite.warmstart as warmstart

    def ranged(fn, name):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            with record_function(name):
                return fn(*a, **k)
        return wrapper

    patches = [(queries.QueryPool, "sample"), (warmstart.SalientIndex, "positives"),
               (warmstart.SalientIndex, "evidence"), (realm.BlockInputs, "doc_batch"),
               (retriever, "encode_blocks"), (marginal, "join_inputs"), (marginal, "pad_targets"),
               (realm, "join_inputs"), (realm, "join"), (realm, "pad_targets"), (warmstart, "join_inputs"),
               (warmstart, "pad_targets"), (realm, "encoder_inputs"), (retriever, "encoder_inputs"),
               (batching, "encoder_inputs")]
    saved = [(obj, name, getattr(obj, name)) for obj, name in patches if hasattr(obj, name)]  # what this version has
    for obj, name, fn in saved:
        setattr(obj, name, ranged(fn, "batching"))
    saved.append((training.Loop, "step", training.Loop.step))
    training.Loop.step = ranged(training.Loop.step, "optimizer")
    saved.append((mips.MipsIndex, "search", mips.MipsIndex.search))
    mips.MipsIndex.search = ranged(mips.MipsIndex.search, "search")
    saved.append((marginal.KnowledgeAugmentedEncoder, "token_log_probs",
                  marginal.KnowledgeAugmentedEncoder.token_log_probs))
    marginal.KnowledgeAugmentedEncoder.token_log_probs = _token_log_probs_ranged
    try:
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def _token_log_probs_ranged(self, input_ids, attention_mask, token_type_ids, masked_positions):
    """KnowledgeAugmentedEncoder.token_log_probs with its head in a `mlm_head` range (same arithmetic)."""
    import torch.nn.functional as F

    h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                  token_type_ids=token_type_ids).last_hidden_state  # (N, L, H)
    with record_function("mlm_head"):
        h = h.gather(1, masked_positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (N, M, H)
        logits = self.transform(h) @ self.bert.embeddings.word_embeddings.weight.T + self.bias  # (N, M, V)
        return F.log_softmax(logits.float(), dim=-1)


class _RangedTokenizer:
    """A tokenizer whose calls run in a `batching` range; everything else passes through."""

    def __init__(self, tok):
        self._tok = tok

    def __call__(self, *a, **k):
        with record_function("batching"):
            return self._tok(*a, **k)

    def __len__(self):
        return len(self._tok)

    def __getattr__(self, name):
        return getattr(self._tok, name)


# ---- the stages -----------------------------------------------------------------------------------
class Parts:
    """The model (its warm-start weights), corpus, queries and config the stages run on."""

    def __init__(self, args, device):
        from realm_lite.config import get_config
        from realm_lite.export import load_pretrained
        from realm_lite.queries import QueryPool
        from realm_lite.realm import BlockInputs, Realm

        if args.quick:
            from realm_lite.corpus import prepare_corpus

            cfg = get_config("quick", progress=False)
            self.tmp = tempfile.TemporaryDirectory(prefix="profile_stages-")
            prep = prepare_corpus("world", cfg, self.tmp.name)
            self.blocks, self.tokenizer, world = prep.blocks, prep.tokenizer, prep.world
            torch.manual_seed(cfg.seed)
            self.model = Realm(cfg, len(self.tokenizer)).to(device)
            self.source = "quick preset, from scratch"
        else:
            pre = load_pretrained(args.model, device, weights="warmstart")
            cfg, self.model, self.blocks, self.tokenizer, world = (pre.cfg, pre.model, pre.blocks, pre.tokenizer,
                                                                   pre.world)
            self.source = f"{args.model} (weights after the warm starts)"
        self.cfg = cfg.replace(progress=False, log_every=10 ** 9)
        self.pool = QueryPool(self.blocks, self.tokenizer, self.cfg, world)
        self.inputs = BlockInputs(self.blocks, self.tokenizer, self.cfg.block_len)
        self.eval_queries = self.pool.evaluation(args.eval_queries)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.device = device

    def fresh(self):
        """The model back at its starting weights, so that every stage starts from the same state."""
        self.model.load_state_dict(self.state)
        return self.model


def stages(parts: Parts):
    """name -> (run(n): n steps of that stage, unit of n)."""
    from realm_lite.pretrain import evaluate, freeze_untrained
    from realm_lite.realm import realm_loss
    from realm_lite.refresh import build_index
    from realm_lite.training import Loop
    from realm_lite.warmstart import train_reader_warmup, train_salient

    cfg, dev, quiet = parts.cfg, parts.device, (lambda s: None)
    rcfg = cfg.replace(reader_lr=0.0) if cfg.reader_lr == 0 else cfg
    index = build_index(parts.model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, dev)

    def salient(n):
        train_salient(parts.fresh(), parts.pool, parts.blocks, parts.inputs, cfg, dev, log=quiet, steps=n)

    def reader(n):  # own-then-mixed over n steps: the first third own blocks, the rest half evidence blocks
        train_reader_warmup(parts.fresh(), parts.pool, parts.blocks, parts.tokenizer,
                            cfg.replace(reader_warmup_steps=n), dev, log=quiet)

    def realm(n):
        model = parts.fresh()
        model.train()
        params = [{"params": model.retriever.parameters(), "lr": rcfg.retriever_lr},
                  {"params": model.reader.parameters(), "lr": rcfg.reader_lr}]
        loop = Loop("realm", n, params, rcfg, weight_decay=rcfg.weight_decay, warmup=rcfg.warmup_steps,
                    clip=rcfg.clip_norm, rng=random.Random(rcfg.seed), device=dev, log=quiet)
        with freeze_untrained(model, rcfg):
            for _ in loop:
                out = realm_loss(model, parts.pool.sample(loop.rng, rcfg.batch_size), index, parts.inputs, rcfg.k,
                                 dev)
                loop.opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                loop.step()
                loop.record(loss=out["loss"].item())

    def index_build(n):
        for _ in range(n):
            build_index(parts.model.retriever.embed_doc, parts.blocks, parts.tokenizer, cfg, dev)

    def evaluation(n):
        evaluate(parts.fresh(), index, parts.eval_queries[:n], parts.inputs, cfg, dev)

    return {"salient": (salient, "steps"), "reader": (reader, "steps"), "realm": (realm, "steps"),
            "index": (index_build, "builds"), "evaluate": (evaluation, "queries")}


def measure(name, run, n: int, parts: Parts, device) -> dict:
    """One stage: its plain rate, then its split under the profiler."""
    run(2 if name != "evaluate" else 16)  # untimed: first calls allocate and pick kernels
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        run(n)
        sync(device)
        seconds = time.perf_counter() - t0
    with named_ranges(), _tokenizer_swapped(parts), profile(activities=[ProfilerActivity.CPU]) as prof:
        t1 = time.perf_counter()
        run(n)
        sync(device)
        profiled = time.perf_counter() - t1
    others = {}
    split = categorize(prof.events(), others)
    split["python"] = max(0.0, profiled - sum(split.values()))
    total = sum(split.values())
    top = sorted(others.items(), key=lambda kv: -kv[1])[:8]
    return {"stage": name, "n": n, "seconds": round(seconds, 3), "rate": round(n / seconds, 3),
            "profiled_seconds": round(profiled, 3),
            "share": {k: round(v / total, 3) for k, v in split.items()},
            "top_other_ops": {k: round(v / total, 3) for k, v in top}, "peak_mib": mem.mib}


@contextlib.contextmanager
def _tokenizer_swapped(parts: Parts):
    """parts.tokenizer (passed to the reader warm-up and build_index) wrapped in a `batching` range too."""
    tok = parts.tokenizer
    parts.tokenizer = _RangedTokenizer(tok)
    try:
        yield
    finally:
        parts.tokenizer = tok


def table(rows: list[dict]) -> str:
    head = f"{'stage':<10}{'n':>6}{'rate':>10}  " + "".join(f"{c:>11}" for c in CATEGORIES)
    lines = [head]
    for r in rows:
        unit = {"index": "/s", "evaluate": "q/s"}.get(r["stage"], "st/s")
        lines.append(f"{r['stage']:<10}{r['n']:>6}{r['rate']:>7.2f}{unit:<3}  " +
                     "".join(f"{100 * r['share'][c]:>10.1f}%" for c in CATEGORIES))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-cpu", help="a shipped model, export or run directory (its warm start)")
    ap.add_argument("--stages", nargs="*", default=["salient", "reader", "realm", "index", "evaluate"])
    ap.add_argument("--steps", type=int, default=40, help="steps timed per training stage (default 40)")
    ap.add_argument("--eval-queries", type=int, default=320, help="held-out queries evaluated (default 320)")
    ap.add_argument("--quick", action="store_true", help="the quick preset from scratch, few steps: a smoke run")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    known = ("salient", "reader", "realm", "index", "evaluate")
    if bad := [s for s in args.stages if s not in known]:
        raise SystemExit(f"--stages {' '.join(bad)}: unknown; valid: {', '.join(known)}")
    if args.steps < 1 or args.eval_queries < 1:
        raise SystemExit("--steps and --eval-queries: 1 or more")
    if args.quick:
        args.steps, args.eval_queries = min(args.steps, 4), min(args.eval_queries, 32)
    device = torch.device("cpu")
    parts = Parts(args, device)
    todo = stages(parts)
    counts = {"index": 1 if args.quick else 3, "evaluate": args.eval_queries}
    rows = []
    for name in args.stages:
        rows.append(measure(name, todo[name][0], counts.get(name, args.steps), parts, device))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    info = {**machine(device), "source": parts.source, "preset": parts.cfg.preset, "steps": args.steps,
            "categories": list(CATEGORIES), "rows": rows}
    print(f"\n{info['cpu']} ({info['cpu_capability']}), {info['threads']} threads, torch {info['torch']}; "
          f"{parts.source}")
    print(table(rows))
    print("\nlargest operators among `other ops` (share of the stage):")
    for r in rows:
        print(f"  {r['stage']:<10}" + ", ".join(f"{k.replace('aten::', '')} {100 * v:.1f}%"
                                               for k, v in list(r["top_other_ops"].items())[:5]))
    write("profile_stages", info, args.json, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
