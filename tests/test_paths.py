"""realm_lite.paths: the repository is found from any working directory, and a missing project file is named."""
from pathlib import Path

import pytest

from realm_lite import paths
from realm_lite.paths import ROOT_ENV, is_project_root, project_file, project_root

ROOT = Path(paths.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_root_env(monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)


def fake_checkout(folder: Path, name: str = "realm-lite") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0.1.0"\n')
    return folder


def test_root_from_the_root_and_from_a_subfolder(monkeypatch):
    assert is_project_root(ROOT)
    for cwd in (ROOT, ROOT / "notebooks", ROOT / "realm_lite"):
        monkeypatch.chdir(cwd)
        assert project_root() == ROOT


def test_root_searches_upwards_and_skips_other_projects(tmp_path):
    other = fake_checkout(tmp_path / "other", name="not-realm-lite")
    assert not is_project_root(other)
    mine = fake_checkout(tmp_path / "mine")
    deep = mine / "a" / "b"
    deep.mkdir(parents=True)
    assert project_root(deep) == mine.resolve()
    assert project_root(other) == ROOT          # nothing above `other` names realm-lite: the package's checkout


def test_root_from_an_unrelated_folder_is_the_package_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_root() == ROOT


def test_root_env_wins_and_is_checked(tmp_path, monkeypatch):
    mine = fake_checkout(tmp_path / "mine")
    monkeypatch.setenv(ROOT_ENV, str(mine))
    assert project_root(ROOT) == mine.resolve()
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere.*not a realm-lite checkout"):
        project_root()


def test_no_checkout_anywhere_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "__file__", str(tmp_path / "site-packages" / "realm_lite" / "paths.py"))
    with pytest.raises(FileNotFoundError, match=f"no realm-lite checkout in .*{ROOT_ENV}"):
        project_root(tmp_path)


def test_project_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert project_file("bench", "results", "small_scale-cpu.json") == ROOT / "bench" / "results" / "small_scale-cpu.json"
    missing = ROOT / "bench" / "results" / "absent.json"
    with pytest.raises(FileNotFoundError) as err:
        project_file("bench", "results", "absent.json")
    assert str(missing) in str(err.value) and "git checkout -- bench/results/absent.json" in str(err.value)
    with pytest.raises(FileNotFoundError, match="run python bench/x.py"):
        project_file("bench", "absent", hint="run python bench/x.py")
