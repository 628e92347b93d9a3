"""realm_lite.io: atomic writes leave files with an ordinary file's mode."""
import os
import stat

import pytest

from realm_lite.io import atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "run" / "checkpoint.pt", b"\x00\x01")
        atomic_write_text(tmp_path / "run" / "metrics.json", "{}\n")
        assert os.umask(umask) == umask  # the process's umask is as it was
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    for name in ("run/checkpoint.pt", "run/metrics.json", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == b"\x00\x01"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temporary file left
