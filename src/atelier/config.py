"""Typed dataclass configs: JSON round-trips, CLI overrides and the run metadata saved with them.

Every checkpoint carries the resolved configs as JSON so a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from atelier.io import load_json

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


def environment() -> dict[str, str]:
    """Versions recorded next to every run, so results can be traced to the code that made them."""
    import torch

    from atelier._version import __version__

    return {
        "atelier": __version__,
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


# -- command-line flags derived from the dataclasses --------------------------------------------------
# argparse knows nothing of dataclasses, and the libraries that bridge the two (tyro, simple-parsing)
# would own the whole parser; these few functions derive one argument group per config instead, so the
# CLI's flags can never drift from the fields they set.


@functools.lru_cache(maxsize=None)  # the class source is read once per process
def field_help(cls: type) -> dict[str, str]:
    """Each field's help text: its trailing ``# comment`` in the class source, continued by comment lines
    right below it (base classes first, so a subclass may override)."""
    import inspect
    import re

    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        current = None
        for line in lines:
            m = re.match(r"^\s{4}(\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
            if m and not line.lstrip().startswith("#"):
                current = m.group(1)
                if m.group(2):
                    helps[current] = m.group(2).strip()
                continue
            c = re.match(r"^\s{4}#\s*(.*)$", line)
            if c and current in helps:
                helps[current] += " " + c.group(1).strip()
            else:
                current = None
    return helps


def _unwrap_optional(hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def parse_mapping(text: str) -> dict[str, float]:
    """A command-line mapping of names to numbers: ``relu1_1,relu2_1:0.5`` (a name alone weighs 1) or a
    JSON object."""
    text = text.strip()
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return {str(k): float(v) for k, v in value.items()}
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if item:
            name, _, weight = item.partition(":")
            try:
                out[name] = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"bad weight in {item!r}; expected NAME or NAME:WEIGHT") from None
    if not out:
        raise ValueError("expected at least one NAME[:WEIGHT]")
    return out


def parse_numbers(text: str) -> list[float]:
    """A comma-separated list of numbers: ``1,2,0.5``."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def argparse_type(parse: Any, name: str) -> Any:
    """``parse`` with its ValueError shown by argparse as a usage error."""
    import argparse

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, json.JSONDecodeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapped.__name__ = name  # argparse names the type in its message
    return wrapped


def cli_flag(cls: type, name: str) -> str:
    """The command-line flag that sets field ``name`` of ``cls``."""
    overrides: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        overrides.update(klass.__dict__.get("cli_flags", None) or {})
    if name in overrides:
        return overrides[name]
    hint = typing.get_type_hints(cls).get(name)
    default = {f.name: f.default for f in dataclasses.fields(cls)}.get(name)
    if hint is bool and default is True:
        return "--no-" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(group: Any, cls: type, *, exclude: Iterable[str] = ()) -> list[str]:
    """Add one flag per field of the dataclass ``cls`` to an argparse parser or group; returns the dests.

    Types, choices (``Literal``), help (trailing comments) and defaults come from the class; a class may
    rename flags (``cli_flags``) and make some mutually exclusive (``cli_exclusive``). Every flag
    defaults to None, so :func:`given_arguments` can tell what the user set. Nested dataclasses are skipped.
    """
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    skip = set(exclude)
    dests = []
    exclusive: dict[str, Any] = {}  # field -> the mutually exclusive group it joins (cli_exclusive)
    groups = dict.fromkeys(g for klass in reversed(cls.__mro__) for g in klass.__dict__.get("cli_exclusive", ()))
    for names in groups:
        shared = group.add_mutually_exclusive_group()
        exclusive.update({n: shared for n in names})
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        hint = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(hint):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        text = helps.get(f.name, "")
        flag = cli_flag(cls, f.name)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None}
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
            if default is True and text:  # the flag turns the field off
                text = f"do not {text[0].lower()}{text[1:]}"
        elif origin is typing.Literal:
            kwargs.update(type=type(args[0]), choices=args)
        elif origin is tuple:
            kwargs.update(type=args[0], nargs=len(args), metavar=tuple(a.__name__.upper() for a in args))
        elif origin is list and args and args[0] in (int, float):
            kwargs.update(type=argparse_type(parse_numbers, "numbers"), metavar="X,Y,...")
        elif origin is list:
            kwargs.update(type=args[0] if args else str, nargs="+")
        elif origin is dict or hint is dict:
            kwargs.update(type=argparse_type(parse_mapping, "mapping"), metavar="NAME[:W],...")
        elif hint in (int, float, str):
            kwargs["type"] = hint
        else:
            continue  # a type the command line cannot express: set it in a --config file
        if hint is not bool and default not in (None, "", [], {}):
            shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        exclusive.get(f.name, group).add_argument(flag, help=text or None, **kwargs)
        dests.append(f.name)
    return dests


def given_arguments(args: Any, dests: Iterable[str]) -> dict[str, Any]:
    """The values of ``dests`` that were given on the command line (flags default to None)."""
    return {k: getattr(args, k) for k in dests if getattr(args, k, None) is not None}


def split_settings(settings: dict[str, Any], *classes: type) -> list[dict[str, Any]]:
    """``settings`` divided among the dataclasses ``classes`` by field name (the first that has it);
    a name none of them has is an error naming the classes."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in settings.items():
        for part, cls in zip(parts, classes):
            if key in {f.name for f in dataclasses.fields(cls)}:
                part[key] = value
                break
        else:
            raise TypeError(f"unknown setting {key!r}: not a field of {' or '.join(c.__name__ for c in classes)}")
    return parts


def in_flags(message: str, *classes: type) -> str:
    """``message`` (a config's validation error) with its field names spelled as the CLI's flags, for
    errors shown on the command line: ``eval_n must be at least 10`` -> ``--eval-n must be at least 10``.

    A field is replaced where its name has an underscore, or where it is plainly the subject
    (``steps must``, ``either steps or epochs``), so ordinary words in the message stay as they are."""
    import re

    for cls in classes:
        for f in sorted(dataclasses.fields(cls), key=lambda f: -len(f.name)):
            flag = cli_flag(cls, f.name)
            if "_" in f.name:
                pattern = rf"(?<![\w./-]){re.escape(f.name)}\b"
            else:
                pattern = rf"(?<![\w./-])(?:{re.escape(f.name)}(?= must| =|=)|(?<=either ){re.escape(f.name)}\b|" \
                          rf"(?<=or ){re.escape(f.name)}\b(?=,| not|$))"
            message = re.sub(pattern, flag, message)
    return message
