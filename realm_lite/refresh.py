"""Asynchronous index refresh (paper section 3.3). Notebook 05.

The MIPS index holds Embed_doc(z) for the whole corpus, but Embed_doc keeps training. REALM runs two
jobs: the trainer, and an index builder that, every `refresh_every` steps, takes a snapshot of
Embed_doc's parameters, re-embeds every block and hands the new index back; training goes on
meanwhile with the stale one. Staleness = steps between the snapshot and each use of the index. The builder is
one process, started at the first asynchronous request with the corpus tokenized once, that stays alive between
refreshes; one that dies is started again at the next request, and training goes on with the last good index.

On N ranks (realm_lite.distributed) each rank holds and re-embeds its own 1/N of the blocks, a ShardedIndex searched
together: "sync" refreshes on the training ranks between steps, "async" in one builder process per rank. An async
refresh goes in on every rank at the same step, once every rank's builder has answered; if one failed, no rank
swaps and all train on, on the last good index.

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
import re
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

from realm_lite.distributed import Dist, ShardedIndex, barrier, shard_range
from realm_lite.io import atomic_write_bytes
from realm_lite.mips import MipsIndex, fingerprint
from realm_lite.retriever import embed_blocks, embed_ids, embed_in_bf16, tokenize_blocks


def build_index(tower, blocks, tokenizer, cfg, device="cpu", version: str = "") -> MipsIndex:
    """Embed every block with `tower` and wrap the matrix in a MIPS index."""
    emb = embed_blocks(tower, blocks, tokenizer, cfg.block_len, device=device,
                       autocast=embed_in_bf16(cfg, device))
    return MipsIndex(emb, cfg.index, version=version or fingerprint(tower))


def build_sharded(tower, blocks, tokenizer, cfg, device="cpu", dist: Dist | None = None) -> MipsIndex | ShardedIndex:
    """`build_index` in one process; on several ranks, each embeds its share of the blocks, searched together."""
    dist = dist or Dist()
    if dist.world == 1:
        return build_index(tower, blocks, tokenizer, cfg, device)
    lo, hi = shard_range(len(blocks), dist.rank, dist.world)
    return ShardedIndex(build_index(tower, blocks[lo:hi], tokenizer, cfg, device), lo, len(blocks))


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

    def __init__(self, blocks, tokenizer, cfg, run_dir: str | Path, mode: str = "async", device="cpu", log=print,
                 dist: Dist | None = None):
        if mode not in ("async", "sync"):
            raise ValueError(f"unknown refresh mode {mode!r}; valid: async, sync")
        self.blocks, self.tokenizer, self.cfg, self.mode, self.device, self.log = blocks, tokenizer, cfg, mode, device, log
        self.dist = dist or Dist(device=torch.device(device))
        self.lo, self.hi = shard_range(len(blocks), self.dist.rank, self.dist.world)  # this rank's blocks
        self.dir = Path(run_dir) / "index"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index: MipsIndex | ShardedIndex | None = None
        self.index_step = -1  # the step of the snapshot that built the current index
        self.refreshes, self.failures = 0, 0
        self._ids = None  # this rank's blocks as wordpiece ids, tokenized once for the builder
        self._proc, self._tasks, self._results = None, None, None  # the builder process and its queues
        self._pending = None  # the step of the snapshot being built
        self._answer = None  # this rank's builder's answer, held until every rank's builder has answered
        self._saved = None  # (snapshot step, version) of the index file last written for a checkpoint

    @property
    def local(self) -> MipsIndex:
        """The index this process holds: all of it in one process, this rank's shard on several."""
        return getattr(self.index, "local", self.index)

    def _whole(self, local: MipsIndex) -> MipsIndex | ShardedIndex:
        return local if self.dist.world == 1 else ShardedIndex(local, self.lo, len(self.blocks))

    def staleness(self, step: int) -> int:
        return step - self.index_step

    @property
    def busy(self) -> bool:
        """A snapshot is being built."""
        return self._pending is not None

    def request(self, doc_tower, step: int) -> None:
        """Snapshot Embed_doc now; build at once (sync) or in the builder process (async, skipped while it builds)."""
        if self.mode == "sync" or self.index is None:  # the first index is always built in place
            self._swap(build_sharded(doc_tower, self.blocks, self.tokenizer, self.cfg, self.device, self.dist), step)
            return
        if self.busy:
            return
        snap = copy.deepcopy(doc_tower).cpu().eval()
        buf = io.BytesIO()
        torch.save(snap, buf)
        mine = "" if self.dist.world == 1 else f"-rank{self.dist.rank}"
        snapshot_path = self.dir / f"snapshot{mine}.pt"
        atomic_write_bytes(snapshot_path, buf.getvalue())
        if self._proc is None:
            self._start_builder()
        self._tasks.put((str(snapshot_path), str(self.dir / f"index-{step}{mine}.pt"), step))
        self._pending = step

    def _start_builder(self) -> None:
        """A builder process holding the tokenized corpus (spawned: safe with threads and CUDA)."""
        if self._ids is None:
            self._ids = tokenize_blocks(self.blocks[self.lo:self.hi], self.tokenizer, self.cfg.block_len)
        ctx = mp.get_context("spawn")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._proc = ctx.Process(target=_builder_main, daemon=True,
                                 args=(self._ids, self.tokenizer.pad_token_id, self.cfg, str(self.device),
                                       self._tasks, self._results))
        self._proc.start()

    def poll(self, step: int, wait: bool = False) -> bool:
        """Swap in a finished index; True if one was swapped in. A dead builder is logged, not fatal. On several
        ranks every rank polls at the same steps (a collective), and all swap together or not at all."""
        if not self.busy:
            return False
        if self._answer is None:
            self._answer = self._receive(wait)
        msg = self._answer if self.dist.world == 1 else self._agreed(self._answer)
        if msg is None:
            return False
        self._pending, self._answer = None, None
        if not self._proc.is_alive():  # a new one is started at the next request
            self._proc.join(timeout=5)
            self._proc, self._tasks, self._results = None, None, None
        if not msg["ok"]:
            self.failures += 1
            self.log(f"step {step}: index builder for step {msg['step']} died ({msg['error'].strip().splitlines()[-1]}); "
                     f"training continues on the index from step {self.index_step}")
            return False
        index = MipsIndex.load(msg["path"], device=self.device)
        self._swap(self._whole(index), msg["step"])
        Path(msg["path"]).unlink(missing_ok=True)
        return True

    def _agreed(self, msg: dict | None) -> dict | None:
        """Every rank's verdict on this rank's answer: None while any builder is still at work; a failure, on every
        rank, when any builder failed (a shard of the new index alone must not go in); else this rank's answer."""
        import torch.distributed as td

        t = torch.tensor([msg is None, msg is not None and not msg["ok"]], dtype=torch.int32, device=self.dist.device)
        td.all_reduce(t)  # (still building, failed) counted over the ranks
        if t[0] > 0:
            return None
        if t[1] > 0 and msg["ok"]:
            Path(msg["path"]).unlink(missing_ok=True)
            return {"ok": False, "step": msg["step"], "error": f"the builder of {int(t[1])} other rank(s) failed"}
        return msg

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
        """Start from an existing index (a resumed run's; this rank's shard on several), built from the snapshot
        taken at `snapshot_step`."""
        if len(index) != self.hi - self.lo:
            where = "the corpus has" if self.dist.world == 1 else f"rank {self.dist.rank}'s share of the corpus is"
            raise ValueError(f"index holds {len(index)} blocks, {where} {self.hi - self.lo}")
        self.index, self.index_step = self._whole(index), snapshot_step

    # ---- in a checkpoint --------------------------------------------------------------------------------------
    def save_for_checkpoint(self) -> None:
        """Write the index in use (this rank's shard) for a checkpoint, unless written already; then wait for every
        rank, so that the checkpoint rank 0 writes next names only files that exist."""
        if self._saved != (self.index_step, self.index.version):
            self.local.save(self.dir.parent / self._file().format(rank=self.dist.rank))
            self._saved = (self.index_step, self.index.version)
        barrier(self.dist)

    def checkpoint_fields(self) -> dict:
        """What a checkpoint records of the index: its file(s), snapshot step, version and number of shards."""
        return {"index_file": self._file(), "index_step": self.index_step, "index_version": self.index.version,
                "index_ranks": self.dist.world}

    def resume(self, ck: dict) -> None:
        """Continue on the index a checkpoint names (this rank's shard, on as many ranks as wrote it)."""
        ranks = ck.get("index_ranks", 1)
        if ranks != self.dist.world:
            raise ValueError(f"the checkpoint's index is split over {ranks} rank(s): resume it on {ranks} "
                             f"(torchrun --nproc_per_node {ranks}), not {self.dist.world}")
        index = MipsIndex.load(self.dir.parent / ck["index_file"].format(rank=self.dist.rank),
                               expect_version=ck["index_version"], expect_size=self.hi - self.lo, device=self.device,
                               backend=self.cfg.index)
        self.adopt(index, ck["index_step"])
        self._saved = (self.index_step, index.version)

    def forget_older(self) -> None:
        """Remove the index files of checkpoints older than the index in use (after a checkpoint names it)."""
        for old in self.dir.glob("ckpt-*.pt"):
            found = re.match(r"ckpt-(\d+)", old.name)
            if found and int(found.group(1)) < self.index_step:
                old.unlink(missing_ok=True)

    def _file(self, step: int | None = None) -> str:
        step = self.index_step if step is None else step
        return f"index/ckpt-{step}.pt" if self.dist.world == 1 else \
            f"index/ckpt-{step}-rank{{rank}}-of-{self.dist.world}.pt"

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
        self._proc, self._tasks, self._results, self._pending, self._answer = None, None, None, None, None
