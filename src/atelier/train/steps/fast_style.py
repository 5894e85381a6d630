"""The fast-style family: a feed-forward network trained for one style with perceptual losses.

Johnson et al. (2016) train a :class:`~atelier.models.transformer_net.TransformerNet` on a folder of
content photos: its output must keep the VGG features of the photo (content loss) and take on the
Gram matrices of the style image (style loss), plus a small total-variation prior
(:class:`~atelier.objectives.perceptual.PerceptualLoss`). Training takes minutes to hours; stylising
then costs one forward pass (:mod:`atelier.style.fast`).

Batches are random crops of the content photos (:class:`~atelier.data.content.ContentSampler`), as
floats in [0, 1]. The feature network is frozen and not part of the model or its checkpoints; which
one ran (its weights' SHA-256, or the random fallback) is recorded in the run's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import torch

from atelier.config import Config, NonNegative
from atelier.data.base import Batch
from atelier.data.content import ContentSampler, content_files
from atelier.data.images import read_image
from atelier.device import autocast
from atelier.models.registry import Family, register_family
from atelier.models.transformer_net import TransformerNet
from atelier.objectives.perceptual import PerceptualLoss
from atelier.train.config import TrainConfig
from atelier.train.distributed import DistContext
from atelier.train.steps.base import RunSetup, TrainStep, make_adam, prepare

#: Johnson et al.'s layers of VGG-16: content from relu2_2, style from four depths, equally weighted.
JOHNSON_CONTENT_LAYERS = {"relu2_2": 1.0}
JOHNSON_STYLE_LAYERS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
PREVIEW_PHOTOS = 4


@dataclass
class FastStyleDataConfig(Config):
    """The style image(s) and the content photos a fast-style network trains on."""

    style: list[str] = field(default_factory=list)  # style image path(s); several are blended
    content_dir: str = ""  # folder of content photos, searched recursively ("": scikit-image's photos)
    size: Annotated[int, at.Interval(ge=16, le=8192)] = 256  # training crops are size x size (CPUs: 128 is four times cheaper)
    crop_scale: Annotated[float, at.Interval(gt=0.0, le=1.0)] = 0.67  # random crops cover this fraction (up to all) of a photo's shorter side
    style_size: Annotated[int, at.Interval(ge=16, le=8192)] | None = None  # longer side of the style image(s) (default: size)

    def __post_init__(self) -> None:
        if isinstance(self.style, (str, Path)):
            self.style = [str(self.style)]
        super().__post_init__()


@dataclass
class FastStyleTrainConfig(TrainConfig):
    """Fast-style training: Adam 1e-3 on batches of 4 crops (Johnson et al.), perceptual loss weights and
    layers, and where the VGG feature network's weights come from."""

    batch_size: int = 4
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's beta1 and beta2
    ema_decay: float = 0.0  # the network is used as trained (no moving average is kept)
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    content_weight: NonNegative = 1.0
    style_weight: NonNegative = 10.0
    tv_weight: NonNegative = 1e-3
    content_layers: dict[str, NonNegative] = field(default_factory=lambda: dict(JOHNSON_CONTENT_LAYERS))
    style_layers: dict[str, NonNegative] = field(default_factory=lambda: dict(JOHNSON_STYLE_LAYERS))
    style_blend: list[NonNegative] | None = None  # weights of several style images (default: equal)
    arch: Literal["vgg16", "vgg19"] = "vgg16"  # the feature network
    pool: Literal["max", "avg"] = "max"
    weights: str | None = None  # VGG weights file (.pth state dict or .safetensors); default: the cache
    weights_sha256: str | None = None  # accept --weights if its SHA-256 is this (your own weights)
    verify_weights: bool = True  # check the weights file against the pinned official SHA-256
    download: bool = True  # download the official VGG weights when they are not cached
    fallback: bool = True  # fall back on the random multi-scale feature network (with a warning) when there
    # are no VGG weights

    DEFAULT_STEPS = 2000  # when none of steps / epochs / minutes is given
    cli_exclusive = (("weights_sha256", "verify_weights"),)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.style_layers:
            raise ValueError("give at least one style layer")


class FastStyleStep(TrainStep):
    """One Adam step of the style network on the perceptual loss of a batch of content crops."""

    def __init__(self, model: TransformerNet, cfg: FastStyleTrainConfig, device: torch.device,
                 dist: DistContext | None = None, *, features: torch.nn.Module, styles: list[torch.Tensor],
                 sampler: ContentSampler, preview_images: torch.Tensor | None = None) -> None:
        dist = self._setup(model, cfg, device, dist)
        model.to(memory_format=torch.channels_last)
        self.net = prepare(model, cfg, device, dist)
        self.optimizers = {"network": make_adam(model.parameters(), cfg.lr, cfg.betas, device)}
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)
        features = features.to(device).eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.objective = PerceptualLoss(features, [s.to(device) for s in styles], cfg,
                                        autocast=partial(autocast, cfg.precision, device))
        self.sampler = sampler
        self.preview_images = preview_images

    @classmethod
    def setup_run(cls, data: FastStyleDataConfig, train: FastStyleTrainConfig, model_kwargs: dict[str, Any], *,
                  conditional: bool, dist: DistContext, device: torch.device,
                  features: torch.nn.Module | None = None) -> RunSetup:
        """Content photos, style images and the frozen feature network (``features`` replaces VGG)."""
        from atelier.models.vgg_weights import describe, feature_network, weights_provenance

        if conditional:
            raise ValueError("a fast-style network takes no class labels")
        if not data.style:
            raise ValueError("give at least one style image (--style)")
        if train.style_blend is not None and len(train.style_blend) != len(data.style):
            raise ValueError(f"{len(data.style)} style images but {len(train.style_blend)} style_blend weights")
        sampler = ContentSampler(content_files(data.content_dir), data.size, seed=train.seed,
                                 crop_scale=data.crop_scale, batch_size=train.batch_size, rank=dist.rank,
                                 world_size=dist.world_size, device=device)
        styles = [read_image(p, size=data.style_size or data.size) for p in data.style]
        if features is None:
            features = feature_network(train, weights=train.weights, sha256=train.weights_sha256,
                                           verify=train.verify_weights, download=train.download,
                                           fallback=train.fallback, device=device)
        info = {"content": {"photos": len(sampler), "folder": data.content_dir or "scikit-image photos"}}
        provenance = {"feature_network": describe(features), "feature_weights": weights_provenance(features)}
        step_kwargs = {"features": features, "styles": styles, "sampler": sampler,
                       "preview_images": sampler.preview(PREVIEW_PHOTOS)}
        return RunSetup(sampler, dict(model_kwargs), info, step_kwargs=step_kwargs, provenance=provenance)

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        x = batch.images
        terms = self.objective(self.net(x), x)
        opt = self.optimizers["network"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        return {"loss": terms["loss"].detach(), **{f"loss_{k}": v.detach() for k, v in terms.items() if k != "loss"}}

    # -- previews: content crops (top row) and their stylisations (bottom row) ----------------------
    def preview(self, n: int, seed: int) -> torch.Tensor:
        photos = self.preview_images
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            styled = self.model(photos.to(self.device).contiguous(memory_format=torch.channels_last)).float().cpu()
        self.model.train(was_training)
        return torch.cat([photos.cpu(), styled]) * 2 - 1  # [-1, 1] for the grid writer

    def preview_layout(self) -> int:
        return len(self.preview_images)

    def preview_count(self) -> int:
        return 2 * len(self.preview_images)

    # -- checkpointed state: unreadable content files are skipped for the rest of the run -------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "bad_files": sorted(str(p) for p in self.sampler.bad)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sampler.bad = {Path(p) for p in state.get("bad_files", [])}


FAMILY = register_family(Family(
    name="fast-style", model_class=TransformerNet, step_class=FastStyleStep, train_config=FastStyleTrainConfig,
    data_config=FastStyleDataConfig, default_model="transformer-net",
    summary="train a feed-forward style network on content photos (also: atelier style train)",
))
