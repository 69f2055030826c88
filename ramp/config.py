"""Typed configuration: YAML files in ``configs/`` validated into pydantic models.

Every value can be overridden with ``key.sub=value`` strings (the CLI's ``--set``); values are parsed
as YAML scalars, so ``--set masking.max_masks=3`` gives an int and ``--set x=[a,b]`` a list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ramp.errors import UserError

CONFIG_DIR = Path(os.environ.get("RAMP_CONFIG_DIR", str(resources.files("ramp.configs"))))

M = TypeVar("M", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not validate; the message names the bad key and value."""


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
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(
        f"config not found: {name_or_path} (looked in . and {CONFIG_DIR}): give a YAML file or one of {known}"
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    with open(resolve_config_path(path), encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (copying what it changes)."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. --set masking.max_masks=3)"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not a YAML scalar (e.g. an unbalanced bracket): the string itself
        _set_dotted(result, key.strip(), value, item)
    return result


def _set_dotted(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load_config(
    model: type[M],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> M:
    """Load ``path`` (or the model's defaults), set ``values`` (dotted keys to Python values, e.g. what a
    command's options mean), apply the ``key=value`` overrides and validate the result into ``model``."""
    data = read_yaml(path) if path is not None else {}
    for key, value in (values or {}).items():
        _set_dotted(data, key, value, f"{key}={value}")
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(_describe(model, e) for e in err.errors())
        source = f" in {path}" if path is not None else ""
        raise ConfigError(
            f"invalid {model.__name__}{source}: {problems} (fix the YAML or the --set override)"
        ) from None


def _describe(model: type[BaseModel], error: Any) -> str:
    """One validation error as ``key = value: problem``; an unknown key lists its section's keys."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "<root>"
    value = error.get("input")
    shown = f" = {value!r}"[:80] if isinstance(value, str | int | float | bool) else ""
    if error["type"] == "extra_forbidden":
        section = _section_model(model, loc[:-1])
        known = f" (known keys: {', '.join(section.model_fields)})" if section is not None else ""
        return f"{key}{shown}: unknown key{known}"
    return f"{key}{shown}: {' '.join(str(error['msg']).split())}"


def _section_model(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the config section at ``loc`` (None past a list, dict or union)."""
    current: type[BaseModel] = model
    for part in loc:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        current = annotation
    return current
