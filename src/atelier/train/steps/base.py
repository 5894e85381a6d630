"""What every family's training step shares. The trainer is model-agnostic; a step knows its family.

A step object owns the model, its optimisers and its private RNG, and exposes:

- ``train_step(batch, step) -> dict[str, Tensor]``: one update; scalar logs (losses first);
- ``preview(n, seed) -> Tensor``: images in [-1, 1] for sample grids (fixed by ``seed``);
- ``optimizers``: name -> optimiser, checkpointed by the trainer;
- ``state_dict()`` / ``load_state_dict()``: any further state to checkpoint (RNG, ADA p, pools, ...).

A step class also knows how a run of its family starts and ends (class methods, so the generic
entry point :func:`atelier.train.run.train_model` needs no ``if family == ...``):

- ``setup_run(data, train, model_kwargs, ...)``: load the data, fill in the model settings the data
  decides (resolution, channels, classes) and build the batch sampler;
- ``hooks(data, train, setup)``: trainer hooks the family wants (e.g. FID every K steps);
- ``finish(run_dir, data, train)``: what the end of a run computes (e.g. a VAE's test likelihood).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from atelier.data import DataError, ImageDataset, load_dataset
from atelier.device import autocast
from atelier.train.batches import BatchSampler
from atelier.train.config import DataConfig, TrainConfig
from atelier.train.distributed import DistContext


def make_adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all parameters) where this build has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # fused not supported for this device/dtype
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def prepare(module: nn.Module, cfg: TrainConfig, device: torch.device, dist: DistContext) -> nn.Module:
    """The callable used in training: DDP- and/or torch.compile-wrapped view of ``module``."""
    wrapped = dist.wrap(module, device)
    return torch.compile(wrapped) if cfg.compile else wrapped


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed

    torch.distributed.all_reduce(t)
    return t


@dataclass
class RunSetup:
    """What ``setup_run`` prepares for one run: the batches, the model's data-given settings, and
    what the run's config.json records about the data."""

    sampler: Any  # step -> batch; has steps_per_epoch and epoch_of(step)
    model_kwargs: dict[str, Any]
    dataset_info: dict[str, Any]
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: ImageDataset | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # further records for config.json (e.g. weights)


class TrainStep:
    """Base of every family's step: model placement, precision, a private RNG saved with checkpoints."""

    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    rng: torch.Generator
    supports_augment: ClassVar[bool] = False  # whether GAN-style --augment means anything here

    # -- a run of this family -------------------------------------------------------------------
    @classmethod
    def setup_run(cls, data: Any, train: TrainConfig, model_kwargs: dict[str, Any], *, conditional: bool,
                  dist: DistContext, device: torch.device) -> RunSetup:
        """One labelled (or not) dataset from ``data`` (a :class:`DataConfig`), batched by a
        :class:`BatchSampler`; the model gets the data's resolution and channels, and one class per
        label when ``conditional``."""
        dataset = load_dataset(data.name, resolution=data.resolution, split=data.split, data_dir=data.data_dir,
                               channels=data.channels, strict=data.strict, verify=data.verify,
                               progress=train.progress and dist.is_main)
        kwargs = dict(model_kwargs)
        kwargs.setdefault("resolution", data.resolution)
        kwargs.setdefault("channels", dataset.channels)
        if conditional and "num_classes" not in kwargs:
            if dataset.labels is None:
                raise DataError(f"{dataset.name} has no labels, so a conditional model cannot be trained on it")
            kwargs["num_classes"] = dataset.num_classes
        if kwargs.get("num_classes") and dataset.labels is None:
            raise DataError(f"the model is conditional but {dataset.name} has no labels")
        if kwargs["resolution"] != dataset.resolution or kwargs["channels"] != dataset.channels:
            raise DataError(
                f"the model expects {kwargs['channels']}x{kwargs['resolution']}px images but {dataset.name} gives "
                f"{dataset.channels}x{dataset.resolution}px; set the data resolution/channels to match"
            )
        sampler = BatchSampler(dataset, train.batch_size, train.seed, device=device, rank=dist.rank,
                               world_size=dist.world_size, channels_last=train.channels_last)
        info = {"name": dataset.name, "size": len(dataset), "classes": dataset.classes}
        return RunSetup(sampler, kwargs, info, dataset=dataset)

    @classmethod
    def hooks(cls, data: Any, train: TrainConfig, setup: RunSetup) -> list:
        return []

    def finish(self, run_dir: Path, data: Any, train: TrainConfig) -> dict[str, Any]:
        """Metrics computed once at the end of a run (rank 0 only); written by the step if it wants."""
        return {}

    # -- the step -------------------------------------------------------------------------------
    def _setup(self, model: nn.Module, cfg: TrainConfig, device: torch.device,
               dist: DistContext | None) -> DistContext:
        """Keep model, config and device; move the model (channels-last if asked); return the DistContext."""
        if getattr(cfg, "augment", "none") != "none" and not self.supports_augment:
            raise ValueError(f"augment={cfg.augment!r} augments what a GAN's discriminator sees; "
                             f"{type(self).__name__} has nothing to apply it to: train without --augment")
        self.model, self.cfg, self.device = model, cfg, device
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        return dist or DistContext()

    def autocast(self):
        """bf16 autocast when the run's precision says so (resolved once, before the run starts)."""
        return autocast(self.cfg.precision, self.device)

    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def preview(self, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def preview_layout(self) -> int:
        """Columns of the preview grid."""
        return 8

    def preview_count(self) -> int:
        return 8 * self.preview_layout()

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])


class GenerativeStep(TrainStep):
    """Families that sample images from noise (GAN, VAE): previews from ``model.sample``, one column
    per class for conditional models, and FID/KID every ``train.eval_every`` steps."""

    def preview(self, n: int, seed: int) -> torch.Tensor:
        return self.model.sample(n, generator=torch.Generator().manual_seed(seed))

    def preview_layout(self) -> int:
        return self.model.config.num_classes if self.model.conditional else 8

    @classmethod
    def hooks(cls, data: DataConfig, train: TrainConfig, setup: RunSetup) -> list:
        if not getattr(train, "eval_every", None):
            return []
        from atelier.train.evaluation import EvalHook

        channels = setup.model_kwargs["channels"]

        def make_evaluator():
            from atelier.metrics import EvalConfig, Evaluator

            cfg = EvalConfig(data=data.name, data_dir=data.data_dir, split=train.eval_split, n=train.eval_n,
                             seed=train.seed, metrics=("fid", "kid"))
            return Evaluator(cfg, resolution=data.resolution, channels=channels, progress=False)

        return [EvalHook(make_evaluator, every=train.eval_every, n=train.eval_n, seed=train.seed)]
