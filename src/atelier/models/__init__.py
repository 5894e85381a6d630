"""Networks. Each module defines its model classes and registers its presets with
:mod:`atelier.models.registry`; ``load_pretrained`` loads a saved model of any family."""

from atelier.models.cyclegan import CycleGAN, CycleGANConfig
from atelier.models.gan import GAN, Discriminator, GANConfig, Generator
from atelier.models.pretrained import load_pretrained
from atelier.models.registry import create_model, list_models
from atelier.models.transformer_net import TransformerNet, TransformerNetConfig
from atelier.models.vae import VAE, VAEConfig

__all__ = ["CycleGAN", "CycleGANConfig", "Discriminator", "GAN", "GANConfig", "Generator", "TransformerNet",
           "TransformerNetConfig", "VAE", "VAEConfig", "create_model", "list_models", "load_pretrained"]
