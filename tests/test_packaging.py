"""The project as a wheel: built from a copy of the source, installed (not editable) into a fresh
virtualenv, used from another directory. The entry folders install under ramp's namespace
(``pipelines/`` -> ``ramp.pipelines``, ``configs/`` -> ``ramp.configs`` package data, …), never as
generic top-level names in site-packages.

The fresh virtualenv sees the already-installed dependencies through a ``.pth`` line naming the
project venv's site-packages; ``.pth`` files inside that directory are not processed, so the project's
editable-install finder stays off and every ``ramp`` module comes from the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from test_foundation import RECIPE_MODELS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _source_folders() -> dict[str, Path]:
    """Package name -> source folder, for every package the wheel must hold."""
    folders = {}
    for package in SETUPTOOLS["packages"]:
        top = max(
            (p for p in SETUPTOOLS["package-dir"] if package == p or package.startswith(p + ".")), key=len
        )
        rest = package[len(top) :].lstrip(".").replace(".", "/")
        folders[package] = ROOT / SETUPTOOLS["package-dir"][top] / rest
    return folders


def test_every_package_folder_is_listed():
    """A new package (a folder with ``__init__.py``) must be named in pyproject's packages list."""
    listed = {path.resolve() for path in _source_folders().values()}
    assert all((path / "__init__.py").exists() for path in listed), "a listed package has no __init__.py"
    roots = {ROOT / folder for folder in SETUPTOOLS["package-dir"].values()}
    found = {init.parent.resolve() for root in roots for init in root.rglob("__init__.py")}
    assert not found - listed, f"packages missing from pyproject.toml: {sorted(map(str, found - listed))}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of a copy of the project (the build never writes into the working tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for folder in sorted(set(SETUPTOOLS["package-dir"].values())):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src],
        src,
    )
    (built,) = dist.glob("ramp-*.whl")
    return built


def test_wheel_holds_every_module_under_ramp(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"ramp", f"{wheel.name.split('-py3')[0]}.dist-info"}
    for package, folder in _source_folders().items():
        prefix = package.replace(".", "/")
        for module in folder.glob("*.py"):
            assert f"{prefix}/{module.name}" in names, f"{module} is not in the wheel"
    assert {f"ramp/configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")} <= set(names)


def test_installed_wheel_loads_configs_and_builds_samples(
    wheel: Path, tmp_path: Path, small_enwiki_dump: Path
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).stdout.strip()
    )
    (site / "ramp-test-deps.pth").write_text(
        "\n".join(sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})) + "\n"
    )
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = (
        "import importlib, json, sys\n"
        "import ramp, ramp.pipelines\n"
        "from ramp.config import CONFIG_DIR, load_config\n"
        "assert sys.argv[2] not in sys.path, sys.path\n"
        "for recipe, path in json.loads(sys.argv[1]).items():\n"
        "    module, name = path.split(':')\n"
        "    load_config(getattr(importlib.import_module(module), name), recipe)\n"
        "print(json.dumps([ramp.__file__, ramp.pipelines.__file__, str(CONFIG_DIR)]))\n"
    )
    located = _run([python, "-c", check, json.dumps(RECIPE_MODELS), ROOT], elsewhere).stdout
    assert all(path.startswith(str(site)) for path in json.loads(located)), located

    out = elsewhere / "samples"
    args: list[str | Path] = [
        "data",
        "build",
        "--input",
        small_enwiki_dump,
        "--format",
        "xml",
        "--output",
        out,
    ]
    built = _run([venv / "bin" / "ramp", *args], elsewhere)
    assert "(ok)" in built.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] > 0 and list(out.glob("samples-*.parquet"))
