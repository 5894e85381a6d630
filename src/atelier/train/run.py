"""The training entry point behind ``atelier train``: data + model + step + trainer in one call."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from atelier.config import environment, from_dict, to_dict
from atelier.data import native_resolution
from atelier.data.base import DataError
from atelier.device import ensure_fits, format_bytes, resolve_device, resolve_precision
from atelier.io import load_json
from atelier.models.pretrained import latest_checkpoint
from atelier.models.registry import (
    SMALLER,
    Family,
    create_model,
    get_family,
    model_family,
    model_size,
    preset_setting,
)
from atelier.train.checkpoint import prepare_run_dir, resumable_checkpoint
from atelier.train.config import TrainConfig
from atelier.train.distributed import DistContext
from atelier.train.evaluation import check_evaluation
from atelier.train.init_from import (
    InitFromNote,
    carried_record,
    check_family,
    init_model,
    load_init_source,
    no_labels_hint,
    source_settings,
)
from atelier.train.trainer import Hook, Trainer, TrainResult


def saved_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The resolved configs of the checkpoint ``run_dir`` would resume from, or None if there is none."""
    try:
        ckpt = resumable_checkpoint(Path(run_dir))
    except FileNotFoundError:
        ckpt = latest_checkpoint(Path(run_dir))
    return load_json(ckpt / "config.json") if ckpt else None


def family_train_config(family: str, **overrides: Any) -> TrainConfig:
    """The training config of ``family`` (its own defaults), with ``overrides``."""
    return get_family(family).train_config(**overrides)


def as_family_config(cfg: Any, cls: type) -> Any:
    """``cfg`` as an instance of the family's config class ``cls``: a plain :class:`TrainConfig` (or any
    dataclass whose fields ``cls`` has) keeps every value it sets; the family's own fields take their
    defaults."""
    if isinstance(cfg, cls):
        return cfg
    values = to_dict(cfg)
    mine = {f.name for f in dataclasses.fields(cls)}
    foreign = {f.name: f for f in dataclasses.fields(cfg) if f.name not in mine}
    changed = [n for n, f in foreign.items() if f.default is dataclasses.MISSING or values[n] != f.default]
    if changed:
        raise ValueError(f"{', '.join(f'{n}={values[n]!r}' for n in changed)}: {type(cfg).__name__} settings that "
                         f"{cls.__name__} does not take; train without them")
    return from_dict(cls, {k: v for k, v in values.items() if k in mine})


def resolve_resolution(data: Any, model_name: str, model_kwargs: dict[str, Any], source: Any = None) -> Any:
    """``data`` with its resolution chosen when it is None: the model's (a ``resolution`` in
    ``model_kwargs``, else the ``init_from`` source's, else the one the preset is made for, e.g.
    ``flow-cifar``'s 32, else the default of the family's data config, e.g. the residual GAN's 32), else
    the dataset's own (32 for cifar10, 28 for digits, mnist and folders). A data config without the
    field (e.g. fast style's) is returned as it is."""
    if getattr(data, "resolution", 0) is not None:
        return data
    side = model_kwargs.get("resolution")
    if side is None and source is not None:
        side = source.config.get("resolution")
    if side is None:
        side = preset_setting(model_name, "resolution")
    if side is None:
        fields = {f.name: f.default for f in dataclasses.fields(get_family(model_family(model_name)).data_config)}
        side = fields.get("resolution")
    if side is None:
        side = native_resolution(data.name)
    return replace(data, resolution=int(side))


def resume_configs(run_dir: str | Path, train_overrides: dict[str, Any]) -> tuple[str, dict, Any, TrainConfig]:
    """(model name, model config, data config, train config) to continue ``run_dir``; the train
    config is the saved one with ``train_overrides`` applied (e.g. more steps)."""
    saved = saved_run_config(run_dir)
    if saved is None:
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no checkpoint found under {run_dir}/checkpoints)")
    family = get_family(saved["model"]["family"])
    # Runs saved before the family configs were split hold every family's training fields (a VAE run
    # has augment="none"): what this family's config does not have is dropped.
    known = {f.name for f in dataclasses.fields(family.train_config)}
    train = to_dict(from_dict(family.train_config, {k: v for k, v in saved["train"].items() if k in known}))
    train.update(train_overrides)
    if "steps" in train_overrides or "epochs" in train_overrides:  # one length setting replaces the other
        train["epochs" if "steps" in train_overrides else "steps"] = None
    model = saved["model"]
    return (model["name"], model["config"], from_dict(family.data_config, saved["data"]),
            from_dict(family.train_config, train))


def train_model(
    model_name: str,
    *,
    data: Any,
    train: TrainConfig,
    out: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    conditional: bool | None = None,
    resume: bool = False,
    hooks: list[Hook] | None = None,
    setup_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    init_from: Any = None,
    init_key: Any = None,
    init_force: bool = False,
) -> TrainResult:
    """Train ``model_name`` (a registry name of any family) on ``data`` into the run directory ``out``.

    ``data`` and ``train`` are the family's config dataclasses (a plain :class:`TrainConfig` is taken
    as the family's, its own fields at their defaults). The model's data-given settings (resolution,
    channels) follow the data (a data resolution left at None is chosen by :func:`resolve_resolution`);
    ``conditional`` gives it one class per dataset label. With ``resume`` training continues from the
    newest checkpoint of ``out``; the model is rebuilt from ``model_kwargs`` (see :func:`resume_run` for
    continuing from the saved configs alone). A new run into a directory that is not empty is refused unless ``overwrite`` (which deletes the old run's files first); a
    run stopped by SIGINT/SIGTERM saves a checkpoint and says so in ``result.interrupted``. ``setup_options`` go to the
    family step's ``setup_run`` (e.g. ``features=`` for fast style: a ready feature network).

    ``init_from`` starts the run from a saved model of the same family instead of a fresh initialisation
    (transfer, fine-tuning): a run, checkpoint or model directory, an encrypted model opened with
    ``init_key`` (an :class:`atelier.protect.envelope.Key`), or a model object. Every tensor whose name and
    shape match is copied (EMA copies included); the others stay fresh and are named in an
    :class:`~atelier.train.init_from.InitFromNote` warning and in the run's config, with the source's
    weights' SHA-256. Less than half of the parameters fitting is refused unless ``init_force``. The model's
    settings default to the source's (``model_kwargs`` override them; the data decides resolution, channels
    and classes), and ``conditional`` (None) to whether the source is. The optimisers start fresh at step 0.
    With ``resume`` the run continues from its own checkpoint (the source is not read again).
    """
    family: Family = get_family(model_family(model_name))
    train = as_family_config(train, family.train_config)
    dist = DistContext.from_env()
    source, inherited = None, False
    saved = saved_run_config(out) if resume else None
    if init_from is not None and not resume:
        # read before the run directory is touched: the source may be the run that --overwrite replaces
        source = load_init_source(init_from, init_key)
        check_family(source, family, model_name)
        model_kwargs = {**source_settings(source, family), **(model_kwargs or {})}
        if conditional is None:
            conditional, inherited = source.conditional, source.conditional
    elif init_from is not None and saved is not None:  # resuming a transfer run: its own architecture
        model_kwargs = {**saved["model"]["config"], **(model_kwargs or {})}
    data = as_family_config(resolve_resolution(data, model_name, model_kwargs or {}, source), family.data_config)
    if dist.is_main:  # refuse a directory holding a run early; clearing it (overwrite) waits for the checks
        prepare_run_dir(Path(out), resume=resume, overwrite=overwrite, clear=False)
    device = resolve_device(train.device, dist.local_rank)
    train = replace(train, precision=resolve_precision(train.precision, device))  # record what ran
    step_cls = family.step_class
    check_evaluation(data, train)  # eval_every on data no extractor can mean anything for: refused before any work
    try:
        setup = step_cls.setup_run(data, train, dict(model_kwargs or {}), conditional=bool(conditional), dist=dist,
                                   device=device, **(setup_options or {}))
    except DataError as exc:
        if inherited and "labels" in str(exc):
            raise no_labels_hint(exc, source) from None
        raise
    count, nbytes = model_size(model_name, **setup.model_kwargs)
    # the weights, their gradients, Adam's two moments and the averaged copy: a floor (activations come on top)
    ensure_fits(5 * nbytes, f"training {model_name!r} ({count:,} parameters, {format_bytes(nbytes)} of weights, kept "
                f"with their gradients, Adam's two moments and an averaged copy)", device=device, advice=SMALLER)
    torch.manual_seed(train.seed)  # the model's initial weights depend on the seed alone
    model = create_model(model_name, **setup.model_kwargs)
    init_record = carried_record(saved)
    if source is not None:  # before the step is built: it moves the model and makes the optimisers
        report = init_model(model, source, force=init_force)
        init_record = report.record()
        if dist.is_main:
            warnings.warn(InitFromNote(report.describe()), stacklevel=2)
    if dist.is_main:
        prepare_run_dir(Path(out), resume=resume, overwrite=overwrite)
    dist.barrier()  # rank 0 has checked (and, to overwrite, cleared) the run directory before anyone writes
    step_fn = step_cls(model, train, device, dist, **setup.step_kwargs)
    run_config = {
        "model": {"name": model_name, **model.model_config_dict()},
        "train": to_dict(train),
        "data": to_dict(data),
        "dataset": setup.dataset_info,
        **setup.provenance,
        **({"init_from": init_record} if init_record else {}),
        "environment": environment(),
    }
    hooks = [*(hooks or []), *step_cls.hooks(data, train, setup)]
    trainer = Trainer(step_fn, setup.dataset, train, out, run_config=run_config, device=device, dist=dist,
                      hooks=hooks, sampler=setup.sampler)
    result = trainer.fit(resume=resume)
    result.init_from = init_record
    if dist.is_main and not result.interrupted:
        result.metrics = step_fn.finish(Path(out), data, train)
    return result


def resume_run(run_dir: str | Path, train_overrides: dict[str, Any] | None = None, *,
               hooks: list[Hook] | None = None, setup_options: dict[str, Any] | None = None) -> TrainResult:
    """Continue the run in ``run_dir`` (any family) from its newest checkpoint; ``train_overrides``
    (e.g. ``{"steps": 2000}``) change the saved training config."""
    name, model_cfg, data, train = resume_configs(run_dir, train_overrides or {})
    return train_model(name, data=data, train=train, out=run_dir, model_kwargs=model_cfg, resume=True, hooks=hooks,
                       setup_options=setup_options)


def describe(result: TrainResult) -> str:
    text = (f"{result.steps} steps in {result.seconds:.1f} s ({result.images_per_second:.1f} images/s); "
            f"checkpoint: {result.checkpoint}")
    if "test_neg_elbo_nats" in result.metrics:
        m = result.metrics
        text += f"\n{m['split']} negative ELBO {m['test_neg_elbo_nats']:.2f} nats/image"
        if "test_neg_elbo_bpd" in m:
            text += f" ({m['test_neg_elbo_bpd']:.3f} bits/dim)"
        if "test_iw_nll_nats" in m:
            text += f", importance-weighted NLL {m['test_iw_nll_nats']:.2f} (k={m['iw_k']}, {m['iw_n']} images)"
            if "test_iw_nll_bpd" in m:
                text += f" = {m['test_iw_nll_bpd']:.3f} bits/dim"
    if result.evaluations:
        last = result.evaluations[-1]
        text += (f"\nFID {last['fid']:.4g} at the last evaluation (step {last['step']}); best {last['best_fid']:.4g} "
                 f"at step {last['best_step']}: {result.run_dir / 'checkpoints' / 'best'}")
    return text


