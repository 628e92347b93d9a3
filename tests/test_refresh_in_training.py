"""The asynchronous index refresh inside a real REALM training loop: a builder process spawned, its index
swapped in, and a builder killed mid-refresh leaving training on the last good index to the last step."""
import os

import pytest
import torch

from realm_lite.pretrain import train_realm
from realm_lite.queries import QueryPool
from realm_lite.realm import BlockInputs, Realm
from realm_lite.refresh import IndexRefresher

# refreshes are requested at steps 3 and 6; the first builder is waited for at step 4, the second is killed
RUN = dict(realm_steps=8, batch_size=2, refresh_every=3, refresh_mode="async", log_every=1, checkpoint_every=100,
           warmup_steps=2, builder_threads=1)
GOOD, KILLED = 3, 6


@pytest.mark.slow
def test_async_refresh_swaps_in_an_index_and_survives_a_killed_builder(blocks, world, tokenizer, cfg, tmp_path,
                                                                       monkeypatch):
    c = cfg.replace(**RUN)
    assert c.retriever_lr > 0  # a frozen Embed_doc is never refreshed
    refreshers, first, spawned, swaps = [], [], [], []
    init, request, poll = IndexRefresher.__init__, IndexRefresher.request, IndexRefresher.poll

    def recording_init(self, *args, **kw):
        init(self, *args, **kw)
        refreshers.append(self)

    def killing_request(self, doc_tower, step):
        request(self, doc_tower, step)
        if step == 0:
            first.append(self.index.version)  # the first index is built in place
        elif self.busy:  # a builder process is running for this snapshot
            spawned.append((step, self._proc.pid, self._proc.is_alive()))
            if step == KILLED:
                self.kill_builder()  # dies mid-refresh, without a word to the trainer

    def waiting_poll(self, step, wait=False):
        # the builder for step GOOD runs while step GOOD trains; at GOOD + 1 the trainer waits for its index
        swapped = poll(self, step, wait=wait or step == GOOD + 1)
        if swapped:
            swaps.append((step, self.index_step, self.index.version))
        return swapped

    monkeypatch.setattr(IndexRefresher, "__init__", recording_init)
    monkeypatch.setattr(IndexRefresher, "request", killing_request)
    monkeypatch.setattr(IndexRefresher, "poll", waiting_poll)

    torch.manual_seed(0)
    model, inputs = Realm(c, len(tokenizer)), BlockInputs(blocks, tokenizer, c.block_len)
    pool, logs = QueryPool(blocks, tokenizer, c, world), []
    history = train_realm(model, pool, blocks, inputs, tokenizer, c, tmp_path / "run", torch.device("cpu"),
                          log=logs.append)

    (ref,) = refreshers
    assert [(step, alive) for step, _, alive in spawned] == [(GOOD, True), (KILLED, True)]
    assert all(pid != os.getpid() for _, pid, _ in spawned)  # separate builder processes
    assert [(step, index_step) for step, index_step, _ in swaps] == [(GOOD + 1, GOOD)]  # swapped in at step 4
    assert swaps[0][2] != first[0]  # built from Embed_doc after 3 updates, not the step-0 one
    assert ref.refreshes == 2 and ref.failures == 1 and ref.index_step == GOOD
    assert ref.index.version == swaps[0][2]  # still the index of step 3's snapshot
    # staleness: steps 0-3 on the step-0 index, then reset by the swap; the killed refresh never lands
    assert [r["step"] for r in history] == list(range(1, 9))
    assert [r["staleness"] for r in history] == [0, 1, 2, 3, 1, 2, 3, 4]
    died = [line for line in logs if "died" in line]
    assert len(died) == 1 and f"builder for step {KILLED} died" in died[0]
    assert f"continues on the index from step {GOOD}" in died[0] and "exited with code" in died[0]
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 8 and ck["index_step"] == GOOD  # trained to the last step on the last good index
    assert not ref.busy


KILLED_TRAINER = """
import os, signal, sys
import torch
from realm_lite.config import get_config
from realm_lite.corpus import make_blocks, world_passages
from realm_lite.refresh import IndexRefresher
from realm_lite.retriever import Retriever
from realm_lite.tokenizer import train_wordpiece
from realm_lite.world import World

if __name__ == "__main__":
    cfg = get_config("quick", world_entities=60)
    world = World.generate(cfg)
    tok = train_wordpiece([f"{d.title} {d.text}" for d in world.documents], 1000, sys.argv[1] + "/tok")
    blocks = make_blocks(world_passages(world), tok, cfg.block_len)[0]
    tower = Retriever(cfg, len(tok)).embed_doc
    ref = IndexRefresher(blocks, tok, cfg, sys.argv[1], mode="async", log=lambda s: None)
    ref.request(tower, 0)
    ref.request(tower, 1)
    assert ref.poll(2, wait=True)
    print(ref._proc.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the trainer dies without closing its refresher
"""


@pytest.mark.slow
def test_the_builder_does_not_outlive_a_killed_trainer(tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "trainer.py").write_text(KILLED_TRAINER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with open(tmp_path / "printed", "w") as printed:  # a file, not a pipe: a builder left behind could hold a pipe
        done = subprocess.run([sys.executable, str(tmp_path / "trainer.py"), str(tmp_path)], env=env,
                              stdout=printed, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == -9, (tmp_path / "printed").read_text()[-2000:]
    builder = int((tmp_path / "printed").read_text().split()[-1])

    def running() -> bool:  # a zombie (ended, not yet reaped) counts as ended
        try:
            return Path(f"/proc/{builder}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 20
    while time.time() < deadline and running():
        time.sleep(0.2)
    assert not running()  # it noticed, within its 2 s wait for work, and ended
