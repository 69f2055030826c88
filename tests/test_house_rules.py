"""House rules the linters do not see: `make lint`'s import contracts really hold and really fail
(``.ci/check_imports.py`` passes on a copy of this checkout and fails once one module breaks a contract;
imports inside functions count), and no two classes of the library share a name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / ".ci" / "check_imports.py"
PACKAGES = ("ramp", "pipelines", "pretrain", "finetune", "eval")
SOURCES = (*PACKAGES, "configs")  # what the check reads, with pyproject.toml


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, CHECK, root], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's packages and pyproject.toml (what the check reads), copied."""
    root = tmp_path_factory.mktemp("checkout")
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_checkout_keeps_every_contract(checkout: Path) -> None:
    result = _check(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


LAYERS = "layers: ramp.cli > the entry folders > the core (every module placed)"
BROKEN = {
    "data-agent": (
        {"ramp/data/_bad.py": "import ramp.agent.protocol\n"},
        "ramp.data never imports ramp.agent",
    ),
    "function-level": (
        {"ramp/retrieval/_bad.py": "def stats():\n    from ramp.data import stats\n\n    return stats\n"},
        "ramp.retrieval never imports ramp.data",
    ),
    "experiment-cli": (
        {"ramp/experiment/_bad.py": "from ramp.cli import options\n"},
        "ramp.experiment never imports ramp.cli",
    ),
    "core-entry": ({"ramp/qa/_bad.py": "import ramp.pipelines.io\n"}, LAYERS),
    "entry-cli": ({"pipelines/_bad.py": "import ramp.cli.options\n"}, LAYERS),
    "no-layer": ({"ramp/newcomer.py": "import ramp.text\n"}, LAYERS),
    "cycle": (
        {"ramp/data/_one.py": "import ramp.data._two\n", "ramp/data/_two.py": "import ramp.data._one\n"},
        "no import cycles in any package",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_module_that_breaks_a_contract_fails_the_check(case: str, checkout: Path, tmp_path: Path) -> None:
    modules, contract = BROKEN[case]
    root = tmp_path / "checkout"
    shutil.copytree(checkout, root)
    for path, source in modules.items():
        (root / path).write_text(source, encoding="utf-8")
    result = _check(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout


def test_class_names_are_unique() -> None:
    """A class name says which class it is: one module-level class per name in the library and the entry
    folders (nested helper classes aside)."""
    defined: defaultdict[str, set[str]] = defaultdict(set)
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef):
                    defined[node.name].add(path.relative_to(ROOT).as_posix())
    shared = {name: paths for name, paths in defined.items() if len(paths) > 1}
    assert not shared, shared
