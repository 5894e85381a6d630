"""A small model registry in the manner of timm: ``@register_model("name")`` and ``create_model("name", **kw)``.

A registered entry is a factory returning an ``nn.Module``. Presets are just further registered
factories (``dcgan64`` is ``dcgan`` with the classic settings), so ``list_models()`` shows them all.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Any, Callable

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory`` under ``name`` (names are unique and lower-case)."""

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not factory:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[key] = factory
        return factory

    return decorator


@functools.cache
def import_builtin_models() -> None:
    """Import every module of :mod:`atelier.models`, which runs their ``@register_model`` decorators.

    Found by listing the package, so a new model module is registered without editing a list. Done once
    per process (listing the package costs ~0.1 ms, which a server would pay on every request)."""
    import importlib
    import pkgutil

    import atelier.models as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def list_models() -> list[str]:
    """Names of every registered model and preset, sorted."""
    import_builtin_models()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> Any:
    """Build a registered model: ``create_model("dcgan", resolution=32, channels=3)``."""
    import_builtin_models()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[key]
    try:
        count, nbytes = model_size(name, **kwargs)
        from atelier.device import ensure_fits

        # refused before anything is allocated: a width with three zeros too many is a message, not an OOM kill
        ensure_fits(nbytes, f"model {name!r} with these settings ({count:,} parameters)", advice=SMALLER)
        return factory(**kwargs)
    except TypeError as exc:  # an unknown keyword: say which model rejected it
        raise ValueError(f"model {name!r}: {exc}") from exc


_RANDOM_FILLS = frozenset({"normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_",
                           "xavier_normal_", "xavier_uniform_", "orthogonal_", "bernoulli_", "exponential_",
                           "random_", "geometric_", "log_normal_", "cauchy_"})


def _SkipRandomInit():  # noqa: N802 - used as a context manager, like the class it returns
    """A torch-function mode that skips random initialisers on meta tensors: they change values only, and
    a meta tensor has none, but PyTorch runs them through its Python references, whose first use imports
    the compiler stack (seconds)."""
    from torch.overrides import TorchFunctionMode

    class SkipRandomInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            target = args[0] if args else (kwargs or {}).get("tensor")  # nn.init passes it by keyword
            if getattr(func, "__name__", "") in _RANDOM_FILLS and getattr(target, "is_meta", False):
                return target
            return func(*args, **(kwargs or {}))

    return SkipRandomInit()


SMALLER = "Make it smaller: fewer or narrower layers, a smaller latent or resolution"


def model_size(name: str, **kwargs: Any) -> tuple[int, int]:
    """(number, bytes) of the parameters and buffers ``create_model(name, **kwargs)`` would allocate,
    found by building the model on PyTorch's meta device: shapes only, no memory, no time."""
    import_builtin_models()
    factory = _REGISTRY[name.lower()]
    try:
        return built_size(factory, **kwargs)
    except TypeError as exc:  # an unknown keyword: say which model rejected it
        raise ValueError(f"model {name!r}: {exc}") from exc


def built_size(build: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, int]:
    """(number, bytes) of the parameters and buffers of the module ``build(*args, **kwargs)`` returns,
    built on the meta device (shapes only: no memory, no time)."""
    import torch

    with torch.device("meta"), _SkipRandomInit():
        probe = build(*args, **kwargs)
    tensors = [*probe.parameters(), *probe.buffers()] if isinstance(probe, torch.nn.Module) else []
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


def preset_setting(name: str, field: str) -> Any:
    """The value of config ``field`` that the preset ``name`` builds with when not told one, where the
    preset sets it (it differs from the default of its family's config class: e.g. ``flow-cifar``'s
    resolution 32 where the flow family's config says 28); else None. Built on the meta device."""
    import dataclasses

    import torch

    import_builtin_models()
    family = _FAMILIES.get(model_family(name))
    defaults = {f.name: f.default for f in dataclasses.fields(family.model_config)} if family else {}
    if field not in defaults:
        return None
    try:
        with torch.device("meta"), _SkipRandomInit():
            probe = _REGISTRY[name.lower()]()
    except (TypeError, ValueError):  # a preset that needs arguments sets nothing by itself
        return None
    value = getattr(getattr(probe, "config", None), field, None)
    return None if value is None or value == defaults[field] else value


# -- model families ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """Everything Atelier knows about one model family, registered once, beside its training step.

    The generic training entry point, the CLI (``atelier train <name>``, its flags derived from the
    config dataclasses), ``load_pretrained`` (through ``model_class.family``) and the demo read this;
    nothing else names a family.
    """

    name: str  # "gan": `atelier train gan`, and the family saved models record
    model_class: type  # the nn.Module; its ``config_class`` is the model config dataclass
    step_class: type  # the training step (``atelier.train.steps.<module>``)
    train_config: type  # dataclass: TrainConfig or a subclass with this family's fields and defaults
    data_config: type  # dataclass describing what it trains on
    default_model: str  # registry name used when none is given
    summary: str = ""  # one line for `atelier train --help`
    conditional: bool = False  # whether a --conditional flag makes sense (the model takes class labels)
    aliases: tuple[str, ...] = ()  # further command names, e.g. for families renamed

    @property
    def model_config(self) -> type:
        return self.model_class.config_class


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register ``family`` (call it once, in the family's step module); returns it."""
    if family.model_class.family != family.name:
        raise ValueError(f"family {family.name!r}: its model class says family {family.model_class.family!r}")
    for key in (family.name, *family.aliases):
        if key in _FAMILIES and _FAMILIES[key] != family:
            raise ValueError(f"model family {key!r} is already registered")
        _FAMILIES[key] = family
    return family


def get_family(name: str) -> Family:
    """A registered family by name or alias (its step module must have been imported: ``atelier.train``
    imports every one)."""
    if name not in _FAMILIES:
        known = ", ".join(list_families()) or "none (import atelier.train first)"
        raise KeyError(f"unknown model family {name!r}; registered: {known}")
    return _FAMILIES[name]


def list_families() -> list[str]:
    """Names of the registered families (without aliases), in registration order."""
    return list(dict.fromkeys(f.name for f in _FAMILIES.values()))


def model_family(name: str) -> str:
    """The family of the registered model (or preset) ``name``, from its factory's return annotation."""
    import typing

    import_builtin_models()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    returned = typing.get_type_hints(_REGISTRY[key]).get("return")
    family = getattr(returned, "family", "")
    if not family:
        raise ValueError(f"model {name!r}: its factory must be annotated with the model class it returns")
    return family
