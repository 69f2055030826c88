"""Typed configuration: YAML files in ``configs/`` validated into pydantic models.

Every value can be overridden with ``key.sub=value`` strings (the CLI's ``--set``); values are parsed
as YAML scalars, so ``--set masking.max_masks=3`` gives an int and ``--set x=[a,b]`` a list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

CONFIG_DIR = Path(os.environ.get("RAMP_CONFIG_DIR", str(resources.files("ramp.configs"))))

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or override that does not validate; the message names the bad key."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, or a recipe name looked up in ``configs/`` (``data`` -> ``configs/data.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(f"config not found: {name_or_path} (looked in . and {CONFIG_DIR})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    with open(resolve_config_path(path), encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (copying what it changes)."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load_config(model: type[M], path: str | Path | None = None, overrides: Iterable[str] = ()) -> M:
    """Load ``path`` (or the model's defaults), apply overrides and validate into ``model``."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        source = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid {model.__name__}{source}: {problems}") from None
