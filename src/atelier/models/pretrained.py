"""``save_pretrained`` / ``from_pretrained`` for models, in the manner of diffusers, and
:func:`load_pretrained` for a saved model of any family.

A model directory holds ``config.json`` (its family, registry name and config dataclass) and
``model.safetensors``. ``from_pretrained`` also accepts a training run directory or one of its
checkpoints, and then loads the newest checkpoint. The model classes themselves stay free of file
handling: this mixin is the only place that knows the on-disk layout.

Loading checks the weights: a tensor holding NaN or +-inf (a run that diverged, a damaged file) is
named with its count, by a :class:`NonFiniteWeightsWarning` or, with ``allow_nonfinite=False`` (what
the pipeline façade and the CLI use), a :class:`NonFiniteWeightsError`: such a model samples black or
meaningless images, which must never pass without a word.

Every class that mixes this in and names a ``family`` is known to :func:`load_pretrained` by that name
(and by its ``family_aliases``, names older versions saved) as soon as its module is imported: a new
family needs no table edited here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from atelier.config import environment, from_dict
from atelier.data.base import DataError, Message, Option
from atelier.device import check_device, ensure_fits, format_bytes
from atelier.io import FileFormatError, atomic_write_json, display_path, load_json, load_tensors, save_tensors
from atelier.models.registry import built_size

M = TypeVar("M", bound="PretrainedMixin")
#: The file in a ``checkpoints`` directory naming its newest complete checkpoint.
LATEST = "latest"


def latest_checkpoint(path: Path) -> Path | None:
    """The newest checkpoint under a run directory, a ``checkpoints`` directory, or ``path`` itself."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    for root in (path / "checkpoints", path):
        pointer = root / LATEST
        if pointer.is_file():
            try:
                name = pointer.read_text(errors="replace").strip()[:255]
            except OSError:
                continue
            # a checkpoint's own name only: a pointer reading "../../elsewhere" or "/x" is not followed
            if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
                continue
            candidate = root / name
            if (candidate / "model.safetensors").is_file():
                return candidate
    return None


class KeyRequiredError(DataError):
    """The model is sealed in an encrypted envelope and no key was given."""


def open_pretrained(path: str | Path, key: Any = None) -> tuple[Path, dict[str, Any], bytes | None]:
    """(checkpoint or model directory, its config, the weights' bytes when the model is sealed) for a run
    dir, checkpoint dir, model dir or encrypted model (``model.atlenc``, opened with ``key``, an
    :class:`atelier.protect.envelope.Key`, in memory only)."""
    from atelier.protect.envelope import is_sealed, open_model

    path = Path(path)
    if not is_sealed(path):
        return (*resolve_pretrained(path), None)
    if key is None:
        raise KeyRequiredError(f"{path}: the model is encrypted; give its key (--key-file, ${{ATELIER_MODEL_KEY}} "
                               "or --passphrase)")
    config, weights = open_model(path, key)
    return path, _check_config(config, path), weights


def _check_config(config: Any, where: Path) -> dict[str, Any]:
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("family"), str) \
            or not isinstance(model.get("config"), dict):
        raise FileFormatError(f"{where}: not an Atelier model config (it needs a \"model\" object "
                              "with a \"family\" name and a \"config\" object)")
    return config


def resolve_pretrained(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint or model directory, its config.json) for a run dir, checkpoint dir or model dir."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{display_path(path)}: no such run, checkpoint or model directory")
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no model.safetensors here nor a checkpoint under {path}/checkpoints")
    return ckpt, _check_config(load_json(ckpt / "config.json"), ckpt / "config.json")


class NonFiniteWeightsError(DataError):
    """A saved model's weights hold NaN or +-inf; the message names the tensors and counts."""


class NonFiniteWeightsWarning(UserWarning):
    """A model whose weights hold NaN or +-inf was loaded anyway (``allow_nonfinite=True``)."""


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor] | torch.nn.Module) -> dict[str, tuple[int, int]]:
    """{name: (values that are NaN or +-inf, all values)} of the floating-point tensors (or a module's
    parameters and buffers) that hold any; empty when all are finite."""
    if isinstance(tensors, torch.nn.Module):
        tensors = {**dict(tensors.named_parameters()), **dict(tensors.named_buffers())}
    found = {}
    for name, t in tensors.items():
        if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex()):
            bad = int((~torch.isfinite(t.detach())).sum())
            if bad:
                found[name] = (bad, t.numel())
    return found


def nonfinite_message(where: str | Path, found: Mapping[str, tuple[int, int]], *, shown: int = 5) -> str:
    """"FILE: weights hold NaN/Inf in 2 tensors: a.weight (3 of 64 values), ..." for :func:`nonfinite_tensors`."""
    names = sorted(found)
    listed = ", ".join(f"{name} ({found[name][0]:,} of {found[name][1]:,} values)" for name in names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"{where}: the weights hold NaN or infinite values in {len(names)} tensor{'s' * (len(names) != 1)}: "
            f"{listed}{more}; samples from it would be black or meaningless")


def check_finite_weights(tensors: Mapping[str, torch.Tensor] | torch.nn.Module, where: str | Path, *,
                         allow_nonfinite: bool) -> dict[str, tuple[int, int]]:
    """Name the tensors holding NaN/inf: a :class:`NonFiniteWeightsWarning` with ``allow_nonfinite``,
    else a :class:`NonFiniteWeightsError`. Returns :func:`nonfinite_tensors` (empty if all finite)."""
    found = nonfinite_tensors(tensors)
    if found:
        text = nonfinite_message(where, found)
        if not allow_nonfinite:
            raise NonFiniteWeightsError(Message(text, ". Resume or sample from an earlier checkpoint, or pass ",
                                                Option("allow_nonfinite", "allow_nonfinite=True"),
                                                " to use it anyway"))
        warnings.warn(text, NonFiniteWeightsWarning, stacklevel=3)
    return found


_MODEL_CLASSES: dict[str, type] = {}


def model_class(family: str) -> type:
    """The model class saved models of ``family`` load into (every built-in model module is imported)."""
    from atelier.models.registry import import_builtin_models

    import_builtin_models()
    if family not in _MODEL_CLASSES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(sorted(set(_MODEL_CLASSES)))}")
    return _MODEL_CLASSES[family]


def load_pretrained(path: str | Path, *, map_location: str | torch.device = "cpu",
                    allow_nonfinite: bool = True, key: Any = None) -> Any:
    """Load any saved model (run directory, checkpoint, model directory, or an encrypted model opened
    with ``key``), whatever its family.

    Weights holding NaN or +-inf are named by a :class:`NonFiniteWeightsWarning`, or refused with a
    :class:`NonFiniteWeightsError` when ``allow_nonfinite=False``. A missing folder or file raises
    FileNotFoundError; anything wrong with the files a ValueError naming them (FileFormatError,
    ConfigError, DataError, TooLargeError; see docs/errors.md)."""
    return load_opened(open_pretrained(path, key), map_location=map_location, allow_nonfinite=allow_nonfinite)


def load_opened(opened: tuple[Path, dict[str, Any], bytes | None], *, map_location: str | torch.device = "cpu",
                allow_nonfinite: bool = True) -> Any:
    """The model of what :func:`open_pretrained` returned (so an encrypted file is opened only once)."""
    ckpt, config, _ = opened
    try:
        cls = model_class(config["model"]["family"])
    except ValueError as exc:
        raise ValueError(f"{ckpt}: {exc}") from None
    return cls.from_pretrained(ckpt, map_location=map_location, allow_nonfinite=allow_nonfinite, _opened=opened)


def opened_tensors(opened: tuple[Path, dict[str, Any], bytes | None]) -> dict[str, torch.Tensor]:
    """The weights of what :func:`open_pretrained` returned, as tensors on the CPU, without building the
    model (the file's header checked as for any load; a sealed model's weights never touch the disk)."""
    ckpt, _, sealed = opened
    if sealed is not None:
        return _tensors_from_bytes(sealed, ckpt)
    return load_tensors(ckpt / "model.safetensors", what="model weights")


def _tensors_from_bytes(data: bytes, where: Path) -> dict[str, torch.Tensor]:
    """safetensors bytes (an opened envelope) -> tensors, never touching the disk."""
    from safetensors.torch import load

    from atelier.io import check_safetensors_header

    check_safetensors_header(data, len(data), f"{where} (sealed weights)")
    try:
        return load(data)
    except Exception as exc:  # safetensors raises several types for a malformed buffer
        raise FileFormatError(f"{where}: the sealed weights are not a readable safetensors buffer "
                              f"({type(exc).__name__})") from None


class PretrainedMixin:
    family: ClassVar[str] = ""
    family_aliases: ClassVar[tuple[str, ...]] = ()  # names this family was saved under by older versions
    #: What the model does for the pipeline façade: sample, interpolate, reconstruct, translate, stylize.
    tasks: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type] = object

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            for name in (cls.family, *cls.family_aliases):
                _MODEL_CLASSES[name] = cls

    def model_config_dict(self) -> dict[str, Any]:
        return {"family": self.family, "config": dataclasses.asdict(self.config)}  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(self.state_dict(), directory / "model.safetensors")  # type: ignore[attr-defined]
        atomic_write_json(directory / "config.json", {"model": self.model_config_dict(), "environment": environment()})
        return directory

    @classmethod
    def from_pretrained(cls: type[M], path: str | Path, *, map_location: str | torch.device = "cpu",
                        allow_nonfinite: bool = True, key: Any = None, _opened=None) -> M:
        """The saved model in ``path`` (an encrypted one is opened with ``key``, in memory only); NaN/inf
        weights warn, or raise with ``allow_nonfinite=False`` (see :func:`check_finite_weights`)."""
        map_location = check_device(map_location)  # "0" or a GPU this machine lacks: a message, not a RuntimeError
        ckpt, config, sealed = _opened if _opened is not None else open_pretrained(path, key)
        model_cfg = config.get("model", {})
        if model_cfg.get("family") not in (cls.family, *cls.family_aliases):
            raise ValueError(f"{ckpt}: holds a {model_cfg.get('family')!r} model, not a {cls.family!r} one")
        model_config = from_dict(cls.config_class, model_cfg["config"])
        # A config.json is user data: the model it describes is sized before it is built, so a hostile or
        # damaged one cannot make us allocate more than the machine has, nor more than the weights file holds.
        count, nbytes = built_size(cls, model_config)
        ensure_fits(nbytes, f"{ckpt}: the model its config describes ({count:,} parameters)")
        weights = ckpt / "model.safetensors"
        held = len(sealed) if sealed is not None else weights.stat().st_size if weights.is_file() else None
        if held is not None and nbytes > 1.01 * held + 2**20:
            raise FileFormatError(f"{ckpt} describes a model of {format_bytes(nbytes)} but its weights hold "
                                  f"{format_bytes(held)}: they do not belong together")
        model = cls(model_config)  # type: ignore[call-arg]
        state = load_tensors(weights, what="model weights") if sealed is None else _tensors_from_bytes(sealed, ckpt)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)  # type: ignore[attr-defined]
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            raise ValueError(f"{ckpt / 'model.safetensors'} does not match the config: {exc}") from exc
        if missing or unexpected:
            raise ValueError(
                f"{ckpt / 'model.safetensors'} does not match the config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        check_finite_weights(state, ckpt / "model.safetensors", allow_nonfinite=allow_nonfinite)
        return model.to(map_location).eval()  # type: ignore[attr-defined,return-value]
