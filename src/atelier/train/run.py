"""The training entry point behind ``atelier train``: data + model + step + trainer in one call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from atelier.config import environment, from_dict, load_json, to_dict
from atelier.data import DataError, load_dataset
from atelier.registry import create_model
from atelier.train.checkpoint import latest_checkpoint
from atelier.train.config import DataConfig, TrainConfig, resolve_precision
from atelier.train.distributed import DistContext, resolve_device
from atelier.train.evaluation import EvalHook
from atelier.train.steps import FAMILY_STEPS
from atelier.train.trainer import Hook, Trainer, TrainResult


def saved_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The resolved configs of the newest checkpoint of ``run_dir``, or None if there is none."""
    ckpt = latest_checkpoint(Path(run_dir))
    return load_json(ckpt / "config.json") if ckpt else None


def resume_configs(run_dir: str | Path, train_overrides: dict[str, Any], *,
                   data_class: type = DataConfig) -> tuple[str, dict, Any, TrainConfig]:
    """(model name, model config, data config, train config) to continue ``run_dir``; the train
    config is the saved one with ``train_overrides`` applied (e.g. more steps). ``data_class``: the
    data config's type (:class:`DataConfig`, or e.g. the two-domain config of translation runs)."""
    saved = saved_run_config(run_dir)
    if saved is None:
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no checkpoint found under {run_dir}/checkpoints)")
    train = to_dict(from_dict(TrainConfig, saved["train"]))
    train.update(train_overrides)
    if "steps" in train_overrides or "epochs" in train_overrides:  # one length setting replaces the other
        train["epochs" if "steps" in train_overrides else "steps"] = None
    model = saved["model"]
    return model["name"], model["config"], from_dict(data_class, saved["data"]), from_dict(TrainConfig, train)


def train_model(
    model_name: str,
    *,
    data: DataConfig,
    train: TrainConfig,
    out: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    conditional: bool = False,
    resume: bool = False,
    hooks: list[Hook] | None = None,
) -> TrainResult:
    """Train ``model_name`` (a registry name) on ``data`` into the run directory ``out``.

    The model's resolution and channels follow the data; ``conditional`` gives it one class per
    dataset label. With ``resume`` the model is rebuilt from the saved config and training continues
    from the newest checkpoint.
    """
    dist = DistContext.from_env()
    device = resolve_device(train.device, dist)
    train = replace(train, precision=resolve_precision(train.precision, device))  # record what ran
    dataset = load_dataset(data.name, resolution=data.resolution, split=data.split, data_dir=data.data_dir,
                           channels=data.channels, strict=data.strict, verify=data.verify,
                           progress=train.progress and dist.is_main)
    kwargs = dict(model_kwargs or {})
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
    torch.manual_seed(train.seed)  # the model's initial weights depend on the seed alone
    model = create_model(model_name, **kwargs)
    step_cls = FAMILY_STEPS[model.family]
    step_fn = step_cls(model, train, device, dist)
    run_config = {
        "model": {"name": model_name, **model.model_config_dict()},
        "train": to_dict(train),
        "data": to_dict(data),
        "dataset": {"name": dataset.name, "size": len(dataset), "classes": dataset.classes},
        "environment": environment(),
    }
    hooks = list(hooks or [])
    if train.eval_every:
        hooks.append(eval_hook(data, train, dataset.channels))
    trainer = Trainer(step_fn, dataset, train, out, run_config=run_config, device=device, dist=dist, hooks=hooks)
    result = trainer.fit(resume=resume)
    if model.family == "vae" and dist.is_main:
        result.metrics = vae_test_metrics(model, data, train, Path(out))
    return result


def vae_test_metrics(model, data: DataConfig, train: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The negative ELBO (and importance-weighted NLL) on the test split, else the training data;
    written to ``run_dir/metrics.json``."""
    from atelier.metrics.likelihood import vae_likelihood
    from atelier.train.checkpoint import atomic_write_json

    split = "test"
    try:
        held_out = load_dataset(data.name, resolution=data.resolution, split="test", data_dir=data.data_dir,
                                channels=data.channels, verify=data.verify, progress=False)
    except DataError:  # a folder without train/ and test/: score the training images, and say so
        split = data.split
        held_out = load_dataset(data.name, resolution=data.resolution, split=split, data_dir=data.data_dir,
                                channels=data.channels, verify=data.verify, progress=False)
    metrics = vae_likelihood(model, held_out.images, held_out.labels, iw_k=train.iw_samples, iw_n=train.iw_images,
                             seed=train.seed, progress=train.progress)
    metrics = {**metrics, "split": split, "dataset": held_out.name}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def eval_hook(data: DataConfig, train: TrainConfig, channels: int) -> EvalHook:
    """FID/KID every ``train.eval_every`` steps against ``train.eval_split`` of the training data."""

    def make_evaluator():
        from atelier.metrics import EvalConfig, Evaluator

        cfg = EvalConfig(data=data.name, data_dir=data.data_dir, split=train.eval_split, n=train.eval_n,
                         seed=train.seed, metrics=("fid", "kid"))
        return Evaluator(cfg, resolution=data.resolution, channels=channels, progress=False)

    return EvalHook(make_evaluator, every=train.eval_every, n=train.eval_n, seed=train.seed)


def describe(result: TrainResult) -> str:
    text = (f"{result.steps} steps in {result.seconds:.1f} s ({result.images_per_second:.1f} images/s); "
            f"checkpoint: {result.checkpoint}")
    if "test_neg_elbo_nats" in result.metrics:
        m = result.metrics
        text += f"\n{m['split']} negative ELBO {m['test_neg_elbo_nats']:.2f} nats/image"
        if "test_iw_nll_nats" in m:
            text += f", importance-weighted NLL {m['test_iw_nll_nats']:.2f} (k={m['iw_k']}, {m['iw_n']} images)"
    if result.evaluations:
        last = result.evaluations[-1]
        text += (f"\nFID {last['fid']:.4g} at the last evaluation (step {last['step']}); best {last['best_fid']:.4g} "
                 f"at step {last['best_step']}: {result.run_dir / 'checkpoints' / 'best'}")
    return text


