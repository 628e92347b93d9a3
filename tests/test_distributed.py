"""realm_lite.distributed on CPU processes with gloo: the sharded index returns what one index over all blocks does."""
import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

from realm_lite.distributed import ShardedIndex, setup, shard_range
from realm_lite.mips import MipsIndex

N, D = 101, 16


def _queries(rank: int):
    """Rank r's queries and their trivial-retrieval exclusions (global ids, some in the other rank's shard)."""
    g = torch.Generator().manual_seed(10 + rank)
    b = 3 + 2 * rank  # ranks with different batch sizes
    return torch.randn(b, D, generator=g), [{(7 * j + 50 * rank) % N, (j * 13 + 1) % N} for j in range(b)]


def _search_on_shards(rank: int, world: int, rdzv: str):
    td.init_process_group("gloo", init_method=rdzv, rank=rank, world_size=world)
    try:
        emb = torch.randn(N, D, generator=torch.Generator().manual_seed(0))  # (N, D): every rank builds the same
        lo, hi = shard_range(N, rank, world)
        sharded = ShardedIndex(MipsIndex(emb[lo:hi]), offset=lo, total=N)
        whole = MipsIndex(emb)
        q, excl = _queries(rank)
        for k in (1, 7, 60):  # 60: more than a shard holds, the exact path over a short shard
            s, i = sharded.search(q, k, exclude=excl)
            s1, i1 = whole.search(q, k, exclude=excl)
            assert torch.equal(i, i1), (k, i, i1)
            assert torch.allclose(s, s1)
            assert all(not (set(row) & e) for row, e in zip(i.tolist(), excl))
        with pytest.raises(ValueError, match="exceeds"):
            sharded.search(q, N, exclude=excl)
    finally:
        td.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_search_is_the_single_index_search(tmp_path, world):
    mp.spawn(_search_on_shards, args=(world, f"file://{tmp_path / 'rdzv'}"), nprocs=world, join=True)


def test_shards_cover_the_blocks_once_and_evenly():
    for n, world in ((101, 2), (10, 3), (2, 4), (0, 2)):
        ranges = [shard_range(n, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(h - lo for lo, h in ranges) - min(h - lo for lo, h in ranges) <= 1
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard_range(10, 2, 2)


def test_one_process_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = setup("cpu")
    assert (dist.rank, dist.world, dist.main) == (0, 1, True) and not td.is_initialized()
    emb = torch.randn(20, 4)
    index = ShardedIndex(MipsIndex(emb), offset=0, total=20)
    q = torch.randn(2, 4)
    assert torch.equal(index.search(q, 3, exclude=[1, 2])[1], MipsIndex(emb).search(q, 3, exclude=[1, 2])[1])
    with pytest.raises(ValueError, match="does not fit"):
        ShardedIndex(MipsIndex(emb), offset=5, total=20)
