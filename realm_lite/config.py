"""Named presets: every size in realm-lite comes from here, never from `if mode` branches.

    cfg = get_config("cpu", world_entities=3000)   # a preset plus keyword overrides
    cfg.save("runs/demo")                           # writes runs/demo/config.json

Seven presets:
  quick     : CI and the notebooks' default; every stage runs in seconds on a CPU.
  cpu       : the small-scale recipe, a real training run on a 2-core laptop (the target: 30 minutes).
  cpu-long  : the cpu recipe made longer, with dropout: a little better, about 1.6 times as long.
  cpu-paper : the paper's recipe (ICT warm start, no reader warm-up) at the cpu preset's scale.
  cpu-text  : real text (SQuAD paragraphs) on a 2-core CPU, every encoder from the offline all-MiniLM-L6-v2.
  full      : a GPU run with bert-base-sized encoders and Wikipedia-scale corpora.
  full-smoke: `full`'s code path, lengths and stages on a CPU in a minute: the offline MiniLM checkpoint, a few steps.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from realm_lite.io import atomic_write_text


class ConfigError(ValueError):
    """An unknown preset or config key, or a value of the wrong type."""


@dataclass(frozen=True)
class Config:
    """Every knob of a run; see README "Presets" for what each one means."""

    preset: str = "quick"
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda when available, else cpu

    # --- the synthetic world (realm_lite.world) ---
    world_entities: int = 400  # total fictional entities over all kinds
    heldout_fraction: float = 0.1  # facts held out from pre-training, for evaluation
    question_splits: tuple = (0.8, 0.1, 0.1)  # train/dev/test, split by entity
    world_phrasings: int = 3  # templates drawn from per relation (1-3): 1 = one fixed phrasing per relation
    world_restate: int = 2  # documents stating a fact: 2 = own + related; 3 = also a third entity's document

    # --- blocks and tokenizer (realm_lite.corpus, realm_lite.tokenizer) ---
    tokenizer: str = ""  # "" = train WordPiece on the corpus; else an HF directory or hub name
    vocab_size: int = 4000
    lowercase: bool = True
    span_words: bool = False  # the words of annotated salient spans (entity names, dates) become whole wordpieces
    block_len: int = 288  # max wordpieces per block z (paper: 288), title included
    query_len: int = 64  # max wordpieces per query x

    # --- masking (realm_lite.masking, paper section 3.4) ---
    masking: str = "salient"  # salient | random-token | random-span
    mask_prob: float = 0.15  # token budget for random-token and random-span masking
    span_geometric_p: float = 0.2  # SpanBERT span lengths ~ Geometric(p), clipped
    span_max_words: int = 10

    # --- encoders (realm_lite.retriever, realm_lite.reader) ---
    backbone: str = ""  # "" = BERTs built from scratch with the sizes below; else an HF dir, hub name or "minilm"
    reader_backbone: str = ""  # the knowledge-augmented encoder's own checkpoint ("" = as `backbone`)
    reader_backbone_layers: int = 0  # keep only the lower n layers of a pretrained reader (0 = all of them)
    hidden: int = 64  # from-scratch BERT width
    heads: int = 2
    retriever_layers: int = 2  # Embed_input and Embed_doc
    reader_layers: int = 2  # the knowledge-augmented encoder
    proj_dim: int = 128  # d: [CLS] state projected to d, f(x,z) = Embed_input(x)^T Embed_doc(z); 0: no projection
    pooling: str = "cls"  # cls (the paper) | mean
    dropout: float = 0.1  # hidden and attention dropout of every encoder (BERT's 0.1)

    # --- retriever warm start: ICT (realm_lite.ict) or salient co-occurrence (realm_lite.warmstart) ---
    ict_steps: int = 100
    ict_batch: int = 32
    ict_lr: float = 1e-3
    ict_remove_prob: float = 0.9  # the query sentence is removed from its block with this probability

    # --- MIPS (realm_lite.mips) ---
    index: str = "exact"  # exact (torch matmul + top-k) | flat | ivf | hnsw (FAISS)
    refresh_every: int = 50  # steps between index refreshes (the paper: about 500)
    refresh_mode: str = "async"  # async: a builder process; sync: in the training loop (teaching, tests)
    builder_threads: int = 1  # CPU threads of the builder process
    embed_bf16: str = "auto"  # bf16 autocast when embedding the corpus: auto = on CUDA and AVX-512 CPUs | on | off

    # --- retriever warm start (realm_lite.pretrain) ---
    warm_start: str = "ict"  # ict (ORQA, the paper) | salient (co-occurrence, realm_lite.warmstart) | none (cold start)
    reader_warmup_steps: int = 0  # reader warm-up steps before REALM (realm_lite.warmstart); 0 = none
    reader_warmup_z: str = "own"  # own: x's own block minus x | salient: another block holding y and another span of x | mixed: half each | own-then-mixed: own first, then mixed | none: ∅ (plain MLM)
    reader_warmup_own_frac: float = 2 / 3  # own-then-mixed: the fraction of reader_warmup_steps with own blocks only
    reader_warmup_lr: float = 5e-4  # the reader warm-up's learning rate (REALM's is reader_lr)
    reader_head_lr: float = -1.0  # the warm-up's lr for the masked-LM head (transform, bias); -1 = reader_warmup_lr (a fresh head on a pretrained body: higher)
    warm_lr_decay: bool = False  # the warm starts' lr: false = constant; true = warm up over 5% of the steps, then fall linearly to 0

    # --- REALM pre-training (realm_lite.realm, realm_lite.pretrain; paper sections 3.1-3.4) ---
    realm_steps: int = 40
    batch_size: int = 8  # masked sentences x per step
    k: int = 8  # candidates per x: the top k-1 retrieved blocks plus the null document (the paper: 8)
    reader_lr: float = 5e-4  # the knowledge-augmented encoder during REALM (0 = frozen: no backward through it)
    retriever_lr: float = 3e-5  # both towers (the paper's; `cpu` uses 1e-4 against a frozen warmed-up reader)
    weight_decay: float = 0.01
    warmup_steps: int = 10  # linear warm-up, then linear decay to 0
    clip_norm: float = 1.0
    autocast: str = "auto"  # auto: bf16 on CUDA GPUs that have it, fp16 + loss scaling on others, fp32 on CPU | bf16 | fp16 | off
    checkpoint_every: int = 100  # steps between checkpoints (one is always written at the end)
    eval_queries: int = 200  # held-out masked sentences evaluated (0 = all of them)
    recall_k: int = 5  # gold-document recall@k reported

    # --- open-QA fine-tuning (realm_lite.reader, realm_lite.qa; paper 3.4, as in ORQA) ---
    qa_retrieve: int = 20  # c: blocks retrieved per question for the retriever loss and top-k accuracy (ORQA: 5000)
    qa_read: int = 5  # k: of those, the top k the reader reads (ORQA, REALM: 5)
    qa_max_span: int = 10  # longest answer span, in wordpieces
    qa_steps: int = 60
    qa_batch: int = 8  # questions per step
    qa_lr: float = 5e-4  # the reader
    qa_retriever_lr: float = 1e-4  # Embed_input (Embed_doc and the index stay frozen)
    qa_warmup_steps: int = 10

    log_every: int = 10  # print a line every N steps
    progress: bool = False  # a tqdm progress bar (to stderr) instead of only the periodic lines

    # --- free-form notes kept with the run ---
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default if f.default is not dataclasses.MISSING else None
            ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
                  float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                  str: lambda v: isinstance(v, str)}.get(type(default), lambda v: True)
            if not ok(value):
                raise ConfigError(f"config key {f.name!r} must be {type(default).__name__}, got {value!r}")
        for key, valid in CHOICES.items():
            if getattr(self, key) not in valid:
                raise ConfigError(f"config key {key!r} is {getattr(self, key)!r}; valid: {', '.join(valid)}")
        for key, interval in RANGES.items():
            if isinstance(getattr(self, key), float) and not math.isfinite(getattr(self, key)):
                raise ConfigError(f"{key}={getattr(self, key)!r}: {key} must be a finite number")
            if not _in_interval(getattr(self, key), interval):
                raise ConfigError(f"{key}={getattr(self, key)!r} is out of range: {key} must be "
                                  f"{_describe(interval)}" + (f" ({WHY[key]})" if key in WHY else ""))
        if self.qa_read > self.qa_retrieve:
            raise ConfigError(f"qa_read={self.qa_read} is more than qa_retrieve={self.qa_retrieve}: the reader "
                              "reads the top qa_read of the qa_retrieve blocks retrieved")
        if self.reader_head_lr < 0 and self.reader_head_lr != -1:
            raise ConfigError(f"reader_head_lr={self.reader_head_lr!r} is out of range: reader_head_lr must be >= 0, "
                              "or -1 for reader_warmup_lr")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden={self.hidden} is not a multiple of heads={self.heads}: "
                              "each attention head gets hidden/heads dimensions")
        splits = self.question_splits
        if (not isinstance(splits, (tuple, list)) or len(splits) != 3
                or not all(isinstance(s, (int, float)) and _in_interval(s, "[0, 1]") for s in splits)
                or abs(sum(splits) - 1) > 1e-6):
            raise ConfigError(f"question_splits={list(splits)!r}: three fractions (train, dev, test) that sum to 1")
        if not re.fullmatch(r"auto|cpu|mps|xpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device={self.device!r}: auto, cpu, cuda, cuda:N, mps or xpu")

    def replace(self, **overrides) -> "Config":
        """A copy with keyword overrides; an unknown key is an error listing the valid ones."""
        _check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["question_splits"] = list(self.question_splits)
        return d

    def save(self, out_dir: str | Path) -> Path:
        """Write the resolved config as `out_dir/config.json` (atomically)."""
        path = Path(out_dir) / "config.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Read a config.json written by `save` (unknown keys are an error)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"no config file at {path}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        _check_keys(d, where=str(path))
        if isinstance(d.get("embed_bf16"), bool):  # runs written before embed_bf16 took "auto"
            d["embed_bf16"] = "on" if d["embed_bf16"] else "off"
        if "question_splits" in d:
            d["question_splits"] = tuple(d["question_splits"])
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


# The open-QA systems of realm_lite.qa (its SYSTEMS), named here so that the command line lists them without torch.
QA_SYSTEMS = ("realm", "ict", "bm25", "closed-book")

CHOICES = {
    "masking": ("salient", "random-token", "random-span"),
    "pooling": ("cls", "mean"),
    "index": ("exact", "flat", "ivf", "hnsw"),
    "refresh_mode": ("async", "sync"),
    "warm_start": ("ict", "salient", "none"),
    "autocast": ("auto", "bf16", "fp16", "off"),
    "embed_bf16": ("auto", "on", "off"),
    "reader_warmup_z": ("own", "salient", "mixed", "own-then-mixed", "none"),
}

# The valid values of every int and float key, in interval notation ("inf": unbounded);
# tests/test_config.py checks that every numeric key has an entry.
RANGES = {
    "seed": "[0, inf)",
    "world_entities": "[50, inf)",
    "heldout_fraction": "[0, 1)",
    "world_phrasings": "[1, 3]",
    "world_restate": "[2, 3]",
    "vocab_size": "[1, inf)",
    "block_len": "[12, inf)",
    "query_len": "[3, inf)",
    "mask_prob": "(0, 1]",
    "span_geometric_p": "(0, 1]",
    "span_max_words": "[1, inf)",
    "reader_backbone_layers": "[0, inf)",
    "hidden": "[1, inf)",
    "heads": "[1, inf)",
    "retriever_layers": "[1, inf)",
    "reader_layers": "[1, inf)",
    "proj_dim": "[0, inf)",
    "dropout": "[0, 1)",
    "ict_steps": "[0, inf)",
    "ict_batch": "[1, inf)",
    "ict_lr": "[0, inf)",
    "ict_remove_prob": "[0, 1]",
    "refresh_every": "[1, inf)",
    "builder_threads": "[1, inf)",
    "reader_warmup_steps": "[0, inf)",
    "reader_warmup_own_frac": "[0, 1]",
    "reader_warmup_lr": "[0, inf)",
    "reader_head_lr": "[-1, inf)",  # and -1 or >= 0: see __post_init__
    "realm_steps": "[0, inf)",
    "batch_size": "[1, inf)",
    "k": "[2, inf)",
    "reader_lr": "[0, inf)",
    "retriever_lr": "[0, inf)",
    "weight_decay": "[0, inf)",
    "warmup_steps": "[0, inf)",
    "clip_norm": "(0, inf)",
    "checkpoint_every": "[1, inf)",
    "eval_queries": "[0, inf)",
    "recall_k": "[1, inf)",
    "qa_retrieve": "[1, inf)",
    "qa_read": "[1, inf)",
    "qa_max_span": "[1, inf)",
    "qa_steps": "[0, inf)",
    "qa_batch": "[1, inf)",
    "qa_lr": "[0, inf)",
    "qa_retriever_lr": "[0, inf)",
    "qa_warmup_steps": "[0, inf)",
    "log_every": "[1, inf)",
}
WHY = {  # the reason for a bound that is not plain "a count" or "a probability"
    "world_entities": "every kind of entity must appear in the world",
    "world_phrasings": "the world has 1 to 3 phrasings per relation",
    "world_restate": "a fact is stated in 2 or 3 documents",
    "block_len": "[CLS] title [SEP] body [SEP] with room for a few body wordpieces",
    "query_len": "[CLS] x [SEP] with at least one wordpiece of x",
    "reader_backbone_layers": "0 keeps all of them",
    "k": "REALM needs at least one retrieved block beside the null document",
    "clip_norm": "0 would clip every gradient to nothing",
    "reader_warmup_own_frac": "a fraction of the reader warm-up's steps",
    "reader_head_lr": "-1 = reader_warmup_lr, else a learning rate",
}


def _in_interval(value, interval: str) -> bool:
    """Whether `value` lies in `interval`, e.g. "[0, 1)" or "(0, inf)"; NaN never does."""
    lo_open, lo, hi, hi_open = interval[0] == "(", *map(float, interval[1:-1].split(",")), interval[-1] == ")"
    return (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)


def _describe(interval: str) -> str:
    """"[1, inf)" -> ">= 1", "(0, inf)" -> "> 0", "[0, 1]" -> "in [0, 1]"."""
    if interval.endswith("inf)"):
        return f"{'>' if interval[0] == '(' else '>='} {interval[1:].split(',')[0]}"
    return f"in {interval}"


PRESETS: dict[str, dict] = {
    # CI: seconds per stage, learns little, exercises every stage of the cpu recipe.
    # Small from-scratch towers use mean pooling: with [CLS] pooling, 2 x 64 ICT did not learn at all
    # (in-batch accuracy 0 after 300 steps; mean pooling 0.94). See docs/small-scale-recipe.md.
    # fp32 corpus embedding is pinned (embed_bf16="off"): CI's outputs must not depend on whether the CPU has
    # AVX-512, and without it bf16 is the slow path. Embedding the quick world's 400 blocks with oneDNN, MKL and
    # ATen held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2) on an AMD
    # EPYC (AVX-512), 1 thread, 2026-12-03: bf16 5.0 s, fp32 1.7 s; a test-sized pre-training run 27.3 s against 14.1 s.
    "quick": dict(world_entities=400, vocab_size=3000, block_len=128, query_len=48, pooling="mean", dropout=0.0,
                  warm_start="salient", reader_warmup_steps=40, reader_warmup_z="own-then-mixed",
                  reader_warmup_own_frac=1 / 3, reader_lr=0.0, retriever_lr=1e-4, embed_bf16="off"),
    # A 2-core laptop, the small-scale recipe (docs/small-scale-recipe.md; the
    # target is 30 minutes for all stages). Beyond the paper: the salient co-occurrence retriever warm start
    # instead of ICT (ICT finds a sentence's own block, not the other entity's block that states the fact), 1,400
    # steps with a decaying lr (recall@5 0.77 before REALM at seed 0, against 0.71 after 2,000 at a constant lr), and
    # a reader warm-up (a from-scratch reader does not learn to copy inside REALM): 2,000 own-block steps teach
    # it to copy a block's subject, then 4,000 half evidence-block steps to copy a related span (the gold-block
    # accuracy after the warm-up 0.64 against 0.51 with 4,000 + 2,000). No dropout
    # (the reader learns to copy 2-3x sooner without it, and a warm-up step is 1.2-1.3x cheaper). In
    # REALM the reader is frozen (it forgot how to copy when trained on: at 5e-4 badly, at the paper's 3e-5
    # still), which makes a step cheaper: 600 steps of the retriever at 1e-4. The paper's path is
    # "cpu-paper".
    "cpu": dict(world_entities=2000, vocab_size=8000, block_len=128, query_len=64, pooling="mean", dropout=0.0,
                hidden=128, heads=4, reader_layers=4, warm_start="salient", ict_steps=1400, warm_lr_decay=True,
                reader_warmup_steps=6000, reader_warmup_z="own-then-mixed", reader_warmup_own_frac=1 / 3,
                reader_lr=0.0, retriever_lr=1e-4, realm_steps=600, batch_size=16, warmup_steps=60, refresh_every=100,
                checkpoint_every=100, eval_queries=0, log_every=50, progress=True,
                qa_retrieve=100, qa_steps=600, qa_batch=16, qa_warmup_steps=50),
    # The cpu recipe with BERT's dropout, longer warm starts (salient 2,400, reader 9,000) and 900 REALM steps: at
    # seed 0 a higher recall@5 than `cpu` (0.820 against 0.81) and a lower accuracy (0.274 against 0.34), about 1.6
    # times as long (docs/results.md).
    "cpu-long": dict(world_entities=2000, vocab_size=8000, block_len=128, query_len=64, pooling="mean",
                     hidden=128, heads=4, reader_layers=4, warm_start="salient", ict_steps=2400,
                     reader_warmup_steps=9000, reader_warmup_z="own-then-mixed", reader_lr=0.0, retriever_lr=1e-4,
                     realm_steps=900, batch_size=16, warmup_steps=90, refresh_every=100,
                     checkpoint_every=100, eval_queries=0, log_every=50, progress=True,
                     qa_retrieve=100, qa_steps=600, qa_batch=16, qa_warmup_steps=50),
    # The paper's recipe at the cpu preset's scale: ICT warm start, reader from scratch, REALM.
    "cpu-paper": dict(world_entities=2000, vocab_size=8000, block_len=128, query_len=64, pooling="mean",
                      ict_steps=1000, realm_steps=1500, batch_size=16, warmup_steps=100, refresh_every=100,
                      checkpoint_every=250, eval_queries=0, log_every=50, progress=True,
                      qa_retrieve=100, qa_steps=600, qa_batch=16, qa_warmup_steps=50),
    # A GPU: bert-base towers over Wikipedia-scale blocks, the paper's block length.
    "full": dict(
        world_entities=20000,
        tokenizer="bert-base-uncased",
        vocab_size=30522,
        block_len=288,
        query_len=96,
        backbone="bert-base-uncased",  # REALM starts all three encoders from BERT
        ict_steps=10000, ict_batch=128, ict_lr=1e-4,
        realm_steps=100000, batch_size=64, reader_lr=3e-5, warmup_steps=10000, refresh_every=500,
        checkpoint_every=2000, eval_queries=0, log_every=100, progress=True,
        qa_retrieve=5000, qa_read=5, qa_steps=20000, qa_batch=16, qa_lr=1e-5, qa_retriever_lr=1e-5,
        qa_warmup_steps=1000,  # ORQA's fine-tuning: retrieve 5000, read 5, lr 1e-5
    ),
}
# `full` where bert-base-uncased cannot be downloaded and there is no GPU (CI, `papermill -p mode full-smoke`):
# the same stages (ICT warm start, REALM with the reader trained and an asynchronous refresh, QA fine-tuning that
# reads 5 of the retrieved blocks), lengths (288-token blocks, 96-token queries) and learning rates, from the
# packaged all-MiniLM-L6-v2 (its own 30,522-wordpiece vocabulary) on a 50-entity world, with a few steps of each.
PRESETS["full-smoke"] = dict(PRESETS["full"], tokenizer="", backbone="minilm", world_entities=50, ict_steps=6,
                             ict_batch=8, realm_steps=4, batch_size=1, warmup_steps=2, refresh_every=2,
                             checkpoint_every=2, eval_queries=20, log_every=2, progress=False, qa_retrieve=32,
                             qa_steps=4, qa_batch=1, qa_warmup_steps=1)

# Real text on a 2-core CPU: SQuAD paragraphs (or any SQuAD-format file) from the offline all-MiniLM-L6-v2, the
# shape of `full` made small. The towers are MiniLM's own sentence geometry: [CLS] pooling, no projection
# (proj_dim=0; a fresh projection threw away much of it, docs/results.md), 256-wordpiece blocks, no retriever warm
# start (ict_steps=0: the QA baseline "ict" is then the pretrained towers with no REALM step). MiniLM has no
# masked-LM head, so a reader warm-up on x's own block trains a fresh one (its own, higher lr); REALM then trains
# the retriever against the frozen reader (k=4), and QA reads the top 2 of 20 blocks, 4 questions a step. With
# `--corpus world` (the CLI's default) the world is the cpu preset's 2,000 entities, not full's 20,000.
PRESETS["cpu-text"] = dict(PRESETS["full"], tokenizer="", backbone="minilm", world_entities=2000, block_len=256,
                           query_len=64, pooling="cls", proj_dim=0, warm_start="none", ict_steps=0,
                           reader_warmup_steps=200, reader_warmup_z="own", reader_warmup_lr=1e-4,
                           reader_head_lr=3e-3, realm_steps=100, batch_size=8, k=4, reader_lr=0.0,
                           retriever_lr=1e-5, warmup_steps=10, refresh_every=50, checkpoint_every=50,
                           eval_queries=256, log_every=10, progress=True, qa_retrieve=20, qa_read=2, qa_steps=150,
                           qa_batch=4, qa_lr=1e-4, qa_retriever_lr=1e-5, qa_warmup_steps=15)


def _check_keys(d: dict, where: str = "overrides") -> None:
    valid = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown} in {where}; valid keys: {', '.join(sorted(valid))}"
        )


def parse_overrides(pairs: list[str]) -> dict:
    """Turn CLI `key=value` strings into typed overrides, using each field's default type."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        key, raw = pair.split("=", 1)
        _check_keys({key: None}, where=f"override {pair!r}")
        default = getattr(Config(), key)
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("true", "1")
            elif isinstance(default, (int, float, str)):
                out[key] = type(default)(raw)
            else:
                out[key] = json.loads(raw)
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(
                f"override {pair!r}: cannot read {raw!r} as {type(default).__name__}"
            ) from None
    return out


def get_config(preset: str = "quick", **overrides) -> Config:
    """The named preset with keyword overrides applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    base = dict(PRESETS[preset], preset=preset)
    _check_keys(overrides)
    base.update(overrides)
    return Config(**base)
