"""Small file helpers: atomic writes (write, then rename) and JSONL with errors that name file and line."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def library_version() -> str:
    """The installed realm-lite's version, or "unknown" when it runs from a plain checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("realm-lite")
    except PackageNotFoundError:
        return "unknown"


COMMANDS = "commands.jsonl"  # one line per `realm-lite pretrain/finetune` that wrote into a run


def record_command(run_dir: str | Path, command: str | None) -> None:
    """Append a command line to the run's commands.jsonl (an export lists how its runs were made); None: nothing."""
    import time

    if not command:
        return
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / COMMANDS, "a") as f:
        f.write(json.dumps({"command": command, "realm_lite_version": library_version(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


def current_umask() -> int:
    """The process's file-creation mask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`; the file gets the mode an
    ordinary open() would give it (0o666 less the umask: 0644 under the usual 022), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically; returns the number of rows."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file; a bad line is an error naming file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {missing}")
            yield row
