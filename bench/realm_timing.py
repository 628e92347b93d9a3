"""Timing helpers shared by the speed benches: a rate over timed calls, and REALM steps as `train_realm` takes them."""
from __future__ import annotations

import contextlib
import random
import time

import torch

from realm_lite.pretrain import freeze_untrained
from realm_lite.realm import realm_loss


def rate(step, steps: int, untimed: int = 2) -> float:
    """steps/s of `step()` over `steps` calls after `untimed` ones."""
    for _ in range(untimed):
        step()
    t0 = time.time()
    for _ in range(steps):
        step()
    return steps / (time.time() - t0)


def realm_steps(model, cfg, pool, index, inputs, device, steps: int, ctx=contextlib.nullcontext,
                reader_train: bool = False) -> float:
    """steps/s of REALM steps on -log p(y|x) (paper eq. 1-2), lr-0 modules frozen and in eval mode as in
    `train_realm` (`reader_train=True` puts a frozen reader back in train mode: dropout on); each loss under `ctx()`."""
    model.train()
    with freeze_untrained(model, cfg):
        if reader_train:
            model.reader.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=cfg.retriever_lr or cfg.reader_lr)
        rng = random.Random(cfg.seed)

        def step():
            queries = pool.sample(rng, cfg.batch_size)
            with ctx():
                out = realm_loss(model, queries, index, inputs, cfg.k, device)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()

        return rate(step, steps)
