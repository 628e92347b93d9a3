"""The repository speaks of the project only: no development diary, no paths outside the repository.

Every tracked file under README.md, docs/, notebooks/, realm_lite/, tests/, bench/ and data/ is read; a line that
numbers work sessions or issues, or points outside the repository at the development machines' shared folder,
fails the test with the file and line. The tests' data path default (tests/conftest.py) is the one exception.
"""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCOPE = ["README.md", "docs", "notebooks", "realm_lite", "tests", "bench", "data"]
HISTORY = re.compile(r"\bsessions?[\s_-]*\d|\bissues?\s+#?\d", re.IGNORECASE)
OUTSIDE = re.compile(r"\.\./+shared|\bshared/(data|notes|hooks)\b")
ALLOWED_OUTSIDE = {"tests/conftest.py"}
SELF = "tests/test_no_history.py"  # its own examples of what it catches


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--", *SCOPE], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file() and f != SELF]


def offending_lines(pattern: re.Pattern, files, allowed=()) -> list[str]:
    bad = []
    for rel in files:
        if rel in allowed:
            continue
        try:
            text = (REPO / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a binary file (a picture): nothing to read
            continue
        bad += [f"{rel}:{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1)
                if pattern.search(line)]
    return bad


def test_the_patterns_catch_what_they_are_for():
    word, item = "Session", "issue"  # spelled apart, so that a grep of the repository does not find these examples
    assert HISTORY.search(f"measured in {word} 9") and HISTORY.search(f"{word.lower()}s 7-8's recipe")
    assert HISTORY.search(f"results-{word.lower()}11.json") and HISTORY.search(f"({item} 5)")
    assert not HISTORY.search("the session-scoped fixture") and not HISTORY.search("a known issue")
    assert OUTSIDE.search("read ../shared/data/squad") and not OUTSIDE.search("shared weights")


def test_no_development_history_in_the_repository():
    bad = offending_lines(HISTORY, tracked_files())
    assert not bad, "lines that speak of how the project was developed:\n" + "\n".join(bad[:40])


def test_no_file_is_named_for_when_it_was_made():
    bad = [f for f in tracked_files() if HISTORY.search(Path(f).name)]
    assert not bad, f"files named for a work session: {bad}"


def test_no_paths_outside_the_repository():
    bad = offending_lines(OUTSIDE, tracked_files(), ALLOWED_OUTSIDE)
    assert not bad, "paths outside the repository (set REALM_LITE_SQUAD instead):\n" + "\n".join(bad[:40])
