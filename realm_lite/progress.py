"""Progress on stderr for stages that can run long (corpus, tokenizer): silent when a stage ends within DELAY s.

    with stage("tokenizer: training WordPiece"):   # "... " after DELAY s, then "...: done in 42s"
        train()
    for row in bar(rows, "reading psgs.tsv"):      # a tqdm bar that appears after DELAY s
        ...
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

DELAY = 10.0  # seconds a stage runs before it reports


@contextmanager
def stage(what: str, file=None):
    """Print `what ...` to stderr once the stage has run DELAY seconds, and `what: done in Ns` when it ends."""
    file = file or sys.stderr
    t0, shown = time.time(), threading.Event()

    def announce():
        shown.set()
        print(f"{what} ...", file=file, flush=True)

    timer = threading.Timer(DELAY, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if shown.is_set() or time.time() - t0 >= DELAY:
            print(f"{what}: done in {time.time() - t0:.0f}s", file=file, flush=True)


def bar(iterable, what: str, total: int | None = None, unit: str = "it"):
    """`iterable` wrapped in a tqdm bar on stderr that appears only after DELAY seconds."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=what, total=total, unit=unit, delay=DELAY, file=sys.stderr, dynamic_ncols=True)
