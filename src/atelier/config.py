"""Typed dataclass configs: JSON round-trips, CLI overrides and the run metadata saved with them.

Every checkpoint carries the resolved configs as JSON so a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import annotated_types as at

from atelier.io import parse_json

T = TypeVar("T")

# Constraints shared by many configs (see "validation" below). A range is ``at.Interval(ge=.., le=..)``;
# upper limits are generous but finite: a size far beyond them is a typo, not a wish.
Seed = Annotated[int, at.Interval(ge=0, le=2**63 - 1)]  # what torch.manual_seed accepts (non-negative)
Probability = Annotated[float, at.Interval(ge=0.0, le=1.0)]
NonNegative = Annotated[float, at.Ge(0.0)]
Positive = Annotated[float, at.Gt(0.0)]
Count = Annotated[int, at.Interval(ge=1, le=10**9)]  # steps, intervals: at least one
Width = Annotated[int, at.Interval(ge=1, le=2**16)]  # channels of a layer


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as plain JSON-able data."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: Any) -> T:
    """Build ``cls`` from ``data``, recursing into nested dataclass fields.

    Unknown keys are an error (a typo in a config file should not be silently ignored); missing keys
    take the field's default, so configs saved by older versions still load. Values are checked and
    converted by the class's declared constraints (:class:`Config`) when it is built.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {cls.__name__} is a mapping of field names to values, got {_kind(data)}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(sorted(map(str, unknown)))}",
                          field=str(sorted(map(str, unknown))[0]))
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in data  # type: ignore[arg-type]
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{missing[0]} is required (a {cls.__name__} has no default for it)", field=missing[0])
    hints = _field_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = _unwrap_optional(typing.get_origin(hints[key]) is typing.Annotated
                                and typing.get_args(hints[key])[0] or hints[key])
        if dataclasses.is_dataclass(hint) and value is not None:
            try:
                value = from_dict(hint, value)  # type: ignore[arg-type]
            except ConfigError as exc:
                raise exc.within(key) from None
        else:  # checked here too, so a plain dataclass read from a file is type-checked as well
            value = check_value(value, hints[key], key)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a class whose __init__ is not plain (or a required field missing)
        raise ConfigError(f"{cls.__name__}: {exc}") from None


# -- validation: constraints declared once, beside each field -------------------------------------------
# A field's constraints are ``annotated_types`` markers in its annotation, ``Annotated[int, Ge(1)]``: the
# vocabulary pydantic (and so FastAPI, for the studio's HTTP API) reads too, so one declaration serves the
# Python API, config files, the CLI and HTTP. Pydantic itself would validate only its own dataclasses, and
# not on plain construction of ours, so this small checker enforces the markers wherever a config is built.


class ConfigError(ValueError):
    """A config value of the wrong type or out of range. ``field`` names it (dotted for nested configs),
    so a front end can point at the flag or form field at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def within(self, section: str) -> "ConfigError":
        """The same error for a field of a nested config ``section``."""
        return ConfigError(f"{section}.{self}", field=f"{section}.{self.field}" if self.field else section)


def _kind(value: Any) -> str:
    """How an error describes a value: its repr, shortened, and its type where the repr hides it."""
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if isinstance(value, (bool, float)) else f"{text} ({type(value).__name__})"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _check_bound(value: Any, marker: Any, name: str) -> None:
    bounds = ((marker.ge, marker.gt, marker.le, marker.lt) if isinstance(marker, at.Interval) else
              (getattr(marker, "ge", None), getattr(marker, "gt", None), getattr(marker, "le", None),
               getattr(marker, "lt", None)))
    ge, gt, le, lt = bounds
    low = f"at least {_number(ge)}" if ge is not None else f"greater than {_number(gt)}" if gt is not None else None
    high = f"at most {_number(le)}" if le is not None else f"less than {_number(lt)}" if lt is not None else None
    ok = ((ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
          and (lt is None or value < lt))
    if not ok:
        rule = f"between {_number(ge)} and {_number(le)}" if ge is not None and le is not None else \
            f"{low} and {high}" if low and high else low or high
        raise ConfigError(f"{name} must be {rule}, got {_kind(value)}", field=name)


def _check_markers(value: Any, markers: tuple[Any, ...], name: str) -> None:
    for marker in markers:
        if isinstance(marker, (at.Ge, at.Gt, at.Le, at.Lt, at.Interval)):
            _check_bound(value, marker, name)
        elif isinstance(marker, (at.MinLen, at.MaxLen, at.Len)):
            low = getattr(marker, "min_length", 0) or 0
            high = getattr(marker, "max_length", None)
            if len(value) < low or (high is not None and len(value) > high):
                rule = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise ConfigError(f"{name} must have {rule} entries, got {len(value)}", field=name)
        elif isinstance(marker, at.Predicate):
            if not marker.func(value):
                doc = (marker.func.__doc__ or getattr(marker.func, "__name__", "the check")).strip()
                raise ConfigError(f"{name} must satisfy: {doc}; got {_kind(value)}", field=name)


def check_value(value: Any, hint: Any, name: str) -> Any:
    """``value`` checked against the type ``hint`` (with its ``Annotated`` constraints) and converted where
    the conversion loses nothing: an int where a float belongs, an integral float where an int belongs
    (TOML and JSON write ``1e4``), a list where a tuple belongs, a mapping where a config belongs.
    Non-finite numbers are always refused: no setting means anything at NaN or infinity."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        value = check_value(value, args[0], name)
        if value is not None:
            _check_markers(value, args[1:], name)
        return value
    if hint is Any or hint is None or isinstance(hint, typing.TypeVar):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return check_value(value, option, name)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{name} must be {' or '.join(_describe(o) for o in options)}, got {_kind(value)}",
                          field=name)
    if origin is typing.Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return value
            if isinstance(choice, int) and isinstance(value, float) and value == choice:
                return choice
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, args))}, got {_kind(value)}", field=name)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {_kind(value)}", field=name)
    if hint is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        finite = isinstance(value, float) and not math.isfinite(value)
        raise ConfigError(f"{name} must be a {'finite ' if finite else ''}whole number, got {_kind(value)}", field=name)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {_kind(value)}", field=name)
            return float(value)
        raise ConfigError(f"{name} must be a number, got {_kind(value)}", field=name)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, got {_kind(value)}", field=name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {_kind(value)}", field=name)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise ConfigError(f"{name} must have {len(args)} entries, got {len(value)}", field=name)
        return tuple(check_value(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {_kind(value)}", field=name)
        item = args[0] if args else Any
        return [check_value(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {_kind(value)}", field=name)
        key_hint, value_hint = args if args else (Any, Any)
        return {check_value(k, key_hint, name): check_value(v, value_hint, f"{name}[{k!r}]")
                for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            try:
                return from_dict(hint, value)
            except ConfigError as exc:
                raise exc.within(name) from None
        raise ConfigError(f"{name} must be a {hint.__name__} or a mapping, got {_kind(value)}", field=name)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise ConfigError(f"{name} must be a {hint.__name__}, got {_kind(value)}", field=name)
    return value


def range_text(hint: Any) -> str:
    """The range a field's constraints allow, for help texts: ``1 to 65536``, ``> 0``, ``0 to < 1``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return next((t for a in args if (t := range_text(a))), "")
    if origin is not typing.Annotated:
        return ""
    ge = gt = le = lt = None
    for m in args[1:]:
        ge = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else ge
        gt = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else gt
        le = getattr(m, "le", None) if getattr(m, "le", None) is not None else le
        lt = getattr(m, "lt", None) if getattr(m, "lt", None) is not None else lt
    low = _number(ge) if ge is not None else f"> {_number(gt)}" if gt is not None else None
    high = _number(le) if le is not None else f"< {_number(lt)}" if lt is not None else None
    if low and high:
        return f"{low} to {high}"
    return f">= {low}" if low and ge is not None else low or (f"<= {high}" if high and le is not None else high or "")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    return names.get(hint, f"a {getattr(origin or hint, '__name__', hint)}")


@functools.lru_cache(maxsize=None)
def _field_hints(cls: type) -> dict[str, Any]:
    """Each field's annotation with its constraints. A subclass that only changes a field's default
    (``batch_size: int = 128``) keeps the constraints its base declared for it."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        own = typing.get_type_hints(klass, include_extras=True)
        for name in klass.__dict__.get("__annotations__", {}):
            hint, before = own.get(name), hints.get(name)
            if before is not None and typing.get_origin(before) is typing.Annotated \
                    and typing.get_origin(hint) is not typing.Annotated and typing.get_args(before)[0] == hint:
                continue
            hints[name] = hint
    return hints


def validate(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj`` against its annotation (type, range, choices,
    finiteness), converting in place where :func:`check_value` allows; raises :class:`ConfigError`."""
    hints = _field_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        checked = check_value(value, hints[f.name], f.name)
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


class Config:
    """Base of Atelier's config dataclasses: every field is validated when the config is built, however it
    is built (the Python API, :func:`from_dict` for config files and saved runs, the CLI's flags). A
    subclass with its own ``__post_init__`` calls ``super().__post_init__()`` first, then checks what
    relates several fields."""

    def __post_init__(self) -> None:
        validate(self)


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


#: A config file is a few dozen settings: bounds on what one may hold, so that a hostile or broken file (YAML
#: aliases that expand exponentially, "billion laughs") is refused before any code walks it.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 10_000
MAX_CONFIG_DEPTH = 64


def check_config_data(data: Any, where: str, *, max_values: int = MAX_CONFIG_VALUES,
                      max_depth: int = MAX_CONFIG_DEPTH) -> None:
    """Raise :class:`ConfigError` naming ``where`` when parsed config data holds more than ``max_values``
    values or nests deeper than ``max_depth``, counting a shared (aliased) value each time it is reached:
    the size of the data as code that walks it sees it. Stops at the first value over the bound, so the
    check itself is cheap however large the expanded data would be."""
    seen = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > max_values:
            raise ConfigError(f"{where}: holds more than {max_values:,} values (counting repeated aliases); "
                              "a config file is a few settings")
        if depth > max_depth:
            raise ConfigError(f"{where}: nested more than {max_depth} levels deep")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
            seen += len(value)  # the keys
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


def read_config_text(path: Path, what: str = "config file") -> str:
    """A config file's text: UTF-8, at most :data:`MAX_CONFIG_BYTES`; ValueError (ConfigError) naming it
    otherwise."""
    with open(path, "rb") as f:  # what the file holds, plus a byte to tell one over the limit
        raw = f.read(min(os.fstat(f.fileno()).st_size, MAX_CONFIG_BYTES) + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes, too large for a {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A run description from TOML or JSON, with optional sections ``[data]``, ``[model]``, ``[train]``
    (plus top-level ``model_name`` and ``conditional``). Command-line flags override its values.

    Raises FileNotFoundError when ``path`` is not a file, and ValueError naming the file for anything
    wrong with it: :class:`ConfigError` (not UTF-8, over :data:`MAX_CONFIG_BYTES`, too many values or too
    deep, see :func:`check_config_data`, or the wrong sections), :class:`~atelier.io.FileFormatError`
    (not JSON), or a plain ValueError (not TOML, another suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    if path.suffix.lower() == ".toml":
        import tomllib

        text = read_config_text(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML ({exc})") from exc
        except RecursionError:  # tomllib parses nested arrays and inline tables recursively
            raise ValueError(f"{path}: invalid TOML (nested too deeply)") from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise ValueError(f"{path}: invalid TOML ({str(exc)[:200]})") from exc
    elif path.suffix.lower() == ".json":
        data = parse_json(read_config_text(path), str(path))
    else:
        raise ValueError(f"{path}: config files are .toml or .json")
    check_config_data(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping with sections data, model, train; got {_kind(data)}")
    unknown = set(data) - {"data", "model", "train", "model_name", "conditional"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(map(str, unknown)))}; use data, model, train")
    for section in ("data", "model", "train"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of settings, got {_kind(data[section])}",
                              field=section)
    if "model_name" in data and not isinstance(data["model_name"], str):
        raise ConfigError(f"{path}: model_name must be a string, got {_kind(data['model_name'])}", field="model_name")
    if "conditional" in data and not isinstance(data["conditional"], bool):
        raise ConfigError(f"{path}: conditional must be true or false, got {_kind(data['conditional'])}",
                          field="conditional")
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
        extras = [bound] if (bound := range_text(_field_hints(cls)[f.name])) else []
        if hint is not bool and default not in (None, "", [], {}):
            extras.append(f"default: {' '.join(map(str, default)) if isinstance(default, (tuple, list)) else default}")
        if extras:
            text = f"{text} ({'; '.join(extras)})" if text else "; ".join(extras)
        # argparse %-formats help text: a literal "%" in a comment ("13% of ...") must be doubled
        exclusive.get(f.name, group).add_argument(flag, help=text.replace("%", "%%") or None, **kwargs)
        dests.append(f.name)
    return dests


def given_arguments(args: Any, dests: Iterable[str]) -> dict[str, Any]:
    """The values of ``dests`` that were given on the command line (flags default to None)."""
    return {k: getattr(args, k) for k in dests if getattr(args, k, None) is not None}


def check_fields(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Check ``values`` (some of ``cls``'s fields, e.g. one section of a config file) against the fields'
    declared types and ranges, naming ``where`` they came from: ``run.toml [model]: g_width must be ...``.
    (Rules relating several fields are checked when the config is built from all its sources.)"""
    hints = _field_hints(cls)
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown setting {key!r} (not a field of {cls.__name__})", field=str(key))
        try:
            check_value(value, hints[key], key)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}", field=exc.field) from None


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
