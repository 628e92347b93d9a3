"""realm_lite.distributed on CPU processes (gloo): the sharded index, data-parallel REALM and fine-tuning against one
process, the torchrun commands, and a rank that dies."""
import contextlib
import re

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

from realm_lite.config import get_config
from realm_lite.distributed import Dist, ShardedIndex, my_share, setup, shard_range
from realm_lite.mips import MipsIndex

N, D = 101, 16


@contextlib.contextmanager
def _group(rank: int, world: int, rdzv: str):
    """A spawned worker's gloo group for the block (none for a world of one)."""
    if world > 1:
        td.init_process_group("gloo", init_method=rdzv, rank=rank, world_size=world)
    try:
        yield
    finally:
        if world > 1:
            td.destroy_process_group()


def _queries(rank: int):
    """Rank r's queries and their trivial-retrieval exclusions (global ids, some in the other rank's shard)."""
    g = torch.Generator().manual_seed(10 + rank)
    b = 3 + 2 * rank  # ranks with different batch sizes
    return torch.randn(b, D, generator=g), [{(7 * j + 50 * rank) % N, (j * 13 + 1) % N} for j in range(b)]


def _search_on_shards(rank: int, world: int, rdzv: str):
    with _group(rank, world, rdzv):
        emb = torch.randn(N, D, generator=torch.Generator().manual_seed(0))  # (N, D): every rank builds the same
        lo, hi = shard_range(N, rank, world)
        sharded = ShardedIndex(MipsIndex(emb[lo:hi]), offset=lo, total=N)
        whole = MipsIndex(emb)
        q, excl = _queries(rank)
        for k in (1, 7, 60):  # 60: more than a shard holds, the exact path over a short shard
            s, i = sharded.search(q, k, exclude=excl)
            s1, i1 = whole.search(q, k, exclude=excl)
            assert torch.equal(i, i1), (k, i, i1)
            assert torch.allclose(s, s1, atol=1e-5)  # the same products summed in another order (BLAS blocking)
            assert all(not (set(row) & e) for row, e in zip(i.tolist(), excl))
        with pytest.raises(ValueError, match="exceeds"):
            sharded.search(q, N, exclude=excl)
        ids = torch.randint(0, N, (len(q), 5 + rank), generator=torch.Generator().manual_seed(rank))  # widths differ
        assert torch.equal(sharded.vectors(ids), whole.vectors(ids))  # each row from the rank that holds it
        gathered = sharded.gathered()
        assert torch.equal(gathered.embeddings, emb) if rank == 0 else gathered is None
        again = ShardedIndex.shard_of(whole, Dist(rank, world))
        assert (again.offset, len(again.local)) == (lo, hi - lo)
        assert torch.equal(again.search(q, 7)[1], whole.search(q, 7)[1])


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


# ---- data-parallel REALM --------------------------------------------------------------------------------------
def _first_gradients() -> dict:
    """Patch Loop.step (in this process) to keep a copy of the gradients each stage's loop is given at its first
    step: {stage: [gradient or None for each parameter]}."""
    from realm_lite import training

    kept, step = {}, training.Loop.step

    def keeping(self):
        if self.stage not in kept:
            kept[self.stage] = [p.grad.clone() if p.grad is not None else None for p in self.params]
        step(self)

    training.Loop.step = keeping
    return kept


def _same_gradients(a: list, b: list) -> None:
    """The first step's gradients of one process and of the ranks together: the same up to float sums."""
    assert len(a) == len(b) and sum(g is not None for g in a) > 0
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.allclose(x, y, rtol=1e-3, atol=1e-5), (x - y).abs().max()


DP = dict(realm_steps=3, batch_size=5, refresh_mode="sync", refresh_every=2, log_every=1, checkpoint_every=3,
          retriever_lr=1e-3, reader_lr=1e-3, eval_queries=10, progress=False)  # 5 queries: ranks of 3 and 2


def _realm(rank: int, world: int, rdzv: str, out):
    """REALM steps from a fresh model on `world` ranks (the same seed everywhere); rank 0 saves what it trained.
    On several ranks, the same run again stopped after step 2 and resumed from its checkpoint and index shards."""
    from realm_lite.pretrain import setup_run, train_realm
    from realm_lite.training import Interrupted

    grads = _first_gradients()
    with _group(rank, world, rdzv):
        cfg = get_config("quick", **DP)
        corpus = out / f"corpus-{world}-{rank}"
        run = setup_run("world", cfg, corpus, log=lambda s: None)  # the same on every rank
        history = train_realm(run.model, run.pool, run.blocks, run.inputs, run.tokenizer, cfg, out / f"run-{world}",
                              run.device, log=lambda s: None, dist=Dist(rank, world))
        if rank == 0:
            torch.save({"history": history, "model": run.model.state_dict(), "grads": grads},
                       out / f"result-{world}.pt")
        if world == 1:
            return
        stopped = setup_run("world", cfg, corpus, resume=True, log=lambda s: None)
        with pytest.raises(Interrupted):
            train_realm(stopped.model, stopped.pool, stopped.blocks, stopped.inputs, stopped.tokenizer,
                        cfg.replace(checkpoint_every=1), out / "stopped", run.device, log=lambda s: None, stop_after=2,
                        dist=Dist(rank, world))
        resumed = setup_run("world", cfg, corpus, resume=True, log=lambda s: None)
        train_realm(resumed.model, resumed.pool, resumed.blocks, resumed.inputs, resumed.tokenizer,
                    cfg.replace(checkpoint_every=1), out / "stopped", run.device, resume=True, log=lambda s: None,
                    dist=Dist(rank, world))
        if rank == 0:
            torch.save(resumed.model.state_dict(), out / "resumed.pt")


@pytest.mark.slow
def test_two_ranks_train_as_one_process_with_the_same_global_batch(tmp_path):
    _realm(0, 1, "", tmp_path)
    mp.spawn(_realm, args=(2, f"file://{tmp_path / 'rdzv'}", tmp_path), nprocs=2, join=True)
    one, two = (torch.load(tmp_path / f"result-{n}.pt", weights_only=False) for n in (1, 2))
    _same_gradients(one["grads"]["realm"], two["grads"]["realm"])  # DDP's average of the ranks' scaled losses
    for a, b in zip(one["history"], two["history"]):
        assert a["step"] == b["step"]
        for key in ("loss", "token_acc", "gold_recall"):
            assert a[key] == pytest.approx(b[key], abs=2e-3), (key, a, b)
    assert one["model"].keys() == two["model"].keys()
    worst = max((one["model"][k].float() - two["model"][k].float()).abs().max().item() for k in one["model"])
    assert worst < 1e-4  # float sums in another order, nothing more
    assert (tmp_path / "run-2" / "checkpoint.pt").is_file()  # written by rank 0
    logged = (tmp_path / "run-2" / "log.jsonl").read_text().splitlines()
    assert len([line for line in logged if '"stage": "realm"' in line]) == DP["realm_steps"]  # once, not per rank
    # each rank wrote its half of the index; the checkpoint names both; a resumed run continues exactly
    ck = torch.load(tmp_path / "run-2" / "checkpoint.pt", weights_only=False)
    assert (ck["index_ranks"], ck["index_step"], ck["index_file"]) == (2, 2, "index/ckpt-2-rank{rank}-of-2.pt")
    shards = sorted(p.name for p in (tmp_path / "run-2" / "index").glob("ckpt-*.pt"))
    assert shards == ["ckpt-2-rank0-of-2.pt", "ckpt-2-rank1-of-2.pt"]  # the step-0 ones gone
    sizes = [len(MipsIndex.load(tmp_path / "run-2" / "index" / name)) for name in shards]
    blocks = len((tmp_path / "corpus-2-0" / "blocks.jsonl").read_text().splitlines())
    assert sum(sizes) == blocks and abs(sizes[0] - sizes[1]) <= 1
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=False)
    assert max((two["model"][k].float() - resumed[k].float()).abs().max().item() for k in resumed) < 1e-6


def test_a_sharded_checkpoint_resumes_only_on_as_many_ranks(blocks, tokenizer, cfg, tmp_path):
    from realm_lite.refresh import IndexRefresher

    ck = {"index_ranks": 2, "index_file": "index/ckpt-2-rank{rank}-of-2.pt", "index_step": 2, "index_version": "x"}
    refresher = IndexRefresher(blocks, tokenizer, cfg, tmp_path / "run", mode="sync", log=lambda s: None)
    with pytest.raises(ValueError, match=r"split over 2 rank\(s\): resume it on 2 \(torchrun --nproc_per_node 2\), "
                                         r"not 1"):
        refresher.resume(ck)


def _finetune(rank: int, world: int, rdzv: str, init, out):
    """QA fine-tuning of REALM from a pre-training run on `world` ranks; rank 0 saves what it trained."""
    from realm_lite.finetune import finetune
    from realm_lite.qa import system_from_run
    from realm_lite.qa_data import load_qa

    grads = _first_gradients()
    with _group(rank, world, rdzv):
        qa = system_from_run(init, "realm", dict(qa_steps=3, qa_batch=3, log_every=1, checkpoint_every=3,
                                                 qa_retrieve=8, qa_read=3, progress=False), log=lambda s: None,
                             dist=Dist(rank, world))  # the index sharded on 2 ranks
        history = finetune(qa, load_qa("world", "train", world=qa.world), out / f"qa-{world}", log=lambda s: None,
                           dist=Dist(rank, world))
        if rank == 0:
            torch.save({"history": history, "model": qa.model.state_dict(), "grads": grads},
                       out / f"qa-result-{world}.pt")


@pytest.mark.slow
def test_two_ranks_fine_tune_as_one_process(demo_run, tmp_path):
    init = demo_run.out / "pretrain"
    _finetune(0, 1, "", init, tmp_path)
    mp.spawn(_finetune, args=(2, f"file://{tmp_path / 'rdzv'}", init, tmp_path), nprocs=2, join=True)
    one, two = (torch.load(tmp_path / f"qa-result-{n}.pt", weights_only=False) for n in (1, 2))
    _same_gradients(one["grads"]["qa"], two["grads"]["qa"])
    assert [r["step"] for r in one["history"]] == [r["step"] for r in two["history"]] == [1, 2, 3]
    for a, b in zip(one["history"], two["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=2e-3), (a, b)
    worst = max((one["model"][k].float() - two["model"][k].float()).abs().max().item() for k in one["model"])
    assert worst < 1e-4
    assert (tmp_path / "qa-2" / "checkpoint.pt").is_file() and (tmp_path / "qa-2" / "qa.json").is_file()


def _warm(rank: int, world: int, rdzv: str, out, kind: str):
    """The retriever warm start `kind` and the reader warm-up on `world` ranks; rank 0 saves what they trained."""
    from realm_lite.pretrain import setup_run, warm_start

    grads = _first_gradients()
    with _group(rank, world, rdzv):
        cfg = get_config("quick", warm_start=kind, ict_steps=3, ict_batch=5, reader_warmup_steps=2, batch_size=5,
                         log_every=1, progress=False)
        run = setup_run("world", cfg, out / f"corpus-{kind}-{world}-{rank}", log=lambda s: None)
        result = warm_start(run.model, run.pool, run.blocks, run.inputs, run.tokenizer, cfg, run.device,
                            log=lambda s: None, dist=Dist(rank, world))
        if rank == 0:
            torch.save({"result": result, "model": run.model.state_dict(), "grads": grads},
                       out / f"warm-{kind}-{world}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ict", "salient"])
def test_two_ranks_warm_start_as_one_process(tmp_path, kind):
    """In-batch negatives over the global batch: a rank's queries score every rank's blocks, and the gradient of
    each block's embedding comes back to the rank that embedded it."""
    _warm(0, 1, "", tmp_path, kind)
    mp.spawn(_warm, args=(2, f"file://{tmp_path / 'rdzv'}", tmp_path, kind), nprocs=2, join=True)
    one, two = (torch.load(tmp_path / f"warm-{kind}-{n}.pt", weights_only=False) for n in (1, 2))
    assert set(one["grads"]) == set(two["grads"]) == {kind, "reader_warmup"}
    for stage in one["grads"]:
        _same_gradients(one["grads"][stage], two["grads"][stage])
    for key in ("in_batch_acc", "reader_warmup_exact"):
        assert one["result"][key] == pytest.approx(two["result"][key], abs=1e-6)
    _close_weights(one["model"], two["model"], steps=3 + 2, lr=1e-3)


def _close_weights(a: dict, b: dict, steps: int, lr: float) -> None:
    """Weights trained by one process and by the ranks together: 99.9% of them within 1e-4, and every one within
    what Adam can make of float-sum noise in a gradient near zero (up to lr a step)."""
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    assert (diff > 1e-4).float().mean() < 1e-3 and diff.max() <= steps * lr, (diff > 1e-4).float().mean()


def test_a_global_batch_is_split_by_share():
    items = list(range(5))
    parts = [my_share(items, Dist(r, 2)) for r in range(2)]
    assert parts == [([0, 1, 2], 0.6), ([3, 4], 0.4)]
    with pytest.raises(ValueError, match="batch_size >= ranks"):
        my_share(items[:1], Dist(0, 2))


def _cli(args: list, ranks: int = 1):
    """`python -m realm_lite.cli ARGS`, or under `torchrun --nproc_per_node RANKS`, one thread a process (as torchrun
    gives each rank), offline, this checkout's realm_lite."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    done = subprocess.run([sys.executable, *launcher, "-m", "realm_lite.cli", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_torchrun_pretrain_writes_what_one_process_writes(tmp_path):
    """`torchrun --nproc_per_node 2 -m realm_lite.cli pretrain` (gloo): rank 0's warm starts, data-parallel REALM."""
    args = ["pretrain", "--preset", "quick", "--set", "ict_steps=20", "reader_warmup_steps=10", "realm_steps=4",
            "batch_size=4", "refresh_mode=sync", "refresh_every=2", "eval_queries=20", "log_every=1",
            "progress=false"]
    _cli([*args, "--out", str(tmp_path / "one")])
    printed = _cli([*args, "--out", str(tmp_path / "two")], ranks=2)
    assert printed.count("metrics written to") == 1  # rank 0 alone reports
    one, two = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False)["model"] for d in ("one", "two"))
    _close_weights(one, two, steps=20 + 10 + 4, lr=1e-3)  # data-parallel warm starts, then REALM
    import json

    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    for after in ("after_warm_start", "after_realm"):  # evaluated on the ranks' index shards, searched together
        assert m1[after] == pytest.approx(m2[after], abs=0.051), after  # 20 queries: one answer is 0.05
    rows = [line for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"stage": "realm"' in line]
    assert len(rows) == 4


@pytest.mark.slow
def test_torchrun_finetune_writes_what_one_process_writes(demo_run, tmp_path):
    """`torchrun --nproc_per_node 2 -m realm_lite.cli finetune` (gloo) against the same command in one process."""
    args = ["finetune", "--init", str(demo_run.out / "pretrain"), "--set", "qa_steps=3", "qa_batch=3", "qa_retrieve=8",
            "qa_read=3", "log_every=1", "progress=false"]
    _cli([*args, "--out", str(tmp_path / "one")])
    printed = _cli([*args, "--out", str(tmp_path / "two")], ranks=2)
    assert printed.count("fine-tuned realm written to") == 1  # rank 0 alone reports
    one, two = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False)["model"] for d in ("one", "two"))
    assert max((one[k].float() - two[k].float()).abs().max().item() for k in one) < 1e-5
    rows = [line for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"stage": "qa"' in line]
    assert len(rows) == 3 and len((tmp_path / "two" / "commands.jsonl").read_text().splitlines()) == 1
    i1, i2 = (MipsIndex.load(tmp_path / d / "index.pt") for d in ("one", "two"))  # rank 0 saved the shards as one
    assert i1.version == i2.version and torch.allclose(i1.embeddings, i2.embeddings, atol=1e-5)


DYING_RANK = """
import os, sys
import torch
from realm_lite import training
from realm_lite.config import get_config
from realm_lite.distributed import setup
from realm_lite.pretrain import setup_run, train_realm

dist = setup("cpu")
step = training.Loop.step


def dying_step(self):
    if dist.rank == 1 and self.done == 1:
        os._exit(3)  # a rank lost in its second step, as a crash or an out-of-memory kill would
    step(self)


training.Loop.step = dying_step
cfg = get_config("quick", realm_steps=20, batch_size=4, refresh_mode="sync", refresh_every=5, progress=False)
run = setup_run("world", cfg, sys.argv[1] + f"/corpus-{dist.rank}", log=lambda s: None)
train_realm(run.model, run.pool, run.blocks, run.inputs, run.tokenizer, cfg, sys.argv[1] + "/run", run.device,
            log=lambda s: None, dist=dist)
"""


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_job_without_a_hang(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "dying.py"
    script.write_text(DYING_RANK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # torchrun stops the rank left waiting in the all-reduce, and fails
    root_cause = done.stderr[done.stderr.find("Root Cause"):]
    assert re.search(r"rank\s+:\s+1\b[^\n]*\n\s+exitcode\s+:\s+3\b", root_cause), done.stderr[-2000:]


# ---- asynchronous refresh on several ranks --------------------------------------------------------------------
ASYNC = dict(DP, realm_steps=8, batch_size=4, refresh_mode="async", refresh_every=3, checkpoint_every=100,
             builder_threads=1)
GOOD, KILLED = 3, 6  # refreshes requested at steps 3 and 6; rank 1's builder is killed during the second


def _async(rank: int, world: int, rdzv: str, out):
    """Async REALM on `world` ranks, each with a builder process for its shard; the last rank's builder is killed
    mid-refresh at step KILLED. Waits for the builders at GOOD + 1 and KILLED + 1, so that the run is repeatable."""
    from realm_lite.pretrain import setup_run, train_realm
    from realm_lite.refresh import IndexRefresher

    request, poll, seen = IndexRefresher.request, IndexRefresher.poll, {"swaps": [], "refreshers": []}

    def killing_request(self, doc_tower, step):
        request(self, doc_tower, step)
        if step == KILLED and self.dist.rank == self.dist.world - 1:
            self.kill_builder()

    def waiting_poll(self, step, wait=False):
        swapped = poll(self, step, wait=wait or step in (GOOD + 1, KILLED + 1))
        if swapped:
            seen["swaps"].append((step, self.index_step))
        if self not in seen["refreshers"]:
            seen["refreshers"].append(self)
        return swapped

    IndexRefresher.request, IndexRefresher.poll = killing_request, waiting_poll
    try:  # a world of one runs in the test's own process: the class is restored for the tests after it
        with _group(rank, world, rdzv):
            cfg = get_config("quick", **ASYNC)
            run = setup_run("world", cfg, out / f"corpus-{world}-{rank}", log=lambda s: None)
            logs = []
            history = train_realm(run.model, run.pool, run.blocks, run.inputs, run.tokenizer, cfg,
                                  out / f"run-{world}", run.device, log=logs.append, dist=Dist(rank, world))
    finally:
        IndexRefresher.request, IndexRefresher.poll = request, poll
        (ref,) = seen["refreshers"]
        torch.save({"history": history, "model": run.model.state_dict(), "swaps": seen["swaps"], "logs": logs,
                    "failures": ref.failures, "index_step": ref.index_step, "version": ref.index.version},
                   out / f"async-{world}-{rank}.pt")


@pytest.mark.slow
def test_a_killed_builder_rank_leaves_every_rank_on_the_last_good_index(tmp_path):
    _async(0, 1, "", tmp_path)
    mp.spawn(_async, args=(2, f"file://{tmp_path / 'rdzv'}", tmp_path), nprocs=2, join=True)
    one, r0, r1 = (torch.load(tmp_path / f"async-{n}.pt", weights_only=False) for n in ("1-0", "2-0", "2-1"))
    for r in (one, r0, r1):  # the step-3 index went in at step 4 everywhere; the killed refresh nowhere
        assert r["swaps"] == [(GOOD + 1, GOOD)] and r["failures"] == 1 and r["index_step"] == GOOD
        assert [h["staleness"] for h in r["history"]] == [0, 1, 2, 3, 1, 2, 3, 4]
    assert r0["version"] == r1["version"]  # both shards from the same snapshot (one process's differs in float sums)
    died = [line for line in r0["logs"] if "died" in line]  # rank 0's own builder finished: the other's failed
    assert len(died) == 1 and "builder of 1 other rank(s) failed" in died[0] and not r1["logs"]
    for a, b in zip(one["history"], r0["history"]):  # two ranks trained as one process did, on the same indexes
        assert (a["loss"], a["gold_recall"]) == pytest.approx((b["loss"], b["gold_recall"]), abs=1e-3), (a, b)
    worst = max((one["model"][k].float() - r0["model"][k].float()).abs().max().item() for k in one["model"])
    assert worst < 2e-3  # Adam turns float-sum noise in a near-zero gradient into up to lr (1e-3) a step
    assert not list((tmp_path / "run-2" / "index").glob("index-*"))  # rank 0's unused half removed
