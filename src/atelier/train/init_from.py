"""Transfer: a run that starts from a saved model's weights instead of a fresh initialisation.

``train_model(..., init_from=MODEL)`` (``atelier train <family> --init-from MODEL``) reads a saved model of
the run's family (a run, checkpoint or model directory, an encrypted model opened with its key, or a model
object) and copies every tensor whose name and shape match into the new model. The averaged (EMA) copies
are tensors of the model like any other, so they start from the saved averages. What does not fit keeps
its fresh initialisation and is named: a new class count changes only the label embeddings (and, for a
VAE, the layers the one-hot labels enter), so those start afresh and the rest is transferred. A different
width or preset changes nearly every shape: a run that would take less than half of its parameters from
the source is refused unless forced, since that is almost always the wrong model.

The architecture of the new run defaults to the source's (what the data decides, such as the class count,
comes from the new data); the optimisers start fresh at step 0, since this is a new run, not a resumed one.
What was loaded is recorded in the run's config (the source's weights' SHA-256, the counts, what stayed
fresh), so the run can be reproduced; resuming it continues from its own checkpoints and keeps the record.

Nothing here builds the source model: its weights are read as tensors (the safetensors header checked as
for any load), which also leaves the global RNG, and so the new model's fresh tensors, untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from atelier.data.base import ConversionNote, DataError, Message, Option
from atelier.models.pretrained import model_class, nonfinite_message, nonfinite_tensors, open_pretrained, opened_tensors
from atelier.models.registry import Family
from atelier.weights import few, sha256_file

#: Below this fraction of the new model's parameter values taken from the source, ``init_from`` is refused
#: unless forced: a new class count stays far above it, a different width or preset falls far below.
MIN_FRACTION = 0.5
#: Model settings a run always takes from its own data, never from an ``init_from`` model (beside the
#: ones its data config also has, such as resolution and channels).
DATA_GIVEN = ("num_classes",)


#: How messages name the setting (the CLI spells it --init-from).
INIT_FROM = Option("init_from", "init_from")


class InitFromError(DataError):
    """An ``init_from`` model that cannot start this run: another family, weights that do not fit, NaN."""


class InitFromNote(ConversionNote):
    """What an ``init_from`` run took from its source model and what it kept fresh (the CLI prints it as a
    ``note:`` line before training starts)."""


@dataclass
class InitSource:
    """A saved model opened for ``init_from``: where it came from, its family and settings, its weights."""

    where: str  # as the user gave it (a path, or the kind of model object)
    family: str
    name: str | None  # the registry name it was trained as, when its config records one
    config: dict[str, Any]  # its model config's fields
    state: dict[str, torch.Tensor]
    sha256: str  # of its safetensors weights (for an encrypted model: of the weights inside the envelope)
    sealed: bool = False

    @property
    def conditional(self) -> bool:
        return bool(self.config.get("num_classes"))

    @property
    def parameters(self) -> int:
        """Values in its floating-point tensors (parameters, averaged copies and statistics)."""
        return sum(t.numel() for t in self.state.values() if t.is_floating_point())


def load_init_source(init_from: Any, key: Any = None) -> InitSource:
    """Open ``init_from``: a run directory, checkpoint, model directory, an encrypted model (opened with
    ``key``, an :class:`atelier.protect.envelope.Key`, in memory only), a model object of any family, or
    an :class:`InitSource` (returned as it is)."""
    if isinstance(init_from, InitSource):
        return init_from
    if isinstance(init_from, str) and not init_from.strip():  # Path("") is the current directory
        raise InitFromError(Message(INIT_FROM, " is empty: give a saved model's path"))
    if isinstance(init_from, torch.nn.Module):
        if not getattr(init_from, "family", "") or not hasattr(init_from, "model_config_dict"):
            raise InitFromError(f"init_from: a {type(init_from).__name__} is not an Atelier model (it names no "
                                "family); give a saved model's path or a model from load_pretrained")
        from safetensors.torch import save

        # a copy: the caller's model may go on changing while this run trains
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in init_from.state_dict().items()}
        config = init_from.model_config_dict()
        return InitSource(f"a {type(init_from).__name__} object", init_from.family, None, config["config"], state,
                          hashlib.sha256(save(state)).hexdigest())
    opened = open_pretrained(init_from, key)
    ckpt, config, sealed = opened
    state = opened_tensors(opened)
    found = nonfinite_tensors(state)
    if found:
        raise InitFromError(nonfinite_message(ckpt / "model.safetensors", found)
                            + "; fine-tune from an earlier checkpoint of that run")
    # the digest of the weights themselves, so an encrypted copy (or one re-keyed) records the same one
    digest = hashlib.sha256(sealed).hexdigest() if sealed is not None else sha256_file(ckpt / "model.safetensors")
    model = config["model"]
    return InitSource(str(init_from), model["family"], model.get("name"), dict(model["config"]), state, digest,
                      sealed is not None)


def check_family(source: InitSource, family: Family, model_name: str) -> None:
    """Refuse a source of another family, naming both."""
    try:
        saved = model_class(source.family).family  # an alias older versions saved under -> today's name
    except ValueError:
        saved = source.family
    if saved != family.name:
        raise InitFromError(Message(INIT_FROM, f" {source.where} holds a {saved} model, but this run trains a "
                                    f"{family.name} model ({model_name}): fine-tune it in a {saved} run (atelier "
                                    f"train {saved}), or start this one from a {family.name} model"))


def data_given(family: Family) -> set[str]:
    """Model settings a run takes from its data, not from an ``init_from`` model: those its data config
    has too (resolution, channels) and the class count."""
    model = {f.name for f in dataclasses.fields(family.model_config)}
    return model & ({f.name for f in dataclasses.fields(family.data_config)} | set(DATA_GIVEN))


def source_settings(source: InitSource, family: Family) -> dict[str, Any]:
    """The source's model settings a run keeps unless told otherwise (fields the config class no longer has
    are dropped; what the data decides is left to the data)."""
    known = {f.name for f in dataclasses.fields(family.model_config)} - data_given(family)
    return {k: v for k, v in source.config.items() if k in known}


@dataclass
class InitReport:
    """What :func:`init_model` did: the source, the tensors loaded and those kept fresh, and why."""

    source: str
    family: str
    name: str | None
    sha256: str
    sealed: bool
    source_parameters: int
    tensors: int  # in the new model's state dict
    loaded: list[str]
    fresh: list[tuple[str, tuple[int, ...], tuple[int, ...] | None]]  # name, shape here, shape saved (None: absent)
    unused: list[str]  # saved tensors this model has no place for
    fraction: float  # of the new model's parameter values that were loaded
    changed: dict[str, tuple[Any, Any]]  # model settings that differ: name -> (saved, this run)
    forced: bool = False

    def headline(self) -> str:
        return (f"init-from {self.source} ({self.family}, {self.source_parameters:,} parameters, weights sha256 "
                f"{self.sha256[:12]})")

    def describe(self) -> str:
        """One paragraph: what was loaded, what stayed fresh (with both shapes), what differs."""
        if not self.fresh:
            text = f"{self.headline()}: loaded all {self.tensors} tensors"
        else:
            text = (f"{self.headline()}: loaded {len(self.loaded)} of {self.tensors} tensors "
                    f"({100 * self.fraction:.1f}% of the model's parameters); kept fresh: "
                    + few([_fresh_text(f) for f in self.fresh], 6))
        if self.unused:
            text += f"; saved tensors this model has no place for: {few(self.unused, 6)}"
        if self.changed:
            text += f"; settings that differ from the saved model: {_changes(self.changed)}"
        return text + ". The optimisers start fresh at step 0."

    def record(self) -> dict[str, Any]:
        """What the run's config.json keeps of it."""
        return {"source": self.source, "family": self.family, "name": self.name, "weights_sha256": self.sha256,
                "sealed": self.sealed, "tensors_loaded": len(self.loaded), "tensors": self.tensors,
                "parameters_loaded": round(self.fraction, 6), "kept_fresh": [f[0] for f in self.fresh],
                "unused": self.unused, "changed_settings": {k: list(v) for k, v in self.changed.items()},
                "forced": self.forced}


def _fresh_text(fresh: tuple[str, tuple[int, ...], tuple[int, ...] | None]) -> str:
    name, here, saved = fresh
    return f"{name} (not in the saved model)" if saved is None else \
        f"{name} (shape {here} in the model, {saved} saved)"


def _changes(changed: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())


def _plain(value: Any) -> Any:
    """A setting as JSON has it (tuples are lists there), so a saved value compares with a built one."""
    return json.loads(json.dumps(value, default=str))


@torch.no_grad()
def init_model(model: torch.nn.Module, source: InitSource, *, force: bool = False,
               min_fraction: float = MIN_FRACTION) -> InitReport:
    """Copy every tensor of ``source`` whose name and shape match into ``model`` (in place; the others
    keep their values) and say what happened. Refused with :class:`InitFromError` when nothing fits, or
    when less than ``min_fraction`` of the model's parameter values would come from the source, unless
    ``force``: then the fine-tuned model would be mostly fresh, which is almost always the wrong source."""
    target = model.state_dict()  # detached views of the parameters and buffers: copying into them sets them
    loaded, fresh = [], []
    for name, tensor in target.items():
        saved = source.state.get(name)
        if saved is not None and tuple(saved.shape) == tuple(tensor.shape):
            loaded.append(name)
        else:
            fresh.append((name, tuple(tensor.shape), None if saved is None else tuple(saved.shape)))
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    fraction = sum(params[n].numel() for n in loaded if n in params) / total if total else 1.0
    config = dataclasses.asdict(model.config) if dataclasses.is_dataclass(getattr(model, "config", None)) else {}
    changed = {k: (source.config[k], v) for k, v in config.items()
               if k in source.config and _plain(source.config[k]) != _plain(v)}
    report = InitReport(source.where, source.family, source.name, source.sha256, source.sealed, source.parameters,
                        len(target), loaded, fresh, [k for k in source.state if k not in target], fraction, changed,
                        forced=force)
    differ = f"; settings that differ: {_changes(changed)}" if changed else ""
    if not loaded:
        raise InitFromError(f"{report.headline()}: none of its tensors fits this model{differ}; start from a model "
                            "of the same architecture (leave out the settings that change it)")
    if fraction < min_fraction and not force:
        raise InitFromError(Message(
            f"{report.headline()}: only {100 * fraction:.1f}% of this model's parameters would come from it "
            f"({len(loaded)} of {len(target)} tensors fit){differ}. This is usually the wrong model or preset: "
            "leave out the settings that change the architecture, or pass ", Option("init_force", "init_force=True"),
            " to keep what fits and train the rest from scratch"))
    for name in loaded:
        target[name].copy_(source.state[name])
    return report


def carried_record(saved_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``init_from`` record of a run's saved config (kept when the run is resumed)."""
    return (saved_config or {}).get("init_from")


def no_labels_hint(exc: DataError, source: InitSource) -> DataError:
    """A conditional run inherited from a conditional source, on data without labels: say how out."""
    return DataError(Message(f"{exc}; the run is conditional because ", INIT_FROM, f" {source.where} is: pass ",
                             Option("unconditional", "conditional=False"), " to fine-tune it without labels"))
