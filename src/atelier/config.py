"""Typed dataclass configs: JSON round-trips, CLI overrides and the run metadata saved with them.

Every checkpoint carries the resolved configs as JSON so a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as plain JSON-able data."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from ``data``, recursing into nested dataclass fields.

    Unknown keys are an error (a typo in a config file should not be silently ignored); missing keys
    take the field's default, so configs saved by older versions still load.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)  # type: ignore[arg-type]
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def load_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def environment() -> dict[str, str]:
    """Versions recorded next to every run, so results can be traced to the code that made them."""
    import torch

    import atelier

    return {
        "atelier": atelier.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A run description from TOML or JSON, with optional sections ``[data]``, ``[model]``, ``[train]``
    (plus top-level ``model_name`` and ``conditional``). Command-line flags override its values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML ({exc})") from exc
    elif path.suffix.lower() == ".json":
        data = load_json(path)
    else:
        raise ValueError(f"{path}: config files are .toml or .json")
    unknown = set(data) - {"data", "model", "train", "model_name", "conditional"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; use data, model, train")
    return data
