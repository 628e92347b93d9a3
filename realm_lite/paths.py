"""Where the project's files are, from any working directory: the notebooks read bench/results and write runs/
through it."""
import os
import re
from pathlib import Path

ROOT_ENV = "REALM_LITE_ROOT"  # an explicit checkout, for a package installed outside its repository
_NAME = re.compile(r"""^\s*name\s*=\s*["']realm-lite["']""", re.MULTILINE)


def is_project_root(folder) -> bool:
    """True when `folder` holds a pyproject.toml whose project is realm-lite."""
    try:
        return bool(_NAME.search((Path(folder) / "pyproject.toml").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


def project_root(start=None) -> Path:
    """The repository root: $REALM_LITE_ROOT if set, else the first folder from `start` (default: the current
    directory) upwards whose pyproject.toml names realm-lite, else the checkout this package was imported from."""
    if os.environ.get(ROOT_ENV):
        root = Path(os.environ[ROOT_ENV]).expanduser().resolve()
        if not is_project_root(root):
            raise FileNotFoundError(f"{ROOT_ENV}={os.environ[ROOT_ENV]!r} is not a realm-lite checkout "
                                    f"(no pyproject.toml naming realm-lite in {root})")
        return root
    here = Path.cwd() if start is None else Path(start)
    here = here.expanduser().resolve()
    for folder in (here, *here.parents):
        if is_project_root(folder):
            return folder
    package_parent = Path(__file__).resolve().parents[1]
    if is_project_root(package_parent):
        return package_parent
    raise FileNotFoundError(f"no realm-lite checkout in {here} or above it, nor at {package_parent} (where realm_lite "
                            f"was imported from); run from inside the repository or set {ROOT_ENV} to it")


def project_file(*parts, hint: str = "") -> Path:
    """An existing file or folder of the project, `parts` relative to project_root(); a clear error if it is absent."""
    root = project_root()
    path = root.joinpath(*parts)
    if not path.exists():
        rel = Path(*parts).as_posix()
        raise FileNotFoundError(f"{path} does not exist: the project's {rel} is missing from the checkout at {root}; "
                                + (hint or f"restore it (git checkout -- {rel}) or set {ROOT_ENV} to a full checkout"))
    return path
