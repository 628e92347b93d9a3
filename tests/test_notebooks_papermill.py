"""The notebooks run through papermill from any working directory (one from an unrelated folder here, in quick mode;
all of them from the repository root in tests/test_full_smoke.py); run folders go to the repository's runs/, never to
the working directory."""
from pathlib import Path

import pytest

from realm_lite.paths import project_root

papermill = pytest.importorskip("papermill")

ROOT = project_root(Path(__file__).parent)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def execute(notebook: Path, cwd: Path, out: Path):
    papermill.execute_notebook(str(notebook), str(out), parameters={"mode": "quick"}, kernel_name="python3",
                               cwd=str(cwd), progress_bar=False)
    return out


def test_notebooks_take_parameters_and_no_relative_paths():
    """Fast: papermill needs a `parameters` cell; a path relative to the working directory breaks other callers."""
    import nbformat

    assert len(NOTEBOOKS) >= 7
    for path in NOTEBOOKS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "parameters" in cells[0].metadata.get("tags", []) and "mode" in cells[0].source, path.name
        for cell in cells:
            for relative in ('"../', "'../", 'Path("runs', '"runs/', 'Path("bench', '"bench/'):
                assert relative not in cell.source, f"{path.name}: {relative} in a code cell; use realm_lite.paths"


# Every notebook also runs from the repository root, in full-smoke mode: tests/test_full_smoke.py.


@pytest.mark.slow
def test_notebook_from_an_unrelated_folder(tmp_path, kernel_env):
    """03 writes a tokenizer and an index: they must land in the repository's runs/, not in the working directory."""
    notebook = ROOT / "notebooks" / "03_mips.ipynb"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    index = ROOT / "runs" / "03_mips_quick" / "index.pt"
    index.unlink(missing_ok=True)
    execute(notebook, cwd, tmp_path / notebook.name)
    assert index.is_file()
    assert list(cwd.iterdir()) == [], f"the notebook wrote into its working directory: {list(cwd.iterdir())}"
