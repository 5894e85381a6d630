"""Model families. Importing this package registers every built-in model with :mod:`atelier.registry`."""

from atelier.models.gan import GAN, GANConfig, Discriminator, Generator

__all__ = ["GAN", "GANConfig", "Discriminator", "Generator", "MODEL_FAMILIES", "load_pretrained"]

MODEL_FAMILIES = {"gan": GAN}


def load_pretrained(path, *, map_location="cpu"):
    """Load any saved model (run directory, checkpoint or model directory), whatever its family."""
    from pathlib import Path

    from atelier.config import load_json
    from atelier.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(Path(path))
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no model.safetensors here nor a checkpoint under {path}/checkpoints")
    family = load_json(ckpt / "config.json").get("model", {}).get("family")
    if family not in MODEL_FAMILIES:
        raise ValueError(f"{ckpt}: unknown model family {family!r}")
    return MODEL_FAMILIES[family].from_pretrained(ckpt, map_location=map_location)
