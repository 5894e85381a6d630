"""Evaluation during training: every K steps, sample the model, measure FID (and KID) against the
real data, log both, and keep the best checkpoint by FID beside the latest one.

GAN training rarely improves monotonically; stopping at the last step can lose most of the quality
reached earlier (REFERENCES.md: DCGAN on CIFAR-10 FID 48 at the best step, 137 at the end), so the
best checkpoint is what ``atelier sample RUN/checkpoints/best`` should use.

:func:`check_evaluation` is called before a run does any work: data whose features cannot mean anything
(an unlabelled image folder with no fitted extractor and no InceptionV3 weights at hand) is refused
then, not after ``eval_every`` steps of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from atelier.io import atomic_write_json

BEST = "best"


def check_evaluation(data: Any, train: Any) -> str | None:
    """The extractor that evaluation during training (``train.eval_every``) will use on ``data`` (a
    :class:`~atelier.train.DataConfig`), chosen now as :class:`atelier.metrics.Evaluator` will choose it;
    None when the run does not evaluate. Raises the metrics code's DataError (which names both ways out:
    fitting an extractor on the folder's classes, or supplying InceptionV3 weights) when no extractor
    can mean anything for the data. Cheap: no image is decoded and no network is loaded or fitted."""
    name = getattr(data, "name", None)
    if not getattr(train, "eval_every", None) or not isinstance(name, str):
        return None
    from atelier.data import DataError
    from atelier.data.base import Message
    from atelier.metrics.extractors import choose_extractor

    try:
        return choose_extractor(name, data_dir=getattr(data, "data_dir", None),
                                resolution=getattr(data, "resolution", None))
    except DataError as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise DataError(Message(f"cannot evaluate during training (every {train.eval_every} steps), so nothing was "
                                "trained: ", message, " Or train without evaluation (leave out --eval-every / "
                                "eval_every).")) from None


class EvalHook:
    """A trainer hook: ``hook(trainer, step)`` after every step; it acts every ``every`` steps and
    once more at the end (``on_end``). ``make_evaluator`` builds an
    :class:`atelier.metrics.Evaluator` on first use, so runs that never reach step K pay nothing."""

    def __init__(self, make_evaluator: Callable[[], object], *, every: int, n: int = 2000, seed: int = 0,
                 metric: str = "fid") -> None:
        if every < 1:
            raise ValueError(f"eval_every must be at least 1, got {every}")
        self.make_evaluator, self.every, self.n, self.seed, self.metric = make_evaluator, every, n, seed, metric
        self._evaluator = None
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_step: int | None = None

    def __call__(self, trainer, step: int) -> dict | None:
        return self.run(trainer) if step % self.every == 0 else None

    def on_end(self, trainer) -> dict | None:
        return self.run(trainer) if trainer.step != self.last_step and trainer.step > 0 else None

    def _load_best(self, trainer) -> None:
        path = trainer.checkpoints_dir / f"{BEST}.json"
        if self.best is None and path.is_file():  # resuming: the best so far survives the restart
            saved = json.loads(path.read_text())
            if saved.get("metric") == self.metric and saved.get("step", 0) <= trainer.step:
                self.best, self.best_step = float(saved["value"]), int(saved["step"])

    def run(self, trainer) -> dict | None:
        self.last_step = trainer.step
        if not trainer.dist.is_main:
            return None
        from atelier.models.sampling import sample_images

        if self._evaluator is None:
            self._evaluator = self.make_evaluator()
            self._load_best(trainer)
        model = trainer.step_fn.model
        with torch.no_grad():
            images = sample_images(model, self.n, seed=self.seed).images.cpu()
        result = self._evaluator.evaluate(images, metrics=("fid", "kid"), source=f"step {trainer.step}")
        value = float(result.metrics[self.metric])
        improved = self.best is None or value < self.best
        if improved:
            self.best, self.best_step = value, trainer.step
            path = trainer.save_named_checkpoint(BEST)
            p = result.provenance
            atomic_write_json(Path(path).parent / f"{BEST}.json", {
                "step": trainer.step, "metric": self.metric, "value": value, "kid_mean": result.metrics["kid_mean"],
                "n_fake": p["n_fake"], "n_real": p["n_real"], "extractor": p["extractor"],
                "extractor_sha256": p["extractor_sha256"], "dataset": p["dataset"], "split": p["split"]})
        return {self.metric: value, "kid_mean": float(result.metrics["kid_mean"]), f"best_{self.metric}": self.best,
                "best_step": self.best_step}
