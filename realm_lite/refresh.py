"""Asynchronous index refresh (paper section 3.3). Notebook 05.

The MIPS index holds Embed_doc(z) for the whole corpus, but Embed_doc keeps training. REALM runs two
jobs: the trainer, and an index builder that, every `refresh_every` steps, takes a snapshot of
Embed_doc's parameters, re-embeds every block and hands the new index back; training goes on
meanwhile with the stale one. Staleness = steps between the snapshot and each use of the index. The builder is
one process, started at the first asynchronous request with the corpus tokenized once, that stays alive between
refreshes; one that dies is started again at the next request, and training goes on with the last good index.

    refresher = IndexRefresher(blocks, tokenizer, cfg, run_dir, mode="async")
    refresher.request(doc_tower, step)        # snapshot now, build in the builder process
    if refresher.poll(step): ...               # a finished index was swapped in
    refresher.index, refresher.staleness(step)
"""
from __future__ import annotations

import copy
import io
import os
import queue
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

from realm_lite.io import atomic_write_bytes
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.retriever import embed_blocks, embed_ids, embed_in_bf16, tokenize_blocks


def build_index(tower, blocks, tokenizer, cfg, device="cpu", version: str = "") -> MipsIndex:
    """Embed every block with `tower` and wrap the matrix in a MIPS index."""
    emb = embed_blocks(tower, blocks, tokenizer, cfg.block_len, device=device,
                       autocast=embed_in_bf16(cfg, device))
    return MipsIndex(emb, cfg.index, version=version or fingerprint(tower))


def _builder_main(ids, pad_id: int, cfg, device: str, tasks, results):
    """The builder process: for each (snapshot, index path, step) task, load the snapshot, embed the pre-tokenized
    corpus, write the index atomically and report; until a None task, or until the trainer is gone."""
    torch.set_num_threads(max(1, cfg.builder_threads))
    trainer = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=2.0)
        except queue.Empty:
            if os.getppid() != trainer:  # the trainer was killed without a word: do not outlive it
                return
            continue
        if task is None:
            return
        snapshot_path, out_path, step = task
        try:
            tower = torch.load(snapshot_path, map_location=device, weights_only=False)
            t0 = time.time()
            emb = embed_ids(tower, ids, pad_id, device=device, autocast=embed_in_bf16(cfg, device))  # (N, D)
            index = MipsIndex(emb, cfg.index, version=fingerprint(tower))
            index.save(out_path)
            results.put({"ok": True, "step": step, "path": out_path, "version": index.version,
                         "seconds": round(time.time() - t0, 2)})
        except Exception:  # report it, so the trainer can carry on with the last good index
            results.put({"ok": False, "step": step, "error": traceback.format_exc(limit=3)})


class IndexRefresher:
    """Owns the current index and the builder: `request` a refresh, `poll` to swap in a finished one."""

    def __init__(self, blocks, tokenizer, cfg, run_dir: str | Path, mode: str = "async", device="cpu", log=print):
        if mode not in ("async", "sync"):
            raise ValueError(f"unknown refresh mode {mode!r}; valid: async, sync")
        self.blocks, self.tokenizer, self.cfg, self.mode, self.device, self.log = blocks, tokenizer, cfg, mode, device, log
        self.dir = Path(run_dir) / "index"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index: MipsIndex | None = None
        self.index_step = -1  # the step of the snapshot that built the current index
        self.refreshes, self.failures = 0, 0
        self._ids = None  # the corpus's wordpiece ids, tokenized once for the builder
        self._proc, self._tasks, self._results = None, None, None  # the builder process and its queues
        self._pending = None  # the step of the snapshot being built

    def staleness(self, step: int) -> int:
        return step - self.index_step

    @property
    def busy(self) -> bool:
        """A snapshot is being built."""
        return self._pending is not None

    def request(self, doc_tower, step: int) -> None:
        """Snapshot Embed_doc now; build at once (sync) or in the builder process (async, skipped while it builds)."""
        if self.mode == "sync" or self.index is None:  # the first index is always built in place
            self._swap(build_index(doc_tower, self.blocks, self.tokenizer, self.cfg, self.device), step)
            return
        if self.busy:
            return
        snap = copy.deepcopy(doc_tower).cpu().eval()
        buf = io.BytesIO()
        torch.save(snap, buf)
        snapshot_path = self.dir / "snapshot.pt"
        atomic_write_bytes(snapshot_path, buf.getvalue())
        if self._proc is None:
            self._start_builder()
        self._tasks.put((str(snapshot_path), str(self.dir / f"index-{step}.pt"), step))
        self._pending = step

    def _start_builder(self) -> None:
        """A builder process holding the tokenized corpus (spawned: safe with threads and CUDA)."""
        if self._ids is None:
            self._ids = tokenize_blocks(self.blocks, self.tokenizer, self.cfg.block_len)
        ctx = mp.get_context("spawn")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._proc = ctx.Process(target=_builder_main, daemon=True,
                                 args=(self._ids, self.tokenizer.pad_token_id, self.cfg, str(self.device),
                                       self._tasks, self._results))
        self._proc.start()

    def poll(self, step: int, wait: bool = False) -> bool:
        """Swap in a finished index; True if one was swapped in. A dead builder is logged, not fatal."""
        if not self.busy:
            return False
        msg = self._receive(wait)
        if msg is None:
            return False
        self._pending = None
        if not self._proc.is_alive():  # a new one is started at the next request
            self._proc.join(timeout=5)
            self._proc, self._tasks, self._results = None, None, None
        if not msg["ok"]:
            self.failures += 1
            self.log(f"step {step}: index builder for step {msg['step']} died ({msg['error'].strip().splitlines()[-1]}); "
                     f"training continues on the index from step {self.index_step}")
            return False
        index = MipsIndex.load(msg["path"], device=self.device)
        self._swap(index, msg["step"])
        Path(msg["path"]).unlink(missing_ok=True)
        return True

    def _receive(self, wait: bool) -> dict | None:
        """The builder's message; a synthesized failure if it exited without one; None if still running."""
        while True:
            try:
                return self._results.get(timeout=0.2 if wait else 0.001)
            except queue.Empty:
                if not self._proc.is_alive():
                    try:  # it may have put its message just before exiting
                        return self._results.get(timeout=1.0)
                    except queue.Empty:
                        return {"ok": False, "step": self._pending,
                                "error": f"builder process exited with code {self._proc.exitcode}"}
                if not wait:
                    return None

    def adopt(self, index: MipsIndex, snapshot_step: int) -> None:
        """Start from an existing index (a resumed run's), built from the snapshot taken at `snapshot_step`."""
        if len(index) != len(self.blocks):
            raise ValueError(f"index holds {len(index)} blocks, the corpus has {len(self.blocks)}")
        self.index, self.index_step = index, snapshot_step

    def _swap(self, index: MipsIndex, snapshot_step: int) -> None:
        self.index, self.index_step = index, snapshot_step
        self.refreshes += 1

    def kill_builder(self) -> None:
        """Kill the builder process, as a crash would (tests, notebook 05); `poll` then reports the lost build."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)

    def close(self) -> None:
        """Stop the builder: asked to finish, killed if it is still building."""
        if self._proc is not None and self._proc.is_alive() and not self.busy:
            self._tasks.put(None)
            self._proc.join(timeout=5)
        self.kill_builder()
        self._proc, self._tasks, self._results, self._pending = None, None, None, None
