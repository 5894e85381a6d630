"""A small model registry in the manner of timm: ``@register_model("name")`` and ``create_model("name", **kw)``.

A registered entry is a factory returning an ``nn.Module``. Presets are just further registered
factories (``dcgan64`` is ``dcgan`` with the classic settings), so ``list_models()`` shows them all.
"""

from __future__ import annotations

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


def _ensure_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    import atelier.models  # noqa: F401
    import atelier.models.transformer_net  # noqa: F401


def list_models() -> list[str]:
    """Names of every registered model and preset, sorted."""
    _ensure_builtin_models()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> Any:
    """Build a registered model: ``create_model("dcgan", resolution=32, channels=3)``."""
    _ensure_builtin_models()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[key](**kwargs)
    except TypeError as exc:  # an unknown keyword: say which model rejected it
        raise ValueError(f"model {name!r}: {exc}") from exc
