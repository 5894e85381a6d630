"""Checkpoints: safetensors weights, JSON config and training state, written atomically.

Layout of one checkpoint directory::

    config.json          the resolved configs (model, train, data) and the environment
    model.safetensors    the model's state dict (for a GAN: generator, discriminator, EMA generator)
    state.safetensors    every tensor of the training state (optimiser moments, RNG states)
    state.json           the rest of the training state (step, epoch, optimiser hyper-parameters)

Nothing here unpickles: optimiser state dicts are split into tensors (safetensors) and plain data
(JSON) and put back together on load, so a checkpoint from an untrusted source cannot run code.
A checkpoint is written into a temporary directory and renamed into place, then the ``latest``
pointer is replaced atomically: a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from atelier.data.base import Message, Option
from atelier.io import (DIR_MODE, FileFormatError, atomic_write_bytes, atomic_write_json, load_tensors, parse_json,
                        save_tensors)
from atelier.models.pretrained import LATEST

_TENSOR = "__tensor__"


def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a reference, collecting the tensors by key."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        # JSON keys are strings: remember int keys (optimiser state is keyed by parameter index)
        return {
            ("i:" if isinstance(k, int) else "s:") + str(k): split_tensors(v, f"{prefix}.{k}", tensors)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {prefix}")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        return {(int(k[2:]) if k.startswith("i:") else k[2:]): join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_checkpoint(
    directory: Path, *, model_state: dict[str, torch.Tensor], train_state: dict[str, Any], config: dict[str, Any]
) -> Path:
    """Write a complete checkpoint to ``directory`` atomically, replacing one that is there."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp"))
    try:
        tmp.chmod(DIR_MODE)
        save_tensors(model_state, tmp / "model.safetensors")
        tensors: dict[str, torch.Tensor] = {}
        plain = split_tensors(train_state, "state", tensors)
        save_tensors(tensors, tmp / "state.safetensors")
        atomic_write_bytes(tmp / "state.json", json.dumps(plain).encode())
        atomic_write_json(tmp / "config.json", config)
        if directory.exists():  # replacing (e.g. checkpoints/best): move the old one aside first
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_train_state(directory: Path) -> dict[str, Any]:
    """The training state of a checkpoint (``state.json`` joined with ``state.safetensors``).
    FileNotFoundError when ``state.safetensors`` is missing, FileFormatError naming the file for anything
    else: unreadable, not JSON, or the two files not matching (see docs/errors.md)."""
    directory = Path(directory)
    tensors = load_tensors(directory / "state.safetensors", what="training state")
    try:
        plain = parse_json((directory / "state.json").read_bytes(), str(directory / "state.json"))
    except OSError as exc:
        raise FileFormatError(f"{directory / 'state.json'}: unreadable training state ({exc})") from exc
    try:
        return join_tensors(plain, tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:  # a damaged or foreign state.json
        raise FileFormatError(f"{directory / 'state.json'}: the training state does not match state.safetensors "
                              f"({type(exc).__name__}: {str(exc)[:120]})") from None


def set_latest(checkpoints: Path, name: str) -> None:
    atomic_write_bytes(Path(checkpoints) / LATEST, (name + "\n").encode())


def prune_checkpoints(checkpoints: Path, keep: int, protect: set[str] = frozenset()) -> None:
    """Delete all but the newest ``keep`` ``step_*`` checkpoints (never one named in ``protect``)."""
    steps = sorted(p for p in Path(checkpoints).glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)


#: What a run directory holds that Atelier wrote (``overwrite`` removes these, and nothing else).
RUN_ARTEFACTS = ("checkpoints", "samples", "tb", "history.jsonl", "eval.jsonl", "config.json", "metrics.json",
                 "loss_curve.png", "eval_curve.png")


class RunExistsError(FileExistsError):
    """A new run was pointed at a directory that already holds one; ``message`` names the way out
    (``resume`` or ``overwrite``) so each front end can spell it (see :mod:`atelier.cli.errors`)."""

    def __init__(self, message: Message) -> None:
        self.message = message
        super().__init__(str(message))


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed run left half-done: checkpoint folders being written (``.step_*.tmp*``), the
    ``latest`` pointer's temporary file, checkpoints moved aside to be replaced (``.best.old-*``); returns
    what was removed. A complete checkpoint is never touched: it is renamed into place whole. One moved
    aside whose replacement never arrived (killed between the two renames) is put back, not deleted."""
    checkpoints = Path(run_dir) / "checkpoints"
    if not checkpoints.is_dir():
        return []
    stale = []
    for p in sorted(checkpoints.glob(".*")):
        if ".old-" in p.name and p.is_dir() and not _missing(p):
            original = checkpoints / p.name[1:p.name.index(".old-")]
            if not original.exists():
                os.replace(p, original)
                continue
        if ".tmp" in p.name or ".old-" in p.name:
            stale.append(p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    return stale


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, clear: bool = True) -> None:
    """Refuse to start a new run in a directory that is not empty, unless ``overwrite`` (then the
    previous run's files are deleted; other files are left alone). Stale temporaries go either way.
    With ``clear=False`` only the refusal is checked and nothing is deleted, so a run can fail its own
    checks (an ``init_from`` model that does not fit) before the run it overwrites is gone."""
    run_dir = Path(run_dir)
    if clear:
        remove_stale_temporaries(run_dir)
    if resume or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not overwrite:
        held = "a training run" if (run_dir / "checkpoints").is_dir() or (run_dir / "config.json").is_file() \
            else "other files"
        raise RunExistsError(Message(
            f"{run_dir} already holds {held}; continue it with ", Option("resume", "resume=True"),
            ", start again with ", Option("overwrite", "overwrite=True"),
            " (deletes the old run's checkpoints, samples and logs), or train into a new directory"))
    if not clear:
        return
    for name in RUN_ARTEFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def resumable_checkpoint(run_dir: Path) -> Path:
    """The checkpoint ``--resume`` continues: the one ``checkpoints/latest`` names, unless a newer complete
    ``step_*`` checkpoint is there (a run killed after writing it, before moving the pointer), else the
    newest complete ``step_*`` checkpoint (a killed run may have lost the pointer); else FileNotFoundError
    saying what is there and why none of it is usable."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    candidates = sorted((p for p in checkpoints.glob("step_*") if p.is_dir()), reverse=True) \
        if checkpoints.is_dir() else []
    newest = next((c for c in candidates if not _missing(c)), None)
    pointer = checkpoints / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        named = checkpoints / name
        if "/" not in name and name not in ("", ".", "..") and not _missing(named):  # a checkpoint of this run
            return newest if newest is not None and name.startswith("step_") and newest.name > name else named
    if newest is not None:
        return newest
    if not candidates:
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no checkpoint under {checkpoints})")
    why = "; ".join(f"{c.name} lacks {', '.join(_missing(c))}" for c in candidates[:3])
    raise FileNotFoundError(f"{run_dir}: no complete checkpoint to resume from ({why})")


def _missing(checkpoint: Path) -> list[str]:
    return [n for n in ("model.safetensors", "state.safetensors", "state.json", "config.json")
            if not (checkpoint / n).is_file()]
