"""Configs of a training run: what to train on and how. Saved with every checkpoint.

:class:`TrainConfig` holds what every family's training shares; a family that needs more (a GAN's
augmentation, a VAE's test likelihood) subclasses it in its step module and registers the subclass,
with its own defaults, as the family's ``train_config``. The trailing comment of each field is its
help text on the command line (see :func:`atelier.config.add_dataclass_arguments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import annotated_types as at

from atelier.config import Config, Count, Positive, Seed

Beta = Annotated[float, at.Interval(ge=0.0, lt=1.0)]  # an Adam beta


@dataclass
class DataConfig(Config):
    """Which dataset to load (see :func:`atelier.data.load_dataset`)."""

    name: str = "digits"  # digits | mnist | cifar10 | folder:PATH
    data_dir: str | None = None  # local files for the dataset (e.g. MNIST's IDX .gz files)
    resolution: Annotated[int, at.Interval(ge=4, le=4096)] | None = None  # side of the square training images
    # (default: the model preset's, e.g. 32 for flow-cifar, else the dataset's own: 32 for cifar10, 28 otherwise)
    split: str = "train"  # the split trained on: train, test or all, or a slice of one such as train[:30000]
    channels: Literal[1, 3] | None = None  # force grayscale (1) or RGB (3)
    strict: bool = False  # fail on any unreadable image instead of skipping it
    verify: bool = True  # check the SHA-256 of dataset files

    cli_flags: ClassVar[dict[str, str]] = {"name": "--data"}  # bool fields that default to True get --no-NAME


@dataclass
class TrainConfig(Config):
    """How to train. Exactly one of ``steps``/``epochs`` may be set; ``minutes`` adds a wall-clock
    budget (whichever ends first); with none of them the run lasts ``DEFAULT_EPOCHS`` epochs."""

    batch_size: Annotated[int, at.Interval(ge=1, le=2**16)] = 64
    steps: Count | None = None  # optimisation steps (a resumed run continues up to it)
    epochs: Annotated[float, at.Interval(gt=0, le=10**6)] | None = None  # passes over the data, instead of steps
    minutes: Annotated[float, at.Interval(gt=0, le=10**7)] | None = None  # wall-clock budget (ends at whichever comes first)
    seed: Seed = 0
    lr: Positive = 2e-4
    betas: tuple[Beta, Beta] = (0.5, 0.999)  # Adam's beta1 and beta2
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"  # cosine decays to 0 by the last step;
    # linear keeps the rate for the first half, then decays it linearly to 0 (CycleGAN); both need steps or epochs
    warmup_steps: Annotated[int, at.Interval(ge=0, le=10**9)] = 0  # linear learning-rate warm-up from 0 over these steps
    ema_decay: Annotated[float, at.Interval(ge=0.0, lt=1.0)] = 0.999  # 0 disables averaging (the EMA copy then tracks the raw weights)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA and on CPUs with
    # native bf16, else fp32
    channels_last: bool = False  # channels-last memory format
    compile: bool = False  # torch.compile the networks
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: Count = 50
    sample_every: Count = 500
    checkpoint_every: Count = 1000
    keep_checkpoints: Annotated[int, at.Interval(ge=1, le=10**4)] = 2
    tensorboard: bool = True  # log to TensorBoard (RUN/tb)
    progress: bool = True  # show progress bars

    DEFAULT_EPOCHS: ClassVar[int] = 5
    cli_exclusive: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if self.lr_schedule in ("cosine", "linear") and self.steps is None and self.epochs is None \
                and self.minutes is not None:  # with none of the three the run lasts DEFAULT_EPOCHS
            raise ValueError(f"the {self.lr_schedule} schedule needs a known length: give steps or epochs "
                             "(minutes may cap it)")


@dataclass
class GenerativeTrainConfig(TrainConfig):
    """Training of a family that samples from noise: adds FID/KID measured during the run."""

    eval_every: Count | None = None  # measure FID/KID every K steps and keep checkpoints/best by FID
    eval_n: Annotated[int, at.Interval(ge=10, le=200_000)] = 2000  # generated (and at most real) images per
    # evaluation
    eval_split: str = "test"  # real split evaluated against


def lr_factor(step: int, total: int | None, schedule: str, warmup_steps: int = 0) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then constant, a cosine decay
    that reaches 0 at ``total``, or ``linear``: constant for the first half, then a straight line to 0
    at ``total`` (CycleGAN's schedule). A pure function of the step, so resuming needs no scheduler state."""
    import math

    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or not total:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    if schedule == "linear":
        return min(1.0, 2.0 * (1.0 - progress))
    return 0.5 * (1.0 + math.cos(math.pi * progress))

