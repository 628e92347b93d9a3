"""What every training loop shares: AdamW, schedule, clipping, log lines and log.jsonl, progress, checkpoints.
Notebook 06.

The warm starts (ICT, salient, reader warm-up), REALM and QA fine-tuning each read as

    loop = Loop("realm", cfg.realm_steps, params, cfg, warmup=cfg.warmup_steps, rng=rng, checkpoints=...)
    for step in loop:                        # step t of T, from 1 (or from a checkpoint's step + 1)
        loss = ...
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.step()                          # clip the gradient norm, AdamW step, schedule step
        loop.record(loss=loss.detach(), ...) # averaged over cfg.log_every steps: a log line, a row of log.jsonl

`record` takes numbers or 0-dim tensors; tensors are read on the host only when a line is logged, so a step on a
GPU does not wait for its own numbers.

A checkpoint holds the optimizer, the schedule, the loop's `random.Random`, torch's and CUDA's random
states, the step and the log so far: all plain tensors, numbers, strings, tuples, lists and dicts, so
that `load_checkpoint` reads it with `weights_only=True`, and a resumed loop draws the same batches and
dropout masks as an uninterrupted one.
"""
from __future__ import annotations

import io
import json
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from realm_lite.io import atomic_write_bytes, atomic_write_text
from realm_lite.progress import Progress

LOOP_KEYS = ("stage", "step", "history", "window", "optimizer", "rng", "torch_rng")


# ---- checkpoint files ---------------------------------------------------------------------------
def save_checkpoint(obj: dict, path) -> None:
    """torch.save `obj` to `path` atomically (write beside it, then rename): a kill leaves the old file whole."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, what: str = "checkpoint", keys: tuple[str, ...] = ("model",)) -> dict:
    """A checkpoint read with weights_only=True; a truncated, corrupt or foreign file is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise ValueError(f"{path}: not a readable {what} ({_why(e)})") from None
    if not isinstance(ck, dict):
        raise ValueError(f"{path}: not a realm-lite {what} (it holds a {type(ck).__name__}, not a dict)")
    missing = [k for k in keys if k not in ck]
    if missing:
        raise ValueError(f"{path}: not a realm-lite {what} (no {', '.join(missing)} in it)")
    return ck


def _why(e: Exception) -> str:
    msg = str(e)
    if isinstance(e, EOFError) or "zip archive" in msg or "central directory" in msg:
        return "the file is truncated or corrupt"
    if "allowed global" in msg:
        return "it holds Python objects, not only tensors, numbers, strings, lists and dicts"
    if isinstance(e, pickle.UnpicklingError):
        return "not a torch file"
    return f"{type(e).__name__}: {(msg.splitlines() or [''])[0][:200]}"


def load_weights(module: torch.nn.Module, state: dict, path) -> None:
    """module.load_state_dict(state), with a mismatch (another model's checkpoint) a ValueError naming `path`."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: its weights do not fit this model ({str(e).splitlines()[0][:200]})") from None


def rng_states(device) -> dict:
    """torch's random state and, on a CUDA device, CUDA's: what dropout draws from."""
    device = torch.device(device)
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(ck: dict, device) -> None:
    """Set torch's (and CUDA's) random state from a checkpoint written with `rng_states`."""
    if ck.get("torch_rng") is not None:
        torch.set_rng_state(ck["torch_rng"])
    if ck.get("cuda_rng") is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(ck["cuda_rng"], torch.device(device))


# ---- log.jsonl and progress ---------------------------------------------------------------------
def append_log(run_dir, row: dict) -> None:
    """One JSON object as a line of run_dir/log.jsonl."""
    path = Path(run_dir) / "log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _forget_log(run_dir, stage: str, after: int) -> None:
    """Drop the rows of `stage` past step `after`: a resumed stage logs them again."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = [line for line in lines if line.strip() and not _past(json.loads(line), stage, after)]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def _past(row: dict, stage: str, after: int) -> bool:
    return row.get("stage") == stage and row.get("step", 0) > after


# ---- the loop -----------------------------------------------------------------------------------
class Interrupted(Exception):
    """Raised by a loop after the checkpoint at `stop_after` (before its last step), as a crash would: for tests
    of resume."""


@dataclass
class Checkpoints:
    """Where a loop writes: run_dir/log.jsonl, and a checkpoint every cfg.checkpoint_every steps and at the end."""

    run_dir: Path
    save: Callable[[dict], None]  # writes a checkpoint from the loop's state plus what the stage adds (weights)
    resume: dict | None = None  # a checkpoint of this stage to continue from
    stop_after: int | None = None  # raise Interrupted after this step's checkpoint
    writes: bool = True  # this process writes the log and checkpoints (of several ranks, rank 0 alone)
    every_rank: Callable[[], None] | None = None  # what every rank writes before the checkpoint (its index shard)


def mean_row(window: list[dict]) -> dict:
    """The mean of each recorded value over the steps since the last log line."""
    return {k: round(sum(w[k] for w in window) / len(window), 4) for k in window[0]}


def scalars(out: dict) -> dict:
    """The numbers of a loss function's output (0-dim tensors detached, left on their device); other tensors left
    out."""
    return {k: v.detach() if torch.is_tensor(v) else v for k, v in out.items()
            if (torch.is_tensor(v) and v.dim() == 0) or isinstance(v, (int, float))}


def on_host(row: dict) -> dict:
    """A recorded row with its 0-dim tensors read as Python numbers (a host sync on a GPU)."""
    return {k: v.item() if torch.is_tensor(v) else v for k, v in row.items()}


def warm_schedule(cfg, steps: int) -> int | None:
    """Loop's `warmup` for a warm start: None (constant lr) unless cfg.warm_lr_decay (5% warm-up, then linear decay)."""
    return max(1, steps // 20) if cfg.warm_lr_decay else None


class Loop:
    """`for step in Loop(...)`: AdamW over `params` (param groups may set their own lr), an optional linear
    warm-up/decay schedule (`warmup` steps), gradient clipping at `clip`; log rows every cfg.log_every steps.
    With `scale_loss` (fp16 autocast), `backward` scales the loss and `step` unscales, skipping a step whose
    gradients overflowed (torch.amp.GradScaler)."""

    def __init__(self, stage: str, total: int, params, cfg, *, lr: float | None = None, weight_decay: float = 0.01,
                 warmup: int | None = None, clip: float = 1.0, rng: random.Random | None = None, device="cpu",
                 log=print, desc: str | None = None, summarize: Callable[[list], dict] = mean_row,
                 checkpoints: Checkpoints | None = None, scale_loss: bool = False):
        from transformers import get_linear_schedule_with_warmup

        self.stage, self.total, self.cfg, self.clip, self.device, self.log = stage, total, cfg, clip, device, log
        self.desc, self.summarize, self.checkpoints = desc or stage, summarize, checkpoints
        self.rng = rng if rng is not None else random.Random(cfg.seed)
        # fused: one kernel over all parameters, the same update as the per-tensor loop (on 2 CPU cores, 1.1 against
        # 9.3 ms a step for the 1.7M weights of the cpu reader)
        self.opt = torch.optim.AdamW(params, weight_decay=weight_decay, fused=True, **({} if lr is None else {"lr": lr}))
        self.sched = None if warmup is None else get_linear_schedule_with_warmup(self.opt, warmup, total)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if scale_loss else None
        self.done, self.history, self.window, self.seconds_before = 0, [], [], 0.0
        if checkpoints is not None and checkpoints.resume is not None:
            self.restore(checkpoints.resume)
        elif checkpoints is not None and checkpoints.writes:
            _forget_log(checkpoints.run_dir, stage, 0)  # an earlier attempt killed before its first checkpoint

    def __iter__(self):
        """Yield the number of each step to take; log, checkpoint and (stop_after) interrupt after it."""
        self.t0, start = time.time(), self.done
        progress = Progress(self.total, self.desc, self.cfg, self.log, initial=self.done)
        try:
            while self.done < self.total:
                yield self.done + 1
                self.done += 1
                progress.update(1)
                if self.done % self.cfg.log_every == 0 or self.done == self.total:
                    self._log_row((self.done - start) / max(time.time() - self.t0, 1e-9), progress)
                ck = self.checkpoints
                stop = ck is not None and ck.stop_after is not None and ck.stop_after <= self.done < self.total
                if ck is not None and (self.done % self.cfg.checkpoint_every == 0 or self.done == self.total or stop):
                    if ck.every_rank is not None:
                        ck.every_rank()
                    if ck.writes:
                        ck.save(self.state())
                if stop:
                    raise Interrupted(f"{self.stage} stopped after step {self.done}")
        finally:
            progress.close()

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), the loss scaled first when the loop scales it."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> None:
        """Clip the gradient norm, take the optimizer step, advance the schedule."""
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)  # skipped when a gradient is inf or NaN
            self.scaler.update()
        else:
            self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def record(self, **values) -> None:
        """This step's numbers, averaged (by `summarize`) into the next log row."""
        self.window.append(values)

    @property
    def seconds(self) -> float:
        """Seconds spent in this loop, including the runs before a resume."""
        return round(self.seconds_before + time.time() - getattr(self, "t0", time.time()), 1)

    def _log_row(self, steps_per_s: float, progress: Progress) -> None:
        row = {"step": self.done, **self.summarize([on_host(w) for w in self.window]),
               "steps_per_s": round(steps_per_s, 2),
               "seconds": self.seconds}
        self.history.append(row)
        self.window = []
        progress.write(f"{self.desc} step {self.done:5d}  " + "  ".join(
            f"{k} {_fmt(v)}" for k, v in row.items() if k not in ("step", "steps_per_s", "seconds")) +
            f"  {row['steps_per_s']:.2f} steps/s")
        if self.checkpoints is not None and self.checkpoints.writes:
            append_log(self.checkpoints.run_dir, {"stage": self.stage, **row})

    def state(self) -> dict:
        """Everything but the weights that a resumed loop needs to continue exactly."""
        return {"stage": self.stage, "step": self.done, "history": self.history,
                "window": [on_host(w) for w in self.window],
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict() if self.sched else None,
                "rng": self.rng.getstate(), **rng_states(self.device), "seconds": self.seconds,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def restore(self, ck: dict) -> None:
        """Continue from `state()` as saved in a checkpoint (the caller has loaded the weights)."""
        self.opt.load_state_dict(ck["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(ck["scheduler"])
        self.rng.setstate(ck["rng"])
        restore_rng(ck, self.device)
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.done, self.history, self.window = ck["step"], ck["history"], ck.get("window", [])
        self.seconds_before = ck.get("seconds", 0.0)
        if self.checkpoints is not None and self.checkpoints.writes:
            _forget_log(self.checkpoints.run_dir, self.stage, self.done)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v)
