"""``save_pretrained`` / ``from_pretrained`` for models, in the manner of diffusers.

A model directory holds ``config.json`` (its family, registry name and config dataclass) and
``model.safetensors``. ``from_pretrained`` also accepts a training run directory or one of its
checkpoints, and then loads the newest checkpoint. The model classes themselves stay free of file
handling: this mixin is the only place that knows the on-disk layout.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import torch

M = TypeVar("M", bound="PretrainedMixin")


def resolve_pretrained(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint or model directory, its config.json) for a run dir, checkpoint dir or model dir."""
    from atelier.config import load_json
    from atelier.train.checkpoint import latest_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run, checkpoint or model directory")
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no model.safetensors here nor a checkpoint under {path}/checkpoints")
    return ckpt, load_json(ckpt / "config.json")


class PretrainedMixin:
    family: str = ""
    config_class: type = object

    def model_config_dict(self) -> dict[str, Any]:
        return {"family": self.family, "config": dataclasses.asdict(self.config)}  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | Path) -> Path:
        from atelier.config import environment
        from atelier.train.checkpoint import atomic_write_json, save_tensors

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(self.state_dict(), directory / "model.safetensors")  # type: ignore[attr-defined]
        atomic_write_json(directory / "config.json", {"model": self.model_config_dict(), "environment": environment()})
        return directory

    @classmethod
    def from_pretrained(cls: type[M], path: str | Path, *, map_location: str | torch.device = "cpu") -> M:
        from atelier.config import from_dict
        from atelier.train.checkpoint import load_tensors

        ckpt, config = resolve_pretrained(path)
        model_cfg = config.get("model", {})
        if model_cfg.get("family") != cls.family:
            raise ValueError(f"{ckpt}: holds a {model_cfg.get('family')!r} model, not a {cls.family!r} one")
        model = cls(from_dict(cls.config_class, model_cfg["config"]))  # type: ignore[call-arg]
        state = load_tensors(ckpt / "model.safetensors")
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
