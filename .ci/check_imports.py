"""Check the import contracts of pyproject's ``[tool.importlinter]`` on the package as it installs.

The entry folders (``pipelines/``, ``pretrain/``, ...) install under ramp's namespace (pyproject's
``package-dir``: ``ramp.pipelines``, ...) but sit beside ``ramp/`` in a checkout, where import-linter
cannot see them. This copies the Python files into that installed layout in a temporary directory and
runs ``lint-imports`` there, so every contract covers ``ramp`` and its entry folders alike.

    python .ci/check_imports.py [ROOT]    # ROOT: a checkout (default: this one); 1: a contract is broken
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def installed_layout(root: Path, target: Path) -> None:
    """Copy ``root``'s packages into ``target`` as they install (``package-dir`` folders under ``ramp/``)."""
    settings = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = settings["package-dir"]
    for package in settings["packages"]:
        top = max((p for p in folders if package == p or package.startswith(f"{p}.")), key=len)
        source = root / folders[top] / package.removeprefix(top).lstrip(".").replace(".", "/")
        destination = target / package.replace(".", "/")
        destination.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, destination / module.name)


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else ROOT
    with tempfile.TemporaryDirectory(prefix="ramp-imports-") as tmp:
        installed_layout(root, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        lint = Path(sys.executable).parent / "lint-imports"
        return subprocess.run([lint, "--no-cache", str(root / "pyproject.toml")], cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
