"""Asynchronous index refresh (paper section 3.3). Notebook 05.

The MIPS index holds Embed_doc(z) for the whole corpus, but Embed_doc keeps training. REALM runs two
jobs: the trainer, and an index builder that, every `refresh_every` steps, takes a snapshot of
Embed_doc's parameters, re-embeds every block and hands the new index back; training goes on
meanwhile with the stale one. Staleness = steps between the snapshot and each use of the index.

    refresher = IndexRefresher(blocks, tokenizer, cfg, run_dir, mode="async")
    refresher.request(doc_tower, step)        # snapshot now, build in a separate process
    if refresher.poll(step): ...               # a finished index was swapped in
    refresher.index, refresher.staleness(step)
"""
from __future__ import annotations

import copy
import io
import queue
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

from realm_lite.io import atomic_write_bytes
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.retriever import embed_blocks, embed_in_bf16


def build_index(tower, blocks, tokenizer, cfg, device="cpu", version: str = "") -> MipsIndex:
    """Embed every block with `tower` and wrap the matrix in a MIPS index."""
    emb = embed_blocks(tower, blocks, tokenizer, cfg.block_len, device=device,
                       autocast=embed_in_bf16(cfg, device))
    return MipsIndex(emb, cfg.index, version=version or fingerprint(tower))


def _builder_main(snapshot_path: str, out_path: str, blocks, tokenizer, cfg, device: str, step: int, results):
    """The builder process: load the snapshot, embed the corpus, write the index atomically, report."""
    try:
        torch.set_num_threads(max(1, cfg.builder_threads))
        tower = torch.load(snapshot_path, map_location=device, weights_only=False)
        t0 = time.time()
        index = build_index(tower, blocks, tokenizer, cfg, device)
        index.save(out_path)
        results.put({"ok": True, "step": step, "path": out_path, "version": index.version,
                     "seconds": round(time.time() - t0, 2)})
    except BaseException:  # report anything, so the trainer can carry on with the last good index
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
        self._proc, self._results = None, None

    def staleness(self, step: int) -> int:
        return step - self.index_step

    @property
    def busy(self) -> bool:
        return self._proc is not None

    def request(self, doc_tower, step: int) -> None:
        """Snapshot Embed_doc now; build at once (sync) or in a separate process (async, skipped if one runs)."""
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
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        out_path = str(self.dir / f"index-{step}.pt")
        self._proc = ctx.Process(target=_builder_main, daemon=True,
                                 args=(str(snapshot_path), out_path, self.blocks, self.tokenizer, self.cfg,
                                       str(self.device), step, self._results))
        self._proc.start()
        self._started = step

    def poll(self, step: int, wait: bool = False) -> bool:
        """Swap in a finished index; True if one was swapped in. A dead builder is logged, not fatal."""
        if not self.busy:
            return False
        msg = self._receive(wait)
        if msg is None:
            return False
        self._proc.join(timeout=5)
        self._proc, self._results = None, None
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
                        return {"ok": False, "step": self._started,
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
        """Terminate a running builder (used by tests and at shutdown)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)

    def close(self) -> None:
        self.kill_builder()
        self._proc, self._results = None, None
