"""One model-agnostic training loop: progress, logging, sample grids, checkpoints, resume, NaN guard.

The family-specific update lives in a step object (:mod:`atelier.train.steps`); this loop only feeds
it batches and keeps the books. Only rank 0 writes files, so the loop runs unchanged under torchrun.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from atelier.data import ImageDataset
from atelier.report.grid import save_grid
from atelier.report.plots import plot_curves
from atelier.train.batches import BatchSampler
from atelier.io import atomic_write_bytes, atomic_write_json, load_tensors
from atelier.models.pretrained import latest_checkpoint
from atelier.train.checkpoint import (
    load_train_state,
    prune_checkpoints,
    resumable_checkpoint,
    save_checkpoint,
    set_latest,
)
from atelier.train.config import TrainConfig, lr_factor
from atelier.train.distributed import DistContext
from atelier.signals import StopRequest, stop_on_signals
from atelier.train.steps.base import TrainStep

#: Called after every step as ``hook(trainer, step)``; a returned dict is logged as an evaluation
#: record (eval.jsonl, TensorBoard ``eval/``). A hook may also have ``on_end(trainer)``.
Hook = Callable[["Trainer", int], "dict[str, float] | None"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    images_per_second: float
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # from evaluation hooks (e.g. FID)
    metrics: dict[str, Any] = field(default_factory=dict)  # end-of-run metrics (a VAE's test ELBO)
    interrupted: str | None = None  # the signal that stopped the run early ("SIGTERM", "SIGINT"), if one did
    init_from: dict[str, Any] | None = None  # the saved model the run started from (see train_model's init_from)

    @property
    def exit_code(self) -> int:
        """0 for a run that ended as planned; 128 + the signal's number for one a signal stopped."""
        return 128 + signal.Signals[self.interrupted].value if self.interrupted else 0


class Trainer:
    def __init__(
        self,
        step_fn: TrainStep,
        dataset: ImageDataset,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        run_config: dict[str, Any],
        device: torch.device,
        dist: DistContext | None = None,
        hooks: list[Hook] | None = None,
        sampler: Callable[[int], Any] | None = None,
    ) -> None:
        """``sampler``: the batch at each step, if not a :class:`BatchSampler` over ``dataset`` (e.g. the
        unpaired two-domain batches of :mod:`atelier.train.unpaired`); it needs ``steps_per_epoch``
        and ``epoch_of(step)`` too."""
        self.step_fn, self.dataset, self.cfg = step_fn, dataset, cfg
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.device = device
        self.dist = dist or DistContext()
        self.hooks = hooks or []
        self.sampler = sampler or BatchSampler(dataset, cfg.batch_size, cfg.seed, device=device, rank=self.dist.rank,
                                               world_size=self.dist.world_size, channels_last=cfg.channels_last)
        self.step = 0
        self.elapsed = 0.0  # training seconds of earlier sessions of this run
        self._session_start = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self._writer = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def history_path(self) -> Path:
        return self.run_dir / "history.jsonl"

    @property
    def eval_path(self) -> Path:
        return self.run_dir / "eval.jsonl"

    # -- the loop ----------------------------------------------------------------------------
    def total_steps(self) -> int | None:
        cfg, spe = self.cfg, self.sampler.steps_per_epoch
        if cfg.steps is not None:
            return cfg.steps
        if cfg.epochs is not None:
            return max(1, math.ceil(cfg.epochs * spe))
        if cfg.minutes is not None:
            return None
        default_steps = getattr(cfg, "DEFAULT_STEPS", None)  # a family may set its default length in steps
        return default_steps if default_steps else cfg.DEFAULT_EPOCHS * spe

    def fit(self, *, resume: bool = False) -> TrainResult:
        torch.manual_seed(self.cfg.seed)
        if resume:
            self.restore()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", self.run_config)
        total, cfg = self.total_steps(), self.cfg
        per_step = cfg.batch_size * self.dist.world_size
        bar = tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (cfg.progress and self.dist.is_main), desc=f"train {self.run_dir.name}")
        # One clock and one instant for both the budget and the reported seconds, so a run stopped by
        # --minutes never reports less time than its budget.
        self._session_start, start_step = time.perf_counter(), self.step
        deadline = self._session_start + cfg.minutes * 60 if cfg.minutes is not None else None
        self._last_saved = self.step if resume else -1
        stop = self._stop = StopRequest()
        try:
            with stop_on_signals() as stop:
                self._stop = stop
                self._loop(total, deadline, per_step, bar)
        except BaseException:  # incl. a second Ctrl-C: out at once, mid-step, so no checkpoint of this state
            if self._writer is not None:  # keep what was logged up to the failure
                self._writer.close()
            raise
        finally:
            bar.close()
        if stop.signum is not None and self.dist.is_main:
            print(f"stopped by {stop.name} at step {self.step}: saving a checkpoint so --resume can continue",
                  file=sys.stderr)
        seconds = time.perf_counter() - self._session_start
        for hook in self.hooks if stop.signum is None else []:  # an interrupted run ends promptly
            if hasattr(hook, "on_end"):
                self._log_eval(hook.on_end(self), None)
        if self.step != self._last_saved:
            self.save_checkpoint()
        self.elapsed += seconds
        self.save_samples()
        if self.dist.is_main:
            plot_curves(self.history, self.run_dir / "loss_curve.png", title=f"{self.run_dir.name}")
            curves = [{k: v for k, v in e.items() if k in ("step", "fid", "best_fid")} for e in self.evaluations]
            if any("fid" in c for c in curves):
                plot_curves(curves, self.run_dir / "eval_curve.png", title=f"{self.run_dir.name}: evaluation")
        if self._writer is not None:
            self._writer.close()
        done = self.step - start_step
        ckpt = latest_checkpoint(self.run_dir)
        return TrainResult(self.run_dir, self.step, seconds, done * per_step / max(seconds, 1e-9), ckpt, self.history,
                           self.evaluations, interrupted=stop.name)

    def _loop(self, total: int | None, deadline: float | None, per_step: int, bar) -> None:
        """Steps until the length, the deadline or a stop signal (looked at between steps only)."""
        cfg = self.cfg
        window: dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        while (total is None or self.step < total) and (deadline is None or time.perf_counter() < deadline):
            self._set_lr(total)
            logs = self.step_fn.train_step(self.sampler(self.step), self.step)
            self.dist.average_buffers(self.step_fn.model)
            values = {k: float(v) for k, v in logs.items()}
            self._check_finite(values)
            self.step += 1
            bar.update(1)
            for k, v in values.items():
                window[k] = window.get(k, 0.0) + v
            window_steps += 1
            if self.step % cfg.log_every == 0 or self.step == total:
                now = time.perf_counter()
                record = {k: v / window_steps for k, v in window.items()}
                record["images_per_second"] = window_steps * per_step / max(now - window_start, 1e-9)
                self._log(record, bar)
                window, window_steps, window_start = {}, 0, time.perf_counter()
            for hook in self.hooks:
                self._log_eval(hook(self, self.step), bar)
            if self.step % cfg.sample_every == 0:
                self.save_samples()
            if self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
                self._last_saved = self.step
            if self._stop_requested():
                break

    def _stop_requested(self) -> bool:
        """Whether a signal asked to stop; under DDP, whether any rank got one (all stop at one step)."""
        flag = self._stop.signum is not None
        if self.dist.enabled:
            import torch.distributed

            t = torch.tensor([float(self._stop.signum or 0)])
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            if t.item() and self._stop.signum is None:
                self._stop.signum = int(t.item())
            flag = bool(t.item())
        return flag

    # -- bookkeeping -------------------------------------------------------------------------
    def _set_lr(self, total: int | None) -> None:
        """Scale every optimiser's base learning rate by the schedule's factor for this step."""
        if self.cfg.lr_schedule == "constant" and not self.cfg.warmup_steps:
            return
        factor = lr_factor(self.step, total, self.cfg.lr_schedule, self.cfg.warmup_steps)
        for opt in self.step_fn.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])
                group["lr"] = group["base_lr"] * factor

    def _check_finite(self, values: dict[str, float]) -> None:
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            ckpt = latest_checkpoint(self.run_dir)
            kept = f"the last good checkpoint is kept at {ckpt}" if ckpt else "no checkpoint had been written yet"
            detail = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: {detail}; {kept}. "
                "Try a lower learning rate (lr), precision 'fp32', or resuming from the checkpoint with another seed."
            )

    def _log_eval(self, values: dict[str, float] | None, bar) -> None:
        """Record one evaluation (from a hook) in eval.jsonl, TensorBoard and on the console."""
        if not values:
            return
        record = {"step": self.step, "epoch": round(self.sampler.epoch_of(self.step), 4), **values}
        self.evaluations.append(record)
        if not self.dist.is_main:
            return
        line = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        (bar.write if bar is not None else print)(f"eval at step {self.step}: {line}")
        with open(self.eval_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        writer = self.writer()
        if writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v is not None:
                    writer.add_scalar(f"eval/{k}", v, self.step)

    def _log(self, record: dict[str, float], bar) -> None:
        record = {"step": self.step, "epoch": round(self.sampler.epoch_of(self.step), 4), **record}
        self.history.append(record)
        postfix = {k: f"{v:.3g}" for k, v in record.items() if k not in ("step", "epoch", "images_per_second")}
        postfix["img/s"] = f"{record['images_per_second']:.0f}"
        bar.set_postfix(postfix, refresh=False)
        if not self.dist.is_main:
            return
        with open(self.history_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        writer = self.writer()
        if writer is not None:
            for k, v in record.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, self.step)

    def writer(self):
        """TensorBoard writer, created on first use (importing TensorBoard takes a moment)."""
        if self._writer is None and self.cfg.tensorboard and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1 if self.step else None)
        return self._writer

    def save_samples(self) -> Path | None:
        if not self.dist.is_main or not hasattr(self.step_fn, "preview"):
            return None
        images = self.step_fn.preview(self.step_fn.preview_count(), self.cfg.seed + 12345)
        path = save_grid(images, self.run_dir / "samples" / f"step_{self.step:07d}.png",
                         nrow=self.step_fn.preview_layout())
        atomic_write_bytes(self.run_dir / "samples" / "latest.png", path.read_bytes())
        writer = self.writer()
        if writer is not None:
            from atelier.report.grid import make_grid

            writer.add_image("samples", make_grid(images, nrow=self.step_fn.preview_layout()), self.step)
        return path

    # -- checkpoints -------------------------------------------------------------------------
    def train_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "elapsed_seconds": self.elapsed + time.perf_counter() - self._session_start,
            "optimizers": {name: opt.state_dict() for name, opt in self.step_fn.optimizers.items()},
            "step_state": self.step_fn.state_dict(),
            "rng": rng,
        }

    def save_checkpoint(self) -> Path | None:
        if not self.dist.is_main:
            self.dist.barrier()
            return None
        name = f"step_{self.step:07d}"
        path = save_checkpoint(self.checkpoints_dir / name, model_state=self.step_fn.model.state_dict(),
                               train_state=self.train_state(), config=self.run_config)
        set_latest(self.checkpoints_dir, name)
        prune_checkpoints(self.checkpoints_dir, self.cfg.keep_checkpoints, protect={name})
        self.dist.barrier()
        return path

    def save_named_checkpoint(self, name: str) -> Path | None:
        """A complete checkpoint under ``checkpoints/<name>`` (e.g. "best"), replaced atomically;
        never pruned and never the resume point."""
        if not self.dist.is_main:
            return None
        return save_checkpoint(self.checkpoints_dir / name, model_state=self.step_fn.model.state_dict(),
                               train_state=self.train_state(), config=self.run_config)

    def restore(self, path: Path | None = None) -> int:
        """Load model, optimisers, step state and RNG from ``path`` (default: the newest checkpoint)."""
        path = path or resumable_checkpoint(self.run_dir)
        self.step_fn.model.load_state_dict(load_tensors(path / "model.safetensors"))
        state = load_train_state(path)
        for name, opt in self.step_fn.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            _match_param_layouts(opt)
        self.step_fn.load_state_dict(state["step_state"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))
        # Steps after the checkpoint will be replayed: drop their log lines.
        self.history = self._truncate_log(self.history_path)
        self.evaluations = self._truncate_log(self.eval_path)
        return self.step

    def _truncate_log(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        kept = [h for h in lines if h["step"] <= self.step]
        if self.dist.is_main:
            atomic_write_bytes(path, "".join(json.dumps(h) + "\n" for h in kept).encode())
        return kept


@torch.no_grad()
def _match_param_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Checkpoints store tensors contiguous; a channels-last parameter would then get row-major moments,
    and the fused Adam kernel, which walks parameter and moments in the same memory order, would pair
    the wrong elements. (Found by the fast-style resume test: its network is channels-last.)"""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
