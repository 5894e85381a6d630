"""``save_pretrained`` / ``from_pretrained`` for models, in the manner of diffusers, and
:func:`load_pretrained` for a saved model of any family.

A model directory holds ``config.json`` (its family, registry name and config dataclass) and
``model.safetensors``. ``from_pretrained`` also accepts a training run directory or one of its
checkpoints, and then loads the newest checkpoint. The model classes themselves stay free of file
handling: this mixin is the only place that knows the on-disk layout.

Every class that mixes this in and names a ``family`` is known to :func:`load_pretrained` by that name
(and by its ``family_aliases``, names older versions saved) as soon as its module is imported: a new
family needs no table edited here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from atelier.config import environment, from_dict
from atelier.io import atomic_write_json, load_json, load_tensors, save_tensors

M = TypeVar("M", bound="PretrainedMixin")
#: The file in a ``checkpoints`` directory naming its newest complete checkpoint.
LATEST = "latest"


def latest_checkpoint(path: Path) -> Path | None:
    """The newest checkpoint under a run directory, a ``checkpoints`` directory, or ``path`` itself."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    for root in (path / "checkpoints", path):
        pointer = root / LATEST
        if pointer.is_file():
            candidate = root / pointer.read_text().strip()
            if (candidate / "model.safetensors").is_file():
                return candidate
    return None


def resolve_pretrained(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint or model directory, its config.json) for a run dir, checkpoint dir or model dir."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run, checkpoint or model directory")
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no model.safetensors here nor a checkpoint under {path}/checkpoints")
    return ckpt, load_json(ckpt / "config.json")


_MODEL_CLASSES: dict[str, type] = {}


def model_class(family: str) -> type:
    """The model class saved models of ``family`` load into (every built-in model module is imported)."""
    from atelier.models.registry import import_builtin_models

    import_builtin_models()
    if family not in _MODEL_CLASSES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(sorted(set(_MODEL_CLASSES)))}")
    return _MODEL_CLASSES[family]


def load_pretrained(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """Load any saved model (run directory, checkpoint or model directory), whatever its family."""
    ckpt, config = resolve_pretrained(path)
    family = config.get("model", {}).get("family") if isinstance(config, dict) else None
    try:
        cls = model_class(str(family))
    except ValueError as exc:
        raise ValueError(f"{ckpt}: {exc}") from None
    return cls.from_pretrained(ckpt, map_location=map_location)


class PretrainedMixin:
    family: ClassVar[str] = ""
    family_aliases: ClassVar[tuple[str, ...]] = ()  # names this family was saved under by older versions
    #: What the model does for the pipeline façade: sample, interpolate, reconstruct, translate, stylize.
    tasks: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type] = object

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            for name in (cls.family, *cls.family_aliases):
                _MODEL_CLASSES[name] = cls

    def model_config_dict(self) -> dict[str, Any]:
        return {"family": self.family, "config": dataclasses.asdict(self.config)}  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(self.state_dict(), directory / "model.safetensors")  # type: ignore[attr-defined]
        atomic_write_json(directory / "config.json", {"model": self.model_config_dict(), "environment": environment()})
        return directory

    @classmethod
    def from_pretrained(cls: type[M], path: str | Path, *, map_location: str | torch.device = "cpu") -> M:
        ckpt, config = resolve_pretrained(path)
        model_cfg = config.get("model", {})
        if model_cfg.get("family") not in (cls.family, *cls.family_aliases):
            raise ValueError(f"{ckpt}: holds a {model_cfg.get('family')!r} model, not a {cls.family!r} one")
        model = cls(from_dict(cls.config_class, model_cfg["config"]))  # type: ignore[call-arg]
        state = load_tensors(ckpt / "model.safetensors", what="model weights")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)  # type: ignore[attr-defined]
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            raise ValueError(f"{ckpt / 'model.safetensors'} does not match the config: {exc}") from exc
        if missing or unexpected:
            raise ValueError(
                f"{ckpt / 'model.safetensors'} does not match the config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        return model.to(map_location).eval()  # type: ignore[attr-defined,return-value]
