"""Reflow (Liu et al. 2022, "Flow straight and fast"): make a trained flow model usable in one or two steps.

A trained flow's paths from noise to data curve, so a solver with few steps misses them. Reflow draws
pairs (noise z, image x) from the trained model (the teacher, solved with many steps) and fine-tunes a
copy of it (the student) on the straight lines between each pair: x_t = (1 - t) x + t z, target
velocity z - x. The pairs are coupled by the teacher, not drawn independently, so these lines cross far
less than those of the original training, and the student's flow is nearly straight: one Euler step
from z lands near x.

For a conditional teacher the pairs are drawn at the teacher's guidance ``w`` and the student learns the
guided flow with its label always given: sample the student at guidance 1 (its default after reflow).

Written here rather than taken from a library: the flow-matching libraries in reach (torchcfm, diffusers)
either do not do reflow or need their own model classes; this is one loop over Atelier's own model.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Annotated, Callable, Literal

import annotated_types as at
import torch
from tqdm.auto import tqdm

from atelier.config import Config, Seed
from atelier.device import autocast, ensure_fits, resolve_precision
from atelier.models.ema import ema_decay_at, ema_update
from atelier.models.flow import FlowModel, Sampler
from atelier.objectives.flow import flow_matching_loss
from atelier.schedulers import flow_interpolant
from atelier.train.trainer import TrainingDiverged


@dataclass
class ReflowConfig(Config):
    pairs: Annotated[int, at.Interval(ge=1, le=10**7)] = 10000  # (noise, image) pairs drawn from the teacher
    teacher_steps: Annotated[int, at.Interval(ge=1, le=1000)] = 16  # solver steps per teacher sample
    teacher_sampler: Sampler = "dpm++2m"
    guidance: Annotated[float, at.Interval(ge=0.0, le=100.0)] = 1.0  # conditional teachers: guidance of the pairs
    steps: Annotated[int, at.Interval(ge=1, le=10**7)] = 2000  # student optimisation steps
    minutes: Annotated[float, at.Interval(gt=0, le=10**7)] | None = None  # wall-clock cap on the fine-tuning
    batch_size: Annotated[int, at.Interval(ge=1, le=2**16)] = 128
    lr: Annotated[float, at.Interval(gt=0.0, le=1.0)] = 2e-4
    ema_decay: Annotated[float, at.Interval(ge=0.0, lt=1.0)] = 0.999
    grad_clip: Annotated[float, at.Interval(ge=0.0)] = 1.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # the network's arithmetic (teacher and student)
    student_sampler: Sampler = "euler"  # the student's default sampler
    student_steps: Annotated[int, at.Interval(ge=1, le=1000)] = 2  # ... and steps
    seed: Seed = 0


@dataclass
class ReflowResult:
    student: FlowModel
    history: list[dict]  # every 50 steps: step, loss
    pair_seconds: float
    train_seconds: float
    steps: int  # optimisation steps taken (fewer than asked when minutes ran out)


@torch.no_grad()
def draw_pairs(teacher: FlowModel, cfg: ReflowConfig, *, progress: bool = True, batch_size: int = 500,
               precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``cfg.pairs`` (noise, image, label) triples from the teacher's EMA network: noise (N, C, R, R),
    images in [-1, 1] (not clamped: the student learns the teacher's flow, not a clipped one), labels
    cycling over the classes (None for an unconditional teacher). ``precision``: the teacher's arithmetic
    (None: its config's ``sample_precision``)."""
    c, r = teacher.config.channels, teacher.config.resolution
    g = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.pairs, c, r, r, generator=g)
    labels = teacher.default_labels(cfg.pairs)
    guidance = cfg.guidance if teacher.conditional else None
    images = []
    for i in tqdm(range(0, cfg.pairs, batch_size), desc="reflow pairs", unit="batch", disable=not progress,
                  dynamic_ncols=True):
        lab = labels[i:i + batch_size] if labels is not None else None
        images.append(teacher.generate(noise[i:i + batch_size], lab, steps=cfg.teacher_steps,
                                       sampler=cfg.teacher_sampler, guidance=guidance, batch_size=batch_size,
                                       precision=precision, clamp=False))
    return noise, torch.cat(images), labels


def reflow(teacher: FlowModel, cfg: ReflowConfig | None = None, *, progress: bool = True,
           should_stop: Callable[[], bool] | None = None) -> ReflowResult:
    """One reflow round: pairs from ``teacher``, then a student (a copy of it) fine-tuned on the straight
    lines between them. The teacher is not changed. TrainingDiverged when the loss turns NaN/inf (nothing
    is written: the caller saves the student)."""
    cfg = cfg or ReflowConfig()
    if teacher.config.objective != "flow":
        raise ValueError("reflow straightens a flow model's paths; this model is the ddpm peer (objective='ddpm')")
    device = next(teacher.net_ema.parameters()).device
    c, r = teacher.config.channels, teacher.config.resolution
    ensure_fits(2 * cfg.pairs * c * r * r * 4, f"{cfg.pairs:,} reflow pairs (noise and image, float32)",
                advice="draw fewer pairs (--pairs)")
    precision = resolve_precision(cfg.precision, device)
    teacher.eval()
    t0 = time.perf_counter()
    noise, images, labels = draw_pairs(teacher, cfg, progress=progress, precision=precision)
    pair_seconds = time.perf_counter() - t0

    student = copy.deepcopy(teacher)
    student.config = replace(teacher.config, sampler=cfg.student_sampler, sample_steps=cfg.student_steps,
                             guidance=1.0)
    student.net.load_state_dict(teacher.net_ema.state_dict())  # start from the weights that sample well
    student.net_ema.load_state_dict(teacher.net_ema.state_dict())
    student.net.train()
    opt = torch.optim.Adam(student.net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    n = noise.shape[0]
    history: list[dict] = []
    t1 = time.perf_counter()
    deadline = t1 + cfg.minutes * 60 if cfg.minutes else math.inf
    running, seen, step = 0.0, 0, 0
    bar = tqdm(total=cfg.steps, desc="reflow", unit="step", disable=not progress, dynamic_ncols=True)
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=g)
        z, x = noise[idx].to(device), images[idx].to(device)
        lab = labels[idx].to(device) if labels is not None else None
        t = torch.rand(idx.shape[0], generator=g).to(device)
        with autocast(precision, device):
            pred = student.net(flow_interpolant(x, z, t), t, lab)
        loss = flow_matching_loss(pred, x, z).mean()
        if not torch.isfinite(loss):
            bar.close()
            raise TrainingDiverged(f"reflow: the loss became {loss.item()} at step {step}; try a lower lr "
                                     f"(now {cfg.lr}) or precision 'fp32'")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.net.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(student.net_ema, student.net, ema_decay_at(step, cfg.ema_decay))
        running, seen = running + loss.item(), seen + 1
        if step % 50 == 0:
            history.append({"step": step, "loss": running / seen})
            bar.set_postfix(loss=f"{running / seen:.4f}")
            running, seen = 0.0, 0
        bar.update(1)
        if time.perf_counter() > deadline or (should_stop is not None and should_stop()):
            break
    bar.close()
    student.net.eval()
    return ReflowResult(student, history, pair_seconds, time.perf_counter() - t1, step)
