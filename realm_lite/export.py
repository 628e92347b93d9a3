"""A trained REALM as a `from_pretrained`-style directory, and loading it back in seconds. Notebooks 06 and 07.

    realm-lite export runs/cpu exports/world-cpu --qa runs/cpu-qa/realm runs/cpu-qa/ict   # fp16 weights
    pre = realm_lite.load_pretrained("exports/world-cpu")   # model, tokenizer, blocks, world, index, metrics
    pre = realm_lite.load_pretrained("world-cpu")            # the model that ships with the package
    base = realm_lite.load_pretrained("world-cpu", weights="warmstart")   # its frozen-retriever baseline
    qa = realm_lite.load_qa("world-cpu", "realm")            # a fine-tuned QA system (realm_lite.qa.QASystem)

`load_pretrained` and `load_qa` also take a pre-training run directory and a QA run directory.

An export directory holds
  config.json              the run's Config;
  tokenizer/               its WordPiece tokenizer (save_pretrained);
  model.safetensors        the Realm state dict (Embed_input, Embed_doc, the knowledge-augmented encoder),
                           floating tensors cast to the export's dtype;
  warmstart.safetensors    the same model after the warm starts, before REALM: the frozen-retriever baseline;
  blocks.jsonl, world/     the blocks z (and, for the synthetic corpus, the world that states their facts);
  metrics.json             the run's evaluations (after the warm start, after REALM);
  qa/<system>/             optional fine-tuned QA systems: config.json, qa.json (as the QA run wrote it; its
                           "init" names the run it started from), model.safetensors;
  quality.json             optional (--quality N): the export's own numbers on N held-out queries and N test
                           questions (realm_lite.shipped.measure_quality), for checking a later library against;
  export.json              format tag, realm-lite version, the command that wrote it, the commands that made the
                           runs (their commands.jsonl), the source run, dtype and the size in bytes of every
                           other file.
Everything is written into a temporary sibling directory that is renamed into place at the end, so a killed
export leaves either nothing or a whole directory.

Placement: beside the models (it knows no training loop), but it reads a run's checkpoint.pt with
realm_lite.training's file helpers (load_checkpoint, load_weights: no loop in them) and builds the MIPS index with
realm_lite.refresh.build_index, so that a loaded model is searched exactly as the run that trained it.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from realm_lite.io import COMMANDS, atomic_write_bytes, atomic_write_text, current_umask, library_version
from realm_lite.realm import BlockInputs, Realm

FORMAT = "realm-lite-export/1"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
WEIGHTS = "model.safetensors"
WARMSTART_WEIGHTS = "warmstart.safetensors"


# ---- writing ---------------------------------------------------------------------------------------
def export_run(run_dir, out_dir, qa_dirs=None, dtype: str = "float16", overwrite: bool = False,
               command: str | None = None, quality: int = 0) -> dict:
    """Write a finished pre-training run (and optional QA runs) as an export directory; returns export.json.
    With `quality` > 0 the exported model is loaded back and measured on that many held-out queries and test
    questions (quality.json)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    if quality < 0:
        raise ValueError(f"quality {quality}: the number of queries to measure on, 0 or more")
    run, out = Path(run_dir), Path(out_dir)
    cfg, tokenizer, state = _read_run(run)
    for source in [run, *map(Path, qa_dirs or [])]:
        a, b = source.resolve(), out.resolve()
        if a == b or a in b.parents or b in a.parents:
            raise ValueError(f"{out} overlaps {source}: an export goes to a directory of its own")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it, or choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        cfg.save(tmp)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        _save_weights(state, tmp / WEIGHTS, DTYPES[dtype])
        if (run / "warmstart.pt").exists():
            from realm_lite.training import load_checkpoint

            _save_weights(load_checkpoint(run / "warmstart.pt", "warm start", keys=("model",))["model"],
                          tmp / WARMSTART_WEIGHTS, DTYPES[dtype])
        shutil.copyfile(run / "blocks.jsonl", tmp / "blocks.jsonl")
        if (run / "world").is_dir():
            shutil.copytree(run / "world", tmp / "world")
        shutil.copyfile(run / "metrics.json", tmp / "metrics.json")
        systems = [_export_qa(Path(q), run, len(tokenizer), tmp / "qa", DTYPES[dtype]) for q in qa_dirs or []]
        runs = {"pretrain": run, **{f"qa/{name}": Path(q) for name, q in zip(systems, qa_dirs or [])}}
        info = {"format": FORMAT, "realm_lite_version": library_version(),
                "command": command if command is not None else shlex.join(sys.argv),
                "commands": {name: read_commands(d) for name, d in runs.items()},
                "source": str(run.resolve()), "dtype": dtype, "qa": systems}
        _write_info(tmp, info)
        if quality:  # measured on the written files, as anyone loading the export will see them
            from realm_lite.shipped import measure_quality

            atomic_write_text(tmp / "quality.json", json.dumps(measure_quality(tmp, quality), indent=2) + "\n")
            _write_info(tmp, info)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 -> what mkdir would give
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _write_info(tmp: Path, info: dict) -> None:
    """export.json: `info` with the size in bytes of every other file of the directory."""
    info["files"] = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*"))
                     if p.is_file() and p.name != "export.json"}
    info["total_bytes"] = sum(info["files"].values())
    atomic_write_text(tmp / "export.json", json.dumps(info, indent=2) + "\n")


def read_commands(run_dir) -> list[str]:
    """The command lines recorded in a run's commands.jsonl (empty when it was made from Python)."""
    file = Path(run_dir) / COMMANDS
    if not file.is_file():
        return []
    return [json.loads(line)["command"] for line in file.read_text().splitlines() if line.strip()]


def _read_run(run: Path):
    """(cfg, tokenizer, Realm state dict) of a finished run; a missing file or a bad checkpoint names the file."""
    from realm_lite.pretrain import load_run
    from realm_lite.training import load_checkpoint, load_weights

    if not run.is_dir():
        raise FileNotFoundError(f"no pre-training run at {run}")
    if not (run / "tokenizer").exists():
        raise FileNotFoundError(f"{run / 'tokenizer'} is missing: {run} is not a realm-lite pre-training run")
    if not (run / "checkpoint.pt").exists():
        raise FileNotFoundError(f"{run / 'checkpoint.pt'} is missing: the run has not reached REALM's first "
                                f"checkpoint (finish it with `realm-lite pretrain --out {run} --resume`)")
    if not (run / "metrics.json").exists():
        raise FileNotFoundError(f"{run / 'metrics.json'} is missing: the run is unfinished "
                                f"(finish it with `realm-lite pretrain --out {run} --resume`)")
    cfg, _, tokenizer, _ = load_run(run)
    state = load_checkpoint(run / "checkpoint.pt", "REALM checkpoint")["model"]
    load_weights(Realm(cfg, len(tokenizer)), state, run / "checkpoint.pt")  # it fits this run's Realm
    return cfg, tokenizer, state


def _save_weights(state: dict, path: Path, dtype: torch.dtype) -> None:
    """A state dict as safetensors, floating tensors cast to `dtype` (each its own contiguous copy)."""
    from safetensors.torch import save

    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().clone()
               for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))


def _export_qa(qa_dir: Path, run: Path, vocab_size: int, dest_root: Path, dtype: torch.dtype) -> str:
    """qa/<system>/: a QA run's config.json, qa.json and weights; it must start from the exported run's blocks."""
    from realm_lite.config import Config
    from realm_lite.qa import QAModel
    from realm_lite.training import load_checkpoint, load_weights

    for name in ("config.json", "qa.json", "checkpoint.pt"):
        if not (qa_dir / name).exists():
            raise FileNotFoundError(f"{qa_dir / name} is missing: {qa_dir} is not a realm-lite QA run")
    try:
        meta = json.loads((qa_dir / "qa.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{qa_dir / 'qa.json'}: not valid JSON ({e})") from None
    system = meta.get("system")
    if not isinstance(system, str):
        raise ValueError(f"{qa_dir / 'qa.json'}: names no QA system")
    init_blocks = Path(str(meta.get("init", ""))) / "blocks.jsonl"
    if not init_blocks.is_file() or init_blocks.read_bytes() != (run / "blocks.jsonl").read_bytes():
        raise ValueError(f"{qa_dir} was fine-tuned from {meta.get('init')}, whose blocks are not those of {run}")
    dest = dest_root / system
    if dest.exists():
        raise ValueError(f"two QA runs of system {system!r}: an export holds one of each")
    cfg = Config.load(qa_dir)
    state = load_checkpoint(qa_dir / "checkpoint.pt", "QA checkpoint", keys=("model", "step"))["model"]
    load_weights(QAModel(system, cfg, vocab_size), state, qa_dir / "checkpoint.pt")
    cfg.save(dest)
    atomic_write_text(dest / "qa.json", json.dumps(meta, indent=2) + "\n")
    _save_weights(state, dest / WEIGHTS, dtype)
    return system


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (overwrite) is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old")) / out.name
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)  # the previous export stays where it was
        raise
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


# ---- loading ---------------------------------------------------------------------------------------
@dataclass
class Pretrained:
    """A loaded REALM with its corpus, the MIPS index over Embed_doc(z), and its records. Notebooks 06 and 08."""

    cfg: object
    model: Realm
    tokenizer: object
    blocks: list
    world: object  # realm_lite.world.World, or None for a text corpus
    inputs: BlockInputs
    index: object  # realm_lite.mips.MipsIndex: one row Embed_doc(z) per block
    metrics: dict
    info: dict  # export.json (a run directory: its source and format "run")
    path: Path | None = None
    weights: str = "realm"
    _pool: object = field(default=None, repr=False)

    @property
    def qa_systems(self) -> list[str]:
        """The fine-tuned QA systems stored beside the model (load them with load_qa)."""
        return list(self.info.get("qa", []))

    def heldout_queries(self, n: int = 0) -> list:
        """Held-out masked sentences x (realm_lite.queries: a held-out fact masked, its gold blocks known): n drawn
        with the evaluation's fixed seed, or (n = 0) the set the run evaluated on."""
        from realm_lite.queries import QueryPool

        if self._pool is None:
            self._pool = QueryPool(self.blocks, self.tokenizer, self.cfg, self.world)
        return self._pool.evaluation(n or self.cfg.eval_queries)


def resolve(name_or_path) -> Path:
    """A shipped model's name ("world-cpu", realm_lite.shipped) or a directory, as a path that exists."""
    from realm_lite.shipped import SHIPPED, shipped_path

    text = str(name_or_path)
    if text in SHIPPED:
        return shipped_path(text)
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory (give an export, a realm-lite run directory, or a "
                                f"shipped model: {', '.join(SHIPPED)})")
    return path


def read_export_info(path) -> dict:
    """export.json of an export directory; a missing file or another format tag is an error naming it."""
    file = Path(path) / "export.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: {path} is not a realm-lite export (write one with "
                                f"`realm-lite export RUN {path}`)")
    try:
        info = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        tag = info.get("format") if isinstance(info, dict) else None
        raise ValueError(f"{file}: format {tag!r}, not {FORMAT!r}")
    return info


def load_weights_file(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors state dict into `module` in float32; a corrupt or ill-fitting file is named."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from realm_lite.training import load_weights

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    load_weights(module, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, path)


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None


def _fp32_on_cpu(cfg, device):
    """A loaded model embeds its corpus in float32 on a CPU (embed_bf16 "auto" means bf16 on AVX-512 only), so that
    every CPU retrieves the same blocks: 2,002 blocks of the cpu preset take seconds either way."""
    return cfg.replace(embed_bf16="off") if torch.device(device).type == "cpu" and cfg.embed_bf16 == "auto" else cfg


def load_pretrained(name_or_path, device="cpu", weights: str = "realm") -> Pretrained:
    """An export directory, a shipped model's name or a pre-training run directory as a ready REALM: model in eval
    mode, float32 weights, blocks and a fresh index. weights="warmstart": the model before REALM (the warm starts
    only: the frozen-retriever baseline)."""
    from realm_lite.pretrain import load_run  # an export keeps a run's layout: config.json, tokenizer/, blocks, world/
    from realm_lite.refresh import build_index
    from realm_lite.training import load_checkpoint, load_weights

    if weights not in ("realm", "warmstart"):
        raise ValueError(f"weights {weights!r}: realm (after REALM) or warmstart (after the warm starts)")
    path = resolve(name_or_path)
    model_file = {"realm": WEIGHTS, "warmstart": WARMSTART_WEIGHTS}[weights]
    is_run = not (path / "export.json").exists() and any((path / f).exists() for f in ("checkpoint.pt",
                                                                                        "warmstart.pt"))
    if not is_run:
        info = read_export_info(path)
        for name in ("config.json", "tokenizer", "blocks.jsonl", "metrics.json", model_file):
            if not (path / name).exists():
                hint = " (it was exported from a run without warmstart.pt)" if name == WARMSTART_WEIGHTS else ""
                raise FileNotFoundError(f"{path / name} is missing: the export at {path} is incomplete{hint}")
        cfg, blocks, tokenizer, world = load_run(path)
        model = Realm(cfg, len(tokenizer))
        load_weights_file(model, path / model_file)
    else:  # a pre-training run directory
        ck = path / {"realm": "checkpoint.pt", "warmstart": "warmstart.pt"}[weights]
        if not ck.exists():
            raise FileNotFoundError(f"{ck} is missing: {path} has not reached that stage (finish it with "
                                    f"`realm-lite pretrain --out {path} --resume`)")
        cfg, blocks, tokenizer, world = load_run(path)
        model = Realm(cfg, len(tokenizer))
        load_weights(model, load_checkpoint(ck, "pre-training checkpoint")["model"], ck)
        info = {"format": "run", "source": str(path.resolve()), "qa": []}
    cfg = _fp32_on_cpu(cfg, device)
    model.to(device).eval()
    inputs = BlockInputs(blocks, tokenizer, cfg.block_len)
    index = build_index(model.retriever.embed_doc, blocks, tokenizer, cfg, device)  # (N, D), embedded without grad
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
    return Pretrained(cfg, model, tokenizer, blocks, world, inputs, index, metrics, info, path, weights)


def load_qa(name_or_path, system: str | None = None, device="cpu"):
    """A fine-tuned QA system (realm_lite.qa.QASystem) from an export (its qa/<system>) or a shipped model's name,
    or from a QA run directory (`realm-lite finetune --out`), with a fresh index over its Embed_doc."""
    from realm_lite.config import Config
    from realm_lite.finetune import load_system
    from realm_lite.pretrain import load_run
    from realm_lite.qa import QAModel, QASystem, attach_retrieval

    path = resolve(name_or_path)
    if (path / "qa.json").exists():  # a QA run directory
        qa = load_system(path, log=lambda s: None)
        if system is not None and qa.name != system:
            raise ValueError(f"{path} holds the {qa.name} system, not {system}")
        return qa
    info = read_export_info(path)
    if system not in info.get("qa", []):
        have = ", ".join(info.get("qa", [])) or "none"
        raise ValueError(f"{path} holds no QA system {system!r} (it holds: {have})")
    qa_dir = path / "qa" / system
    for name in ("config.json", "qa.json", WEIGHTS):
        if not (qa_dir / name).exists():
            raise FileNotFoundError(f"{qa_dir / name} is missing: the export at {path} is incomplete")
    _, blocks, tokenizer, world = load_run(path)
    cfg = _fp32_on_cpu(Config.load(qa_dir).replace(device=str(device)), device)
    model = QAModel(system, cfg, len(tokenizer))
    load_weights_file(model, qa_dir / WEIGHTS)
    model.to(device).eval()
    meta = _read_json(qa_dir / "qa.json")
    qa = QASystem(system, cfg, model, blocks, tokenizer, torch.device(device), world=world, info=meta)
    attach_retrieval(qa)
    return qa
