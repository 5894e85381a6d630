"""Model families. Importing this package registers every built-in model with :mod:`atelier.registry`."""

from atelier.models.cyclegan import CycleGAN, CycleGANConfig
from atelier.models.gan import GAN, GANConfig, Discriminator, Generator
from atelier.models.vae import VAE, VAEConfig

__all__ = ["CycleGAN", "CycleGANConfig", "GAN", "GANConfig", "Discriminator", "Generator", "MODEL_FAMILIES", "VAE", "VAEConfig", "load_pretrained"]

MODEL_FAMILIES = {"cyclegan": CycleGAN, "gan": GAN, "vae": VAE}


def load_pretrained(path, *, map_location="cpu"):
    """Load any saved model (run directory, checkpoint or model directory), whatever its family."""
    from atelier.pretrained import resolve_pretrained

    ckpt, config = resolve_pretrained(path)
    family = config.get("model", {}).get("family")
    if family not in MODEL_FAMILIES:
        raise ValueError(f"{ckpt}: unknown model family {family!r}")
    return MODEL_FAMILIES[family].from_pretrained(ckpt, map_location=map_location)
