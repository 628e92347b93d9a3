"""torch.distributed for REALM: the process group that torchrun starts, and the MIPS index sharded over its ranks.

The paper's index holds 13 million blocks, more than one device should hold next to a model. Sharded, each of N
ranks embeds and holds 1/N of the blocks; a search gathers every rank's queries, takes the exact top k of each query
on every shard, gathers those N·k candidates and keeps the k best: the same top k as one index over all blocks (the
pattern Atlas uses). One process is the case N = 1: no process group, nothing gathered.

    dist = setup("cuda")                               # from torchrun's RANK, WORLD_SIZE, LOCAL_RANK; else 1 process
    lo, hi = shard_range(len(blocks), dist.rank, dist.world)
    index = ShardedIndex(MipsIndex(embed(blocks[lo:hi])), offset=lo, total=len(blocks))
    scores, ids = index.search(q, k, exclude=sources)  # (B, k) global block ids, on every rank its own queries

Data parallel: every rank draws the same global batch of B queries (the same seed), takes its share of them
(`shard_range(B, rank, N)`) and runs the loss through DistributedDataParallel, which averages the gradients; each
rank's loss is scaled by N·B_r/B, so that the average is the gradient of the global batch's mean loss, whatever N.
In-batch negatives (the ICT and salient warm starts) score a rank's queries against every rank's blocks
(`gather_with_grad`, whose backward returns each block's gradient to the rank that embedded it).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as td
from torch import nn

from realm_lite.mips import MipsIndex, excluded_mask, exclusion_tensor


@dataclass(frozen=True)
class Dist:
    """This process's place: rank of world, the local rank (its GPU on a machine), and the device it uses."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, shows progress and writes checkpoints."""
        return self.rank == 0


def setup(device: str | torch.device = "cpu") -> Dist:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment):
    NCCL on CUDA, gloo on a CPU. Without torchrun's environment, one process and no group."""
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not td.is_initialized():  # a long timeout: the other ranks wait while rank 0 runs the warm starts
        td.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=12))
    return Dist(rank, world, local, device)


@contextlib.contextmanager
def launched_group(device: str = "auto"):
    """The Dist of a process torchrun started, its group joined for the block and left after; else one process's."""
    if not launched():
        yield Dist()
        return
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    dist = setup("cuda" if cuda else "cpu")
    try:
        yield dist
    finally:
        td.destroy_process_group()


def launched() -> bool:
    """Whether torchrun started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def barrier(dist: Dist) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if dist.world > 1:
        td.barrier()


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s blocks [lo, hi) of n: contiguous, sizes differing by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def _gather_rows(t: torch.Tensor, fill, sizes: list[int]) -> torch.Tensor:
    """Every rank's rows of `t` (B_r, ...), padded to the largest B_r for the collective, then unpadded."""
    width = max(sizes)
    padded = torch.full((width, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in sizes]
    td.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class ShardedIndex:
    """Exact top-k of f(x, z) over blocks held one shard per rank: this rank's `local` index holds blocks
    offset .. offset + len(local) - 1 of `total`. Every rank must call `search` together (a collective)."""

    def __init__(self, local: MipsIndex, offset: int, total: int, group=None):
        if not 0 <= offset <= total - len(local):
            raise ValueError(f"a shard of {len(local)} blocks at offset {offset} does not fit {total} blocks")
        self.local, self.offset, self.total, self.group = local, offset, total, group
        self.world = td.get_world_size(group) if td.is_initialized() else 1
        self.version = local.version

    def __len__(self) -> int:
        return self.total

    @property
    def dim(self) -> int:
        return self.local.dim

    def search(self, queries: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best blocks of all shards per query, never one in `exclude` (global ids): (B, k), (B, k)."""
        if self.world == 1:
            return self.local.search(queries, k, exclude)
        dev = self.local.embeddings.device
        q = queries.detach().float().to(dev)  # (B, D)
        excl = exclusion_tensor(exclude, len(q), dev)  # (B, E) global ids, -1 padding
        if k > self.total - excl.shape[1]:
            raise ValueError(f"k={k} exceeds the {self.total - excl.shape[1]} blocks left after exclusion")
        sizes = torch.tensor([len(q), excl.shape[1]], device=dev)
        every = [torch.empty_like(sizes) for _ in range(self.world)]
        td.all_gather(every, sizes, group=self.group)
        counts, width = [int(s[0]) for s in every], max(int(s[1]) for s in every)
        excl = torch.cat([excl, excl.new_full((len(q), width - excl.shape[1]), -1)], 1)  # (B, E_max)
        all_q, all_excl = _gather_rows(q, 0.0, counts), _gather_rows(excl, -1, counts)  # (ΣB, D), (ΣB, E_max)

        n = len(self.local)
        local = all_excl - self.offset  # this shard's ids of the excluded blocks, -1 where elsewhere
        local = torch.where((all_excl >= 0) & (local >= 0) & (local < n), local, -1)
        w = int((local >= 0).sum(1).max()) if local.numel() else 0  # the most any row excludes here
        local = local.sort(dim=1, descending=True).values[:, :w]  # (ΣB, w): its ids first, then -1
        s = torch.full((len(all_q), k), float("-inf"), device=dev)  # (ΣB, k): a short shard pads with -inf, id -1
        i = torch.full((len(all_q), k), -1, dtype=torch.long, device=dev)
        if k + w <= n:  # every row has k blocks here: the local index's own search
            s[:], top = self.local.search(all_q, k, exclude=local)
            i[:] = top + self.offset
        else:  # a shard smaller than k and its exclusions: all of it, scored exactly
            sc = all_q @ self.local.embeddings.T  # (ΣB, n)
            sc.masked_fill_(excluded_mask(local, 0, n), float("-inf"))
            s[:, :min(k, n)], top = sc.topk(min(k, n), dim=1)
            i[:, :min(k, n)] = torch.where(s[:, :min(k, n)] > float("-inf"), top + self.offset, -1)
        s_all = [torch.empty_like(s) for _ in range(self.world)]
        i_all = [torch.empty_like(i) for _ in range(self.world)]
        td.all_gather(s_all, s, group=self.group)
        td.all_gather(i_all, i, group=self.group)
        best, order = torch.cat(s_all, 1).topk(k, dim=1)  # (ΣB, k) of the N·k candidates
        ids = torch.cat(i_all, 1).gather(1, order)  # (ΣB, k)
        rank = td.get_rank(self.group)
        mine = slice(sum(counts[:rank]), sum(counts[:rank + 1]))
        return best[mine], ids[mine]


    @torch.no_grad()
    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Embed_doc(z) of global block ids (B, n) -> (B, n, D), from the ranks that hold them: every rank's ids
        gathered, each rank fills the rows of its shard, an all-reduce sums them. A collective, as `search`."""
        if self.world == 1:
            return self.local.vectors(ids)
        dev = self.local.embeddings.device
        ids = ids.to(dev)
        every = [torch.zeros(2, dtype=torch.long, device=dev) for _ in range(self.world)]
        td.all_gather(every, torch.tensor(ids.shape, device=dev), group=self.group)
        counts, width = [int(e[0]) for e in every], max(int(e[1]) for e in every)
        ids = torch.cat([ids, ids.new_full((len(ids), width - ids.shape[1]), -1)], 1)  # (B, n_max), -1 padding
        all_ids = _gather_rows(ids, -1, counts)  # (ΣB, n_max)
        local = all_ids - self.offset
        here = (all_ids >= 0) & (local >= 0) & (local < len(self.local))
        out = torch.zeros((*all_ids.shape, self.dim), device=dev)  # (ΣB, n_max, D)
        out[here] = self.local.embeddings[local[here]]
        td.all_reduce(out, group=self.group)
        rank = td.get_rank(self.group)
        return out[sum(counts[:rank]):sum(counts[:rank + 1]), :every[rank][1]]

    def gathered(self) -> MipsIndex | None:
        """The whole index on rank 0 (on the host; None on the other ranks), to save it as one file. A collective."""
        if self.world == 1:
            return self.local
        sizes = [shard_range(self.total, r, self.world) for r in range(self.world)]
        rows = _gather_rows(self.local.embeddings, 0.0, [hi - lo for lo, hi in sizes])  # (N, D) on every rank
        return MipsIndex(rows.cpu(), self.local.backend, version=self.version) if td.get_rank(self.group) == 0 \
            else None

    @classmethod
    def shard_of(cls, index: MipsIndex, dist: "Dist") -> "ShardedIndex | MipsIndex":
        """This rank's shard of a whole index (one process: the index itself)."""
        if dist.world == 1:
            return index
        lo, hi = shard_range(len(index), dist.rank, dist.world)
        return cls(MipsIndex(index.embeddings[lo:hi].clone(), index.backend, version=index.version), lo, len(index))


# ---- data parallel -------------------------------------------------------------------------------------------
class _Step(nn.Module):
    """`loss_fn(model, *args)` as a module's forward: DistributedDataParallel arms its gradient hooks in forward."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *args):
        return self.loss_fn(self.model, *args)


def data_parallel(model: nn.Module, loss_fn: Callable, dist: Dist) -> Callable:
    """`loss_fn(model, *args)`, through DistributedDataParallel on more than one rank (after freezing: it keeps the
    parameters that require a gradient when it is made)."""
    if dist.world == 1:
        return lambda *args: loss_fn(model, *args)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_Step(model, loss_fn),
                                   device_ids=[dist.device] if dist.device.type == "cuda" else None)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated; backward: the gradients every rank's loss sends to this rank's rows, summed."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.lo, ctx.hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
        return _gather_rows(t.contiguous(), 0, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()  # (ΣB_r, ...): this rank's loss's gradient for every rank's rows
        td.all_reduce(grad)  # summed over the ranks' losses
        return grad[ctx.lo:ctx.hi], None, None


def gather_with_grad(t: torch.Tensor, dist: Dist) -> tuple[torch.Tensor, int]:
    """Every rank's rows of `t` (B_r, ...) in rank order, (ΣB_r, ...), with gradients flowing back to the rank that
    holds each row (summed over every rank's loss); and where this rank's rows start. In-batch negatives over the
    global batch: a rank's queries score every rank's blocks."""
    if dist.world == 1:
        return t, 0
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(dist.world)]
    td.all_gather(sizes, torch.tensor([len(t)], device=t.device))
    sizes = [int(n) for n in sizes]
    return _GatherRows.apply(t, sizes, dist.rank), sum(sizes[:dist.rank])


def my_share(items: list, dist: Dist) -> tuple[list, float]:
    """This rank's part of a global batch, and its share of the batch's mean: (items[lo:hi], (hi - lo) / len)."""
    if len(items) < dist.world:
        raise ValueError(f"a batch of {len(items)} cannot be split over {dist.world} ranks: batch_size >= ranks")
    lo, hi = shard_range(len(items), dist.rank, dist.world)
    return items[lo:hi], (hi - lo) / len(items)


def global_row(row: dict, share: float, dist: Dist, sums: tuple[str, ...] = ()) -> dict:
    """A step's numbers over every rank: means weighted by each rank's share of the batch, `sums` added up."""
    if dist.world == 1:
        return row
    keys = list(row)
    t = torch.stack([torch.as_tensor(row[k], dtype=torch.float32, device=dist.device) * (1.0 if k in sums else share)
                     for k in keys])
    td.all_reduce(t)
    return dict(zip(keys, t.unbind()))
