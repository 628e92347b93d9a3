"""Tests for data/download.py. No network: files come from a local http.server
on 127.0.0.1, and "offline" is simulated (a refused connection, a failed DNS
lookup, or a proxy that is not there)."""

import functools
import gzip
import hashlib
import http.server
import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "download.py"


@pytest.fixture(scope="module")
def dl():
    spec = importlib.util.spec_from_file_location("realm_lite_data_download", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no data/__pycache__
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    yield module
    sys.modules.pop(spec.name, None)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base_url, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(dl, monkeypatch, url, *, sha256=None, md5=None, size=None, name="tiny.txt"):
    """Register a one-file dataset 'tiny' and return its RemoteFile."""
    spec = dl.RemoteFile(url, name, size, sha256, md5, "the test")
    monkeypatch.setitem(dl.DATASETS, "tiny", dl.Dataset("a tiny test set", "text", (spec,)))
    return spec


def leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob("*.part"))


def test_download_verifies_and_renames_atomically(dl, server, tmp_path, monkeypatch, capsys):
    base, www = server
    content = b"question\tanswer\n" * 1000
    (www / "tiny.txt").write_bytes(content)
    tiny(dl, monkeypatch, f"{base}/tiny.txt",
         sha256=hashlib.sha256(content).hexdigest(), md5=hashlib.md5(content).hexdigest(),
         size=len(content))
    out = tmp_path / "raw"
    dest = out / "tiny" / "tiny.txt"

    renames = []
    real_replace = os.replace

    def spy_replace(src, dst):
        # At the moment of the rename the final file must not exist yet and the
        # complete content must be in FILE.part.
        assert Path(src).name == "tiny.txt.part"
        assert Path(dst) == dest and not dest.exists()
        assert Path(src).read_bytes() == content
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(dl.os, "replace", spy_replace)
    assert dl.main(["--out", str(out), "tiny"]) == 0
    assert dest.read_bytes() == content
    assert len(renames) == 1
    assert leftovers(out) == []
    stdout = capsys.readouterr().out
    assert "checksum matches" in stdout


def test_checksum_mismatch_is_an_error_and_leaves_nothing(dl, server, tmp_path, monkeypatch, capsys):
    base, www = server
    (www / "tiny.txt").write_bytes(b"these are not the published bytes\n")
    url = f"{base}/tiny.txt"
    spec = tiny(dl, monkeypatch, url, sha256="0" * 64)
    out = tmp_path / "raw"

    with pytest.raises(dl.ChecksumError, match="checksum mismatch"):
        dl.download_file(spec, out / "tiny")
    assert not (out / "tiny" / "tiny.txt").exists()
    assert leftovers(out) == []

    assert dl.main(["--out", str(out), "tiny"]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and url in err and "0" * 64 in err
    assert "Traceback" not in err
    assert not (out / "tiny" / "tiny.txt").exists()
    assert leftovers(out) == []


def test_size_mismatch_is_an_error(dl, server, tmp_path, monkeypatch):
    base, www = server
    (www / "tiny.txt").write_bytes(b"12345")
    spec = tiny(dl, monkeypatch, f"{base}/tiny.txt", size=6,
                sha256=hashlib.sha256(b"12345").hexdigest())
    with pytest.raises(dl.ChecksumError, match="size 5 bytes, expected 6"):
        dl.download_file(spec, tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []


def test_file_without_published_checksum_reports_its_sha256(dl, server, tmp_path, monkeypatch, capsys):
    base, www = server
    content = b"no checksum was published for me\n"
    (www / "tiny.txt").write_bytes(content)
    tiny(dl, monkeypatch, f"{base}/tiny.txt")
    assert dl.main(["--out", str(tmp_path), "tiny"]) == 0
    stdout = capsys.readouterr().out
    assert hashlib.sha256(content).hexdigest() in stdout
    assert "NOT VERIFIED" in stdout
    assert (tmp_path / "tiny" / "tiny.txt").read_bytes() == content


def test_offline_dns_failure_exit_2_names_the_url(dl, tmp_path, monkeypatch, capsys):
    def no_dns(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", no_dns)
    assert dl.main(["--out", str(tmp_path), "squad"]) == 2
    err = capsys.readouterr().err
    assert dl.DATASETS["squad"].files[0].url in err
    assert "offline" in err
    assert "Traceback" not in err
    assert leftovers(tmp_path) == []
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_offline_connection_refused_exit_2(dl, tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}/tiny.txt"
    tiny(dl, monkeypatch, url)
    assert dl.main(["--out", str(tmp_path), "tiny"]) == 2
    err = capsys.readouterr().err
    assert url in err and "offline" in err
    assert leftovers(tmp_path) == []


def test_offline_command_line_no_traceback(tmp_path):
    """Run the script itself; a proxy on a closed local port stands in for 'no network'."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = dict(os.environ, http_proxy=proxy, https_proxy=proxy, HTTP_PROXY=proxy,
               HTTPS_PROXY=proxy, no_proxy="", NO_PROXY="")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "curatedtrec-dpr"],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "https://dl.fbaipublicfiles.com/dpr/data/retriever/curatedtrec-test.qa.csv" in result.stderr
    assert "offline" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_http_error_exit_1(dl, server, tmp_path, monkeypatch, capsys):
    base, _ = server
    tiny(dl, monkeypatch, f"{base}/missing.txt")
    assert dl.main(["--out", str(tmp_path), "tiny"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and f"{base}/missing.txt" in err
    assert leftovers(tmp_path) == []


def test_unknown_name_lists_valid_names(dl, capsys):
    with pytest.raises(SystemExit) as exc:
        dl.main(["squad", "no-such-set"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-set" in err
    for name in dl.DATASETS:
        assert name in err


def test_list(dl, capsys):
    assert dl.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, ds in dl.DATASETS.items():
        assert name in out
        for f in ds.files:
            assert f.filename in out
    assert "4.7 GB" in out  # psgs_w100.tsv.gz
    assert "id<TAB>text<TAB>title" in out


def test_list_command_line():
    result = subprocess.run([sys.executable, str(SCRIPT), "--list"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "dpr-wiki" in result.stdout and "squad" in result.stdout


def test_existing_correct_file_is_skipped(dl, tmp_path, monkeypatch, capsys):
    content = b"already downloaded\n"
    spec = tiny(dl, monkeypatch, "http://127.0.0.1:9/never-fetched",
                sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    dest = tmp_path / "tiny" / spec.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(content)

    def must_not_download(*args, **kwargs):
        raise AssertionError("a present, verified file was downloaded again")

    monkeypatch.setattr(dl.urllib.request, "urlopen", must_not_download)
    assert dl.main(["--out", str(tmp_path), "tiny"]) == 0
    assert "checksum OK, skipped" in capsys.readouterr().out
    assert dest.read_bytes() == content


def test_existing_wrong_file_is_downloaded_again(dl, server, tmp_path, monkeypatch, capsys):
    base, www = server
    content = b"the right bytes\n"
    (www / "tiny.txt").write_bytes(content)
    tiny(dl, monkeypatch, f"{base}/tiny.txt", sha256=hashlib.sha256(content).hexdigest())
    dest = tmp_path / "tiny" / "tiny.txt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    assert dl.main(["--out", str(tmp_path), "tiny"]) == 0
    assert dest.read_bytes() == content
    assert "downloading again" in capsys.readouterr().out


def test_all_and_decompress(dl, server, tmp_path, monkeypatch):
    base, www = server
    tsv = b"id\ttext\ttitle\n1\t\"Aaron Aaron is a prophet\"\tAaron\n"
    gz = gzip.compress(tsv)
    (www / "psgs.tsv.gz").write_bytes(gz)
    (www / "q.jsonl").write_bytes(b'{"question": "q", "answer": ["a"]}\n')
    monkeypatch.setattr(dl, "DATASETS", {
        "blocks": dl.Dataset("blocks", "tsv.gz", (
            dl.RemoteFile(f"{base}/psgs.tsv.gz", "psgs.tsv.gz", len(gz),
                          hashlib.sha256(gz).hexdigest(), None, "the test"),)),
        "qa": dl.Dataset("qa", "jsonl", (dl.RemoteFile(f"{base}/q.jsonl", "q.jsonl"),)),
    })
    assert dl.main(["--out", str(tmp_path), "--decompress", "all"]) == 0
    assert (tmp_path / "blocks" / "psgs.tsv").read_bytes() == tsv
    assert (tmp_path / "blocks" / "psgs.tsv.gz").read_bytes() == gz
    assert (tmp_path / "qa" / "q.jsonl").exists()
    assert leftovers(tmp_path) == []


def test_recorded_checksums_are_well_formed(dl):
    for name, ds in dl.DATASETS.items():
        names = [f.filename for f in ds.files]
        assert len(names) == len(set(names)), name
        for f in ds.files:
            assert re.match(r"https?://", f.url), f.url
            if f.sha256 is not None:
                assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f.url
            if f.md5 is not None:
                assert re.fullmatch(r"[0-9a-f]{32}", f.md5), f.url
            if f.sha256 or f.md5 or f.size:
                assert f.source, f"{f.url}: a published value needs its source"
    dev = {f.filename: f for f in dl.DATASETS["squad"].files}["dev-v1.1.json"]
    assert dev.md5 == "3e85deb501d4e538b6bc56f786231552" and dev.size == 4_854_279
