"""The explorer in a real browser: `realm-lite explore` serves it with Voilà, Playwright drives the system's chromium.

Needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it) and the playwright package (the dev
extra); Playwright's own browser download is not used. Set REALM_LITE_SKIP_BROWSER=1 to skip on a machine without
a browser. Run as a script, it saves the README's screenshot:

    python tests/test_explorer_browser.py docs/images/explorer.png      # (make screenshot)
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUERY = "Zeis Stouthozeind was the leader of [MASK]."
COMPARE = "world-cpu: before REALM (warm start; QA: ICT only)"


def chromium() -> str:
    """The system's chromium; a clear message when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise RuntimeError("no chromium on PATH: install it (Debian: apt-get install -y chromium), or set "
                       "REALM_LITE_SKIP_BROWSER=1 to skip the browser test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the process and its children (Voilà and its kernel), which share its session."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def served(port: int, timeout: float = 60):
    """`realm-lite explore` on localhost:port until the block ends; its log goes to a file (a pipe nobody reads
    would fill and stop the server)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = tempfile.NamedTemporaryFile("w+", prefix="realm-lite-explore-", suffix=".log", delete=False)
    # a session of its own: the command runs Voilà as a child, and the whole group goes at the end
    proc = subprocess.Popen([sys.executable, "-m", "realm_lite.cli", "explore", "--no-browser", f"--port={port}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the server listens
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    _signal_group(proc, signal.SIGKILL)
                    raise RuntimeError(f"realm-lite explore did not serve on port {port}:\n"
                                       f"{Path(log.name).read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
        log.close()
        os.unlink(log.name)


def drive(url: str, screenshot: Path, compare: bool = False) -> dict:
    """Open the explorer, type QUERY, press Enter; wait for the ranked blocks; save a screenshot; what rendered."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url)
        box = page.get_by_placeholder("a sentence with [MASK], or [the answer] in brackets")
        box.wait_for(timeout=180_000)  # the kernel starts and loads the shipped model
        if compare:
            page.locator("select:has(option:text-is('(none)'))").select_option(label=COMPARE)
        box.fill(QUERY)
        box.press("Enter")
        page.locator(".realm-row").first.wait_for(timeout=60_000)
        if compare:
            page.locator(".realm-result").nth(1).wait_for(timeout=60_000)
        out = {"rows": page.locator(".realm-row").count(),
               "prediction": page.locator(".prediction").first.inner_text(),
               "results": page.locator(".realm-result").count()}
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return out


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("REALM_LITE_SKIP_BROWSER") == "1", reason="REALM_LITE_SKIP_BROWSER=1")
def test_the_explorer_answers_in_a_browser(tmp_path):
    chromium()  # fails with the install line when the browser is missing
    with served(free_port()) as url:
        seen = drive(url, tmp_path / "explorer.png")
    assert seen["results"] == 1 and seen["rows"] == 8  # k = 8: ∅ and the top 7 blocks
    assert seen["prediction"].strip()
    assert (tmp_path / "explorer.png").stat().st_size > 20_000  # a page, not a blank


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "images" / "explorer.png")
    with served(free_port()) as url:
        print(drive(url, target, compare=True), "->", target)
