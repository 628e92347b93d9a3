"""Progress on stderr: for data stages that can run long (corpus, tokenizer), silent when a stage ends within
DELAY s; for training loops and evaluation, a bar with cfg.progress or a line every few seconds (Progress).

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
    return _tqdm()(iterable, desc=what, total=total, unit=unit, delay=DELAY, file=sys.stderr, dynamic_ncols=True)


class Progress:
    """A tqdm bar on stderr with cfg.progress; otherwise, with `every` seconds, a line through `log` that often."""

    def __init__(self, total: int, desc: str, cfg, log=print, initial: int = 0, every: float | None = None):
        self.total, self.desc, self.log, self.every, self.n = total, desc, log, every, initial
        self.bar = _tqdm()(total=total, initial=initial, desc=desc, file=sys.stderr) if cfg.progress else None
        self.t0 = self.last = time.time()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.every is not None and self.log is not None and time.time() - self.last >= self.every:
            self.last = time.time()
            self.log(f"{self.desc}: {self.n}/{self.total} ({self.last - self.t0:.0f} s)")

    def write(self, line: str) -> None:
        """A log line, above the bar rather than through it."""
        if self.bar is not None and self.log is print:
            self.bar.write(line)
        elif self.log is not None:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm
