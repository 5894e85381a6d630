"""Configs of a training run: what to train on and how. Saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")
AUGMENTS = ("none", "diffaugment", "ada")  # what the GAN discriminator sees (atelier.augment)

#: Training defaults that differ by family: the DCGAN recipe (Adam 2e-4, beta1 0.5, batch 64) is the
#: class default; VAEs train best with plain Adam (1e-3, beta1 0.9) on larger batches.
#: CycleGAN: the paper's Adam 2e-4, beta1 0.5 and linear decay over the second half; batches of 8 rather
#: than 1 (instance norm makes the batch size harmless, and the CPU far more efficient).
FAMILY_DEFAULTS: dict[str, dict] = {"gan": {}, "vae": {"lr": 1e-3, "betas": (0.9, 0.999), "batch_size": 128},
                                    "cyclegan": {"batch_size": 8, "lr_schedule": "linear"}}


@dataclass
class DataConfig:
    """Which dataset to load (see :func:`atelier.data.load_dataset`)."""

    name: str = "digits"
    data_dir: str | None = None
    resolution: int = 28
    split: str = "train"
    channels: int | None = None
    strict: bool = False
    verify: bool = True


@dataclass
class TrainConfig:
    """How to train. Exactly one of ``steps``/``epochs`` may be set; ``minutes`` adds a wall-clock
    budget (whichever ends first); with none of them the run lasts ``DEFAULT_EPOCHS`` epochs."""

    batch_size: int = 64
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    seed: int = 0
    lr: float = 2e-4
    lr_d: float | None = None  # discriminator learning rate for GANs (default: lr)
    betas: tuple[float, float] = (0.5, 0.999)
    lr_schedule: str = "constant"  # constant | cosine | linear (both decay to 0 at the last step; need steps or epochs)
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 over these steps
    ema_decay: float = 0.999  # 0 disables averaging (the EMA copy then tracks the raw weights)
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto: bf16 where the hardware has it natively
    channels_last: bool = False
    compile: bool = False  # torch.compile the networks
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int | None = None  # measure FID/KID every K steps and keep checkpoints/best by FID
    eval_n: int = 2000  # generated (and at most real) images per evaluation
    eval_split: str = "test"  # real split to compare against
    iw_samples: int = 100  # VAE: k of the importance-weighted test NLL in metrics.json (0: skip)
    iw_images: int = 1000  # VAE: test images the importance-weighted NLL is averaged over
    tensorboard: bool = True
    progress: bool = True
    # GANs only: augment what the discriminator sees (real and fake), for training on little data.
    augment: str = "none"  # none | diffaugment (Zhao et al. 2020) | ada (Karras et al. 2020)
    augment_policy: str | None = None  # comma-separated ops; None: the mode's default (see atelier.augment)
    ada_target: float = 0.6  # ADA: the r_t = E[sign(D(real))] that p is steered to
    ada_kimg: float = 100.0  # ADA: thousands of real images for p to go from 0 to 1 (the paper: 500)
    ada_interval: int = 4  # ADA: steps between adjustments of p

    DEFAULT_EPOCHS = 5

    @classmethod
    def for_family(cls, family: str, **overrides) -> "TrainConfig":
        """The defaults suited to a model family (the class defaults are the GAN's), then ``overrides``."""
        return cls(**{**FAMILY_DEFAULTS.get(family, {}), **overrides})

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        for name in ("batch_size", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")
        if self.eval_n < 10:
            raise ValueError(f"eval_n must be at least 10, got {self.eval_n}")
        for name in ("steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule in ("cosine", "linear") and self.steps is None and self.epochs is None \
                and self.minutes is not None:  # with none of the three the run lasts DEFAULT_EPOCHS
            raise ValueError(f"the {self.lr_schedule} schedule needs a known length: give steps or epochs "
                             "(minutes may cap it)")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        self._check_augment()
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def _check_augment(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if not -1.0 < self.ada_target < 1.0:
            raise ValueError(f"ada_target must lie in (-1, 1) (it is a mean of signs), got {self.ada_target}")
        if self.ada_kimg <= 0:
            raise ValueError(f"ada_kimg must be positive, got {self.ada_kimg}")
        if self.ada_interval < 1:
            raise ValueError(f"ada_interval must be at least 1, got {self.ada_interval}")
        if self.augment_policy is not None:
            if self.augment == "none":
                raise ValueError("augment_policy needs augment 'diffaugment' or 'ada'")
            from atelier.augment.ada import ADA_OPS
            from atelier.augment.diffaugment import DIFFAUGMENT_OPS, parse_policy

            parse_policy(self.augment_policy, DIFFAUGMENT_OPS if self.augment == "diffaugment" else ADA_OPS)


@lru_cache(maxsize=None)
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix work runs at about twice the fp32 rate. Without them PyTorch
    emulates bf16 on the CPU, which is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA devices and CPUs with native bf16, else ``fp32``.

    Measured on DCGAN training (BENCHMARKS.md): bf16 autocast nearly doubles images/s on a Zen 4 CPU
    with no loss of sample quality at the scales tested."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and _cpu_has_native_bf16() else "fp32"


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

