"""``ramp`` (the core library) imports without Beam, Megatron, Java or vLLM, and so does the ``ramp``
command until a sub-command runs: ``ramp --help`` works without them. The sub-command modules
(``ramp.cli.data``, ...) sit above the entry folders (the import contracts' top layer) and import the
engine of the stage they run."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ramp

HEAVY = ("apache_beam", "pyserini", "jnius", "jnius_config", "megatron", "vllm")
BLOCK = "import sys; " + "; ".join(f"sys.modules[{name!r}] = None" for name in HEAVY)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", f"{BLOCK}\n{code}"], capture_output=True, text=True)


def test_every_ramp_module_imports_without_heavy_engines():
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(ramp.__path__, "ramp.")
        if m.name != "ramp.__main__" and not m.name.startswith("ramp.cli.")
    )
    assert {"ramp.config", "ramp.cli", "ramp.train.shards", "ramp.retrieval.lucene"} <= set(modules)
    result = _python(f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)")
    assert result.returncode == 0, result.stderr[-2000:]


def test_ramp_help_needs_no_engine_and_no_sub_command():
    code = (
        "import sys\nfrom ramp.cli import run\ncode = run(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('ramp.cli.')))\nsys.exit(code)"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "serve-retriever" in result.stdout and "experiment" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"  # no sub-command module was imported
