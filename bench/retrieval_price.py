"""What retrieval costs: a REALM step against a plain masked-LM step of the same reader, measured and predicted.

    python bench/retrieval_price.py                      # the shipped model (world-cpu): about 2 min on 2 cores
    python bench/retrieval_price.py --quick              # the quick preset from scratch, 3 steps: a smoke run
    python bench/retrieval_price.py --preset full --device cuda --steps 10      # BERT-base sizes, random blocks
    python bench/retrieval_price.py --preset full --device cuda --bf16 --set batch_size=16

From the shipped trained model (`--model`, or any export or run directory; the cpu preset: batch 16, k = 8, reader
4 x 128, towers 2 x 128, its 2,002 blocks and masked training sentences x), or from scratch at a preset's sizes
(`--preset`; `full` is built as BERT-base-sized encoders from scratch, 12 x 768, with a vocabulary of 30,522, as
`bert-base-uncased` is not available offline; random weights time the same as trained ones) over a synthetic
corpus of `--blocks` random full-length blocks (block_len wordpieces) and random full-length x (query_len
wordpieces, a span of 3 masked), it times, per step of cfg.batch_size masked sentences x:

  mlm                    a plain masked-LM step of the reader: `[CLS] x [SEP] [SEP]` (x with the null document ∅,
                         no retrieval), forward + backward + AdamW step over the reader's parameters
  realm, reader trained  a REALM step (realm_lite.realm.realm_loss: Embed_input(x), MIPS search of the top k-1,
                         f(x, z) of the k candidates with the live Embed_doc, k reader passes per x, the marginal
                         -log p(y|x)), backward, AdamW step; reader_lr > 0 (the preset's, else 3e-5)
  realm, reader frozen   the same as the cpu recipe takes it: reader_lr = 0 under freeze_untrained (no gradient
                         through the reader, which runs in eval mode), only the two towers trained

Each rate is the mean over --steps steps after 2 untimed ones (bench/realm_timing.rate), each step waited for
(common.sync) before the next; every row starts from the same weights, and draws its x with random.Random(cfg.seed)
as bench/realm_timing.realm_steps does. Steps run in float32 (with --bf16: under bf16 autocast, read against the
bf16 limit). The FLOP prediction counts forward FLOPs from the shapes the encoders really run on (hooks on the
towers, the reader and its MLM head record each call's padded (N, L) batch and its masked positions): per token and
layer of a BERT 8H^2 (Q, K, V, O) + 16H^2 (feed-forward) + 4LH (attention over the padded length L); per row of a
tower 2HD (the projection to d); per masked position 2H^2 (the head's transform) + 2HV (the vocabulary); the
exact search 2BND; backward 2x the forward of every module that trains and nothing for a frozen one. Layer norms,
softmaxes, the relevance dot products and the optimizer are not counted. The columns:

  GFLOP      FLOPs of one step as run, padding included (mean over the timed steps); `useful` in the JSON is the
             share left when the encoders count only each row's own tokens (the MLM head as run), so
             GFLOP x (1 - useful) is the arithmetic spent on padding
  GFLOP/s    GFLOP x steps/s; % limit: of common.limit(device)'s fp32 matmul rate (bf16 with --bf16)
  x mlm      seconds per step over the mlm step's
  predicted  the mlm step's seconds x GFLOP(row) / GFLOP(mlm): the time the step would take if it ran at the plain
             masked-LM step's FLOP rate; measured/predicted is what the step costs beyond its arithmetic (Python
             batching of k candidates, search, the marginal, smaller matrices)
  peak MiB   common.PeakMemory around the row (on a CPU the process's high-water mark so far)

A row that runs out of GPU memory is kept with its error and the others go on. Search is exact (torch matmul and
top-k): nothing here uses FAISS. Prints a table and writes JSON (default bench/results/retrieval_price-<tag>.json,
retrieval_price-<preset>-<tag>.json with --preset). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import sys
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from realm_lite.config import ConfigError, get_config, parse_overrides  # noqa: E402
from realm_lite.marginal import join_inputs, pad_targets, sequence_log_prob  # noqa: E402
from realm_lite.masking import MaskedExample  # noqa: E402
from realm_lite.mips import MipsIndex  # noqa: E402
from realm_lite.pretrain import freeze_untrained  # noqa: E402
from realm_lite.realm import BlockInputs, Query, Realm, realm_loss  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # common, realm_timing, also when loaded by path (tests)
from common import PeakMemory, device_arg, limit, machine, sync, write  # noqa: E402
from realm_timing import rate  # noqa: E402

SPAN = 3  # wordpieces masked in a synthetic x (a salient span: an entity name or a date)
STEP_KEYS = ("batch_size", "k", "reader_lr", "retriever_lr", "seed")  # what --set may change in a trained model
FULL = dict(backbone="", tokenizer="", hidden=768, heads=12, retriever_layers=12, reader_layers=12)


def preset_config(name: str, **overrides):
    """A preset's Config for towers built from scratch (`full`: BERT-base sizes, since bert-base-uncased is not
    available offline); an unknown preset or key is a SystemExit naming it."""
    try:
        return get_config(name, **{**(FULL if name == "full" else {}), "progress": False, **overrides})
    except ConfigError as e:
        raise SystemExit(f"--preset {name}: {e}") from None


# ---- a synthetic corpus --------------------------------------------------------------------------
class RandomBlocks(BlockInputs):
    """`n` random full-length blocks z: `[CLS] title [SEP] body [SEP]` of block_len wordpieces for Embed_doc, and
    block_len body wordpieces for the reader. Ids: 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], words from 5 on."""

    PAD, CLS, SEP, MASK, FIRST_WORD = 0, 1, 2, 3, 5

    def __init__(self, n: int, block_len: int, vocab_size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        words = torch.randint(self.FIRST_WORD, vocab_size, (n, block_len), generator=g).tolist()
        title = 4
        self.pad, self.sep, self.block_len = self.PAD, self.SEP, block_len
        self.doc_ids = [[self.CLS] + w[:title] + [self.SEP] + w[title:block_len - 3] + [self.SEP] for w in words]
        self.body_ids = [w[:block_len] for w in words]
        self.null_doc = [self.CLS, self.SEP, self.SEP]


class RandomQueries:
    """Masked sentences x of `length` random wordpieces (`[CLS] ... [SEP]`), a span of SPAN masked, each from a
    random block (its source, excluded from retrieval): a stand-in for realm_lite.queries.QueryPool."""

    def __init__(self, n_blocks: int, length: int, vocab_size: int):
        self.n_blocks, self.length, self.vocab_size = n_blocks, length, vocab_size

    def sample(self, rng: random.Random, n: int) -> list[Query]:
        """n masked sentences drawn with `rng`."""
        out = []
        for _ in range(n):
            ids = ([RandomBlocks.CLS] + [rng.randrange(RandomBlocks.FIRST_WORD, self.vocab_size)
                                         for _ in range(self.length - 2)] + [RandomBlocks.SEP])
            span = min(SPAN, self.length - 2)
            start = rng.randrange(1, self.length - 1 - span + 1)
            positions = list(range(start, start + span))
            targets = [ids[p] for p in positions]
            for p in positions:
                ids[p] = RandomBlocks.MASK
            out.append(Query(MaskedExample(ids, positions, targets, text="", strategy="random"),
                             rng.randrange(self.n_blocks)))
        return out


@torch.no_grad()
def embed_corpus(tower, inputs: BlockInputs, device, batch: int = 256) -> torch.Tensor:
    """Embed_doc(z) of every block of `inputs`, from its id lists, without gradients: (N, D) float32."""
    was = tower.training
    tower.eval()
    out = [tower(**inputs.doc_batch(list(range(i, min(i + batch, len(inputs.doc_ids)))), device)).float()
           for i in range(0, len(inputs.doc_ids), batch)]
    tower.train(was)
    return torch.cat(out)


# ---- what runs -----------------------------------------------------------------------------------
class Setup(NamedTuple):
    """A model, its config, masked sentences x, the MIPS index and the blocks' inputs."""

    cfg: object
    model: Realm
    pool: object  # .sample(rng, n) -> list[Query]
    index: MipsIndex
    inputs: BlockInputs
    source: str


def shipped(name: str, device, overrides: dict) -> Setup:
    """A trained model as it loads (realm_lite.export.load_pretrained), with its own training sentences."""
    from realm_lite.export import load_pretrained
    from realm_lite.queries import QueryPool

    pre = load_pretrained(name, device)
    cfg = pre.cfg.replace(progress=False, **overrides)
    pool = QueryPool(pre.blocks, pre.tokenizer, cfg, pre.world)
    return Setup(cfg, pre.model, pool, pre.index, pre.inputs, f"{name} (trained, {len(pre.blocks)} blocks)")


def from_scratch(cfg, device, n_blocks: int) -> Setup:
    """A Realm at cfg's sizes with random weights over `n_blocks` random full-length blocks."""
    torch.manual_seed(cfg.seed)
    model = Realm(cfg, cfg.vocab_size).to(device)
    inputs = RandomBlocks(n_blocks, cfg.block_len, cfg.vocab_size, cfg.seed)
    index = MipsIndex(embed_corpus(model.retriever.embed_doc, inputs, device))
    pool = RandomQueries(n_blocks, cfg.query_len, cfg.vocab_size)
    return Setup(cfg, model, pool, index, inputs, f"{cfg.preset} preset from scratch, {n_blocks} random blocks")


class FlopCounter:
    """Forward and backward FLOPs of a Realm's towers, reader and MLM head, from the shapes of the calls they run
    (forward pre-hooks), plus what `add` is given (the search). Counts only while `on`."""

    def __init__(self, model: Realm):
        self.on, self.records = False, []
        r = model.retriever
        self._hooks = [tower.register_forward_pre_hook(self._encoder(tower, "towers"), with_kwargs=True)
                       for tower in (r.embed_input, r.embed_doc)]
        self._hooks += [model.reader.bert.register_forward_pre_hook(self._encoder(model.reader, "reader"),
                                                                    with_kwargs=True),
                        model.reader.transform.register_forward_pre_hook(self._head(model.reader))]

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._hooks:
            h.remove()

    def reset(self) -> None:
        """Forget what was counted."""
        self.records = []

    @staticmethod
    def _trains(module) -> bool:
        """Whether a call of `module` now will be followed by its backward."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())

    def _encoder(self, owner, part: str):
        """A hook for a Tower (BERT + projection) or the reader's BERT: one record per call."""
        bert = owner.bert
        h, layers = bert.config.hidden_size, bert.config.num_hidden_layers
        proj = getattr(owner.proj, "out_features", 0) if hasattr(owner, "proj") else 0

        def hook(module, args, kwargs):
            if not self.on:
                return
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            mask = kwargs["attention_mask"] if "attention_mask" in kwargs else args[1]
            n, length = ids.shape
            self.records.append({"part": part, "rows": n, "padded": n * length, "lengths": mask.sum(1),
                                 "flops": n * length * layers * (24 * h * h + 4 * length * h) + n * 2 * h * proj,
                                 "h": h, "layers": layers, "proj": proj, "trains": self._trains(owner)})
        return hook

    def _head(self, reader):
        """A hook for the reader's MLM head (its transform): one record per call."""
        h, v = reader.bert.config.hidden_size, reader.bert.config.vocab_size

        def hook(module, args):
            if self.on:
                n, m = args[0].shape[:2]  # (N, M, H): the masked positions, padded
                self.records.append({"part": "head", "flops": n * m * (2 * h * h + 2 * h * v),
                                     "trains": self._trains(reader)})
        return hook

    def add(self, part: str, flops: int) -> None:
        """FLOPs computed elsewhere (forward only, nothing trains): the search's 2BND."""
        if self.on:
            self.records.append({"part": part, "flops": flops, "trains": False})

    def totals(self, steps: int = 1) -> dict:
        """FLOPs per step: forward by part, backward, the total, and `useful` (the share without padding)."""
        out = {"towers": 0, "reader": 0, "head": 0, "search": 0, "backward": 0}
        useful = 0
        for r in self.records:
            out[r["part"]] += r["flops"]
            out["backward"] += 2 * r["flops"] if r["trains"] else 0
            own = r["flops"]
            if "lengths" in r:  # the same sums over each row's own tokens
                lens = r["lengths"].double()
                own = float((r["layers"] * (24 * r["h"] ** 2 * lens + 4 * r["h"] * lens ** 2)).sum()) + \
                    r["rows"] * 2 * r["h"] * r["proj"]
            useful += own * (3 if r["trains"] else 1)
        out = {key: value / steps for key, value in out.items()}
        out["total"] = sum(out.values())
        out["useful"] = round(useful / steps / out["total"], 4) if out["total"] else None
        return out


@contextlib.contextmanager
def mlm_stepper(model: Realm, cfg, pool, inputs: BlockInputs, device, ctx=None):
    """Yields step(): one plain masked-LM step of the reader on `[CLS] x [SEP] [SEP]` (x with ∅ only), AdamW."""
    was = model.training
    model.train()
    opt = torch.optim.AdamW(model.reader.parameters(), lr=cfg.reader_lr or 3e-5, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)

    def step():
        queries = pool.sample(rng, cfg.batch_size)
        enc = join_inputs([q.example.input_ids for q in queries], [[[]] for _ in queries], inputs.sep, inputs.pad,
                          inputs.block_len, device)  # (B, L): `[CLS] x [SEP] [SEP]`
        pos, tgt = pad_targets([q.example.masked_positions for q in queries], [q.example.target_ids for q in queries],
                               device=device)  # (B, M)
        with ctx() if ctx else contextlib.nullcontext():
            loss = -sequence_log_prob(model.reader.token_log_probs(**enc, masked_positions=pos), tgt).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        yield step
    finally:
        model.train(was)


@contextlib.contextmanager
def realm_stepper(model: Realm, cfg, pool, index, inputs: BlockInputs, device, counter: FlopCounter | None = None,
                  ctx=None):
    """Yields step(): one REALM step as bench/realm_timing.realm_steps takes it (lr-0 modules frozen and in eval mode,
    AdamW over the trained parameters, x drawn with random.Random(cfg.seed)); the search's FLOPs go to `counter`."""
    model.train()
    with freeze_untrained(model, cfg):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=cfg.retriever_lr or cfg.reader_lr, weight_decay=cfg.weight_decay)
        rng = random.Random(cfg.seed)

        def step():
            queries = pool.sample(rng, cfg.batch_size)
            with ctx() if ctx else contextlib.nullcontext():
                out = realm_loss(model, queries, index, inputs, cfg.k, device)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            if counter is not None:
                counter.add("search", 2 * len(queries) * len(index) * index.dim)  # (B, D) x (D, N)

        yield step


def timed(step, steps: int, device, counter: FlopCounter | None = None) -> float:
    """steps/s of step() over `steps` calls after 2 untimed ones (realm_timing.rate), each waited for; `counter`
    counts the timed calls only."""
    calls = [0]

    def waited():
        calls[0] += 1
        if counter is not None:
            counter.on = calls[0] > 2
        step()
        sync(device)

    try:
        return rate(waited, steps, untimed=2)
    finally:
        if counter is not None:
            counter.on = False


def out_of_memory(e: BaseException) -> bool:
    """A GPU (or CPU allocator) out-of-memory error."""
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def free(device, model=None) -> None:
    """Memory back after a row (and after a failed one): `model`'s gradients dropped, the GPU's cache emptied."""
    for p in model.parameters() if model is not None else ():
        p.grad = None
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _run(stepper, steps: int, device, counter: FlopCounter) -> float:
    """steps/s of the stepper's steps; its optimizer is gone once this returns."""
    with stepper() as step:
        return timed(step, steps, device, counter)


def measure(what: str, stepper, steps: int, device, counter: FlopCounter, model=None) -> dict:
    """One row: steps/s of the stepper's steps, FLOPs per timed step and peak memory; an out-of-memory error kept."""
    counter.reset()
    try:
        with PeakMemory(device) as mem:
            per_s = _run(stepper, steps, device, counter)
    except (RuntimeError, torch.OutOfMemoryError) as e:
        if not out_of_memory(e):
            raise
        free(device, model)
        return {"what": what, "error": "out of memory"}
    flops = counter.totals(steps)
    free(device, model)
    return {"what": what, "steps_per_s": sig(per_s), "seconds_per_step": sig(1 / per_s),
            "gflop": sig(flops["total"] / 1e9), "useful": flops["useful"],
            "gflop_by_part": {k: sig(v / 1e9) for k, v in flops.items() if k not in ("total", "useful")},
            "peak_mib": mem.mib}


def sig(x: float, digits: int = 5) -> float:
    """x to `digits` significant digits (GFLOP of a tiny model are small numbers)."""
    return float(f"{x:.{digits}g}")


def compare(rows: list[dict], peak_gflops: float) -> None:
    """GFLOP/s, fraction of the limit, ratio to the mlm row, predicted seconds and measured/predicted, in place."""
    base = rows[0]
    for r in rows:
        if "error" in r:
            continue
        r["gflops"] = sig(r["gflop"] * r["steps_per_s"])
        r["fraction_of_limit"] = sig(r["gflops"] / peak_gflops, 3)
        if "error" in base:
            continue
        r["ratio_to_mlm"] = sig(r["seconds_per_step"] / base["seconds_per_step"], 4)
        r["predicted_seconds"] = sig(base["seconds_per_step"] * r["gflop"] / base["gflop"])
        r["measured_over_predicted"] = sig(r["seconds_per_step"] / r["predicted_seconds"], 4)


def table(rows: list[dict]) -> str:
    """The printed table: a line per row, its error where it has one."""
    head = (f"{'what':<24}{'steps/s':>9}{'s/step':>9}{'GFLOP':>9}{'GFLOP/s':>9}{'% limit':>8}{'x mlm':>7}"
            f"{'predicted':>10}{'meas/pred':>10}{'peak MiB':>10}")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['what']:<24}  {r['error']}")
            continue
        lines.append(f"{r['what']:<24}{r['steps_per_s']:>9.3f}{r['seconds_per_step']:>9.4f}{r['gflop']:>9.2f}"
                     f"{r['gflops']:>9.1f}{100 * r['fraction_of_limit']:>7.1f}%"
                     f"{r.get('ratio_to_mlm', float('nan')):>7.2f}{r.get('predicted_seconds', float('nan')):>10.4f}"
                     f"{r.get('measured_over_predicted', float('nan')):>10.2f}{r['peak_mib']:>10.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a shipped model, export or run directory (default world-cpu)")
    ap.add_argument("--preset", default=None, help="from scratch at a preset's sizes over random blocks instead")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help=f"config overrides (a trained model: {', '.join(STEP_KEYS)})")
    ap.add_argument("--blocks", type=int, default=2000, help="random blocks with --preset (default 2000)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per row (default 20)")
    ap.add_argument("--bf16", action="store_true", help="steps under bf16 autocast, read against the bf16 limit")
    ap.add_argument("--quick", action="store_true", help="the quick preset from scratch, 3 steps: a smoke run")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--json", help="where the results go")
    args = ap.parse_args(argv)
    device = device_arg(args.device)
    if args.model and args.preset:
        raise SystemExit("--model and --preset: one or the other (a trained model, or a preset from scratch)")
    if args.quick:
        args.steps, args.blocks = min(args.steps, 3), min(args.blocks, 200)
        if not args.model and not args.preset:
            args.preset = "quick"
    for name in ("steps", "blocks"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: 1 or more")
    try:
        overrides = parse_overrides(args.set)
    except ConfigError as e:
        raise SystemExit(f"--set: {e}") from None
    if args.preset:
        cfg = preset_config(args.preset, **overrides)
        if cfg.k > args.blocks:
            raise SystemExit(f"--blocks {args.blocks}: fewer than k = {cfg.k} (the top k-1 besides x's source)")
    else:
        args.model = args.model or "world-cpu"
        if bad := sorted(set(overrides) - set(STEP_KEYS)):
            raise SystemExit(f"--set {', '.join(bad)}: a trained model takes only {', '.join(STEP_KEYS)}")
        _check_model(args.model, overrides)

    setup = from_scratch(cfg, device, args.blocks) if args.preset else shipped(args.model, device, overrides)
    cfg, model = setup.cfg, setup.model
    trained_cfg = cfg.replace(reader_lr=cfg.reader_lr or 3e-5, retriever_lr=cfg.retriever_lr or 1e-4)
    frozen_cfg = trained_cfg.replace(reader_lr=0.0)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else None
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    counter = FlopCounter(model)
    steppers = {
        "mlm": lambda: mlm_stepper(model, trained_cfg, setup.pool, setup.inputs, device, ctx),
        "realm, reader trained": lambda: realm_stepper(model, trained_cfg, setup.pool, setup.index, setup.inputs,
                                                       device, counter, ctx),
        "realm, reader frozen": lambda: realm_stepper(model, frozen_cfg, setup.pool, setup.index, setup.inputs,
                                                      device, counter, ctx)}
    rows = []
    for what, stepper in steppers.items():
        model.load_state_dict(state)  # every row from the same weights
        rows.append(measure(what, stepper, args.steps, device, counter, model))
        print(f"{what}: done", flush=True)
    counter.close()
    lim = limit(device)
    peak = lim["matmul_bf16_gflops" if args.bf16 else "matmul_fp32_gflops"]
    compare(rows, peak)
    reader = model.reader.bert.config
    info = {**machine(device), "source": setup.source, "preset": cfg.preset, "steps": args.steps,
            "timing": "mean over --steps steps after 2 untimed, each step synced", "bf16": args.bf16,
            "batch_size": cfg.batch_size, "k": cfg.k, "reader": f"{reader.num_hidden_layers} x {reader.hidden_size}",
            "towers": (f"{model.retriever.embed_input.bert.config.num_hidden_layers} x "
                       f"{model.retriever.embed_input.bert.config.hidden_size}"),
            "vocab_size": reader.vocab_size, "blocks": len(setup.index), "proj_dim": setup.index.dim,
            "reader_lr_trained": trained_cfg.reader_lr, "retriever_lr": trained_cfg.retriever_lr,
            "limit": lim, "limit_used": "matmul_bf16_gflops" if args.bf16 else "matmul_fp32_gflops", "rows": rows}
    where = info.get("gpu") or f"{info['cpu']} ({info['cpu_capability']})"
    print(f"\n{where}, {info['threads']} threads, torch {info['torch']}; {setup.source}; batch {cfg.batch_size}, "
          f"k = {cfg.k}, reader {info['reader']}, towers {info['towers']}; mean of {args.steps} steps; "
          f"limit {peak} GFLOP/s ({'bf16' if args.bf16 else 'fp32'})")
    print(table(rows))
    write(f"retrieval_price-{cfg.preset}" if args.preset and not args.quick else "retrieval_price", info,
          args.json, args.quick)
    return 0


def _check_model(name: str, overrides: dict) -> None:
    """A model that does not exist, or overrides its config refuses, as a SystemExit before loading it."""
    from realm_lite.config import Config
    from realm_lite.export import resolve

    try:
        path = resolve(name)
        cfg = Config.load(path).replace(**overrides)
        n_blocks = sum(1 for line in (path / "blocks.jsonl").open() if line.strip())
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--model {name}: {e}") from None
    if cfg.k > n_blocks:
        raise SystemExit(f"--set k={cfg.k}: more than the {n_blocks} blocks of {name}")


if __name__ == "__main__":
    sys.exit(main())
