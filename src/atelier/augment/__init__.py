"""Data augmentation.

- Classic pipelines, batched on tensors on any device (built on kornia): :mod:`ops` (the named ops),
  :mod:`pipeline` (seeded, replayable pipelines from Python, YAML or TOML), :mod:`mix` (mixup, cutmix),
  :mod:`folder` (augment a labelled folder of images, with a contact sheet).
- Differentiable augmentation for GANs on little data: :mod:`diffaugment` (DiffAugment) and :mod:`ada`
  (adaptive discriminator augmentation), used by ``atelier train gan --augment diffaugment|ada``.
- Generative augmentation (labelled samples from a conditional GAN or VAE, optionally filtered by a
  classifier's confidence) needs trained models, so it lives a layer up, in :mod:`atelier.creative.generative`.
"""

from atelier.augment.mix import MixResult, cutmix, mixup
from atelier.augment.ops import AugmentOp, list_ops
from atelier.augment.pipeline import AugmentConfig, OpConfig, Pipeline, default_pipeline

__all__ = ["AugmentConfig", "AugmentOp", "MixResult", "OpConfig", "Pipeline", "cutmix", "default_pipeline",
           "list_ops", "mixup"]
