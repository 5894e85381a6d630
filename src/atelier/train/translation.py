"""The entry point behind ``atelier train cyclegan``: two unpaired domains + model + step + trainer.

The run directory has the same layout as every other run (checkpoints, samples, history, config);
the saved ``data`` section is an :class:`UnpairedDataConfig`, so ``--resume`` rebuilds both domains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from atelier.config import environment, to_dict
from atelier.data import DataError, ImageDataset, load_dataset, to_float
from atelier.registry import create_model
from atelier.train.config import TrainConfig, resolve_precision
from atelier.train.distributed import DistContext, resolve_device
from atelier.train.run import resume_configs
from atelier.train.steps import FAMILY_STEPS
from atelier.train.trainer import Hook, Trainer, TrainResult
from atelier.train.unpaired import UnpairedSampler

PREVIEW_IMAGES = 8


@dataclass
class UnpairedDataConfig:
    """Two datasets (any :func:`atelier.data.load_dataset` spec: ``folder:PATH``, a folder path,
    ``mnist``, ``digits``) at one resolution; nothing pairs their images."""

    domain_a: str = ""
    domain_b: str = ""
    resolution: int = 28
    split: str = "train"  # a folder with train/ and test/ sub-folders trains on train/
    channels_a: int | None = None  # None: the natural count of each domain (3 if any image is colour)
    channels_b: int | None = None
    data_dir: str | None = None  # for the mnist spec: the IDX files
    strict: bool = False
    verify: bool = True


def load_domains(data: UnpairedDataConfig, *, progress: bool = True) -> tuple[ImageDataset, ImageDataset]:
    if not data.domain_a or not data.domain_b:
        raise DataError("a translation run needs two domains: give domain_a and domain_b (--domain-a/--domain-b)")
    out = []
    for spec, channels in ((data.domain_a, data.channels_a), (data.domain_b, data.channels_b)):
        spec = spec if ":" in spec or spec in ("mnist", "digits") else f"folder:{spec}"
        out.append(load_dataset(spec, resolution=data.resolution, split=data.split, data_dir=data.data_dir,
                                channels=channels, strict=data.strict, verify=data.verify, progress=progress))
    return out[0], out[1]


def _preview(dataset: ImageDataset, seed: int) -> torch.Tensor:
    """A fixed handful of a domain's images in [-1, 1] for the sample grids."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:PREVIEW_IMAGES]
    return to_float(dataset.images[idx])


def train_translation(
    model_name: str = "cyclegan",
    *,
    data: UnpairedDataConfig,
    train: TrainConfig,
    out: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    resume: bool = False,
    hooks: list[Hook] | None = None,
) -> TrainResult:
    """Train ``model_name`` (a registry name of a translation model: ``cyclegan``) on the unpaired
    domains of ``data`` into the run directory ``out``; with ``resume`` continue its newest checkpoint."""
    if train.eval_every:
        raise ValueError("FID evaluation during training (eval_every) is for generative models; measure a "
                         "translation run with atelier.metrics.translation instead")
    dist = DistContext.from_env()
    device = resolve_device(train.device, dist)
    train = replace(train, precision=resolve_precision(train.precision, device))  # record what ran
    a, b = load_domains(data, progress=train.progress and dist.is_main)
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("resolution", data.resolution)
    kwargs.setdefault("channels_a", a.channels)
    kwargs.setdefault("channels_b", b.channels)
    expected = (kwargs["resolution"], kwargs["channels_a"], kwargs["channels_b"])
    if expected != (a.resolution, a.channels, b.channels):
        raise DataError(f"the model expects {expected[1]} and {expected[2]} channels at {expected[0]} px but the "
                        f"domains give {a.channels} and {b.channels} at {a.resolution} px; set the data "
                        "resolution/channels to match")
    torch.manual_seed(train.seed)  # the model's initial weights depend on the seed alone
    model = create_model(model_name, **kwargs)
    if model.family != "cyclegan":
        raise ValueError(f"{model_name!r} is a {model.family} model, not a translation model; use atelier train "
                         f"{model.family}")
    step_fn = FAMILY_STEPS[model.family](model, train, device, dist,
                                         preview_images=(_preview(a, train.seed), _preview(b, train.seed + 1)))
    sampler = UnpairedSampler(a, b, train.batch_size, train.seed, device=device, rank=dist.rank,
                              world_size=dist.world_size, channels_last=train.channels_last)
    run_config = {
        "model": {"name": model_name, **model.model_config_dict()},
        "train": to_dict(train),
        "data": to_dict(data),
        "dataset": {"a": {"name": a.name, "size": len(a)}, "b": {"name": b.name, "size": len(b)}},
        "environment": environment(),
    }
    trainer = Trainer(step_fn, a, train, out, run_config=run_config, device=device, dist=dist, hooks=hooks,
                      sampler=sampler)
    return trainer.fit(resume=resume)


def resume_translation(run_dir: str | Path, train_overrides: dict[str, Any] | None = None, *,
                       hooks: list[Hook] | None = None) -> TrainResult:
    """Continue the translation run in ``run_dir`` from its newest checkpoint (``train_overrides``,
    e.g. ``{"steps": 2000}``, change the saved training config)."""
    name, model_cfg, data, train = resume_configs(run_dir, train_overrides or {}, data_class=UnpairedDataConfig)
    return train_translation(name, data=data, train=train, out=run_dir, model_kwargs=model_cfg, resume=True,
                             hooks=hooks)
