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
from safetensors.torch import load_file, save_file

LATEST = "latest"
_TENSOR = "__tensor__"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes them 0600)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Pretty JSON (sorted keys, trailing newline), written atomically."""
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors needs contiguous tensors that share no memory; the temp-file dance makes it atomic."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


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
        tmp.chmod(0o777 & ~_umask())
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
    directory = Path(directory)
    tensors = load_tensors(directory / "state.safetensors")
    try:
        plain = json.loads((directory / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory / 'state.json'}: unreadable training state ({exc})") from exc
    return join_tensors(plain, tensors)


def set_latest(checkpoints: Path, name: str) -> None:
    atomic_write_bytes(Path(checkpoints) / LATEST, (name + "\n").encode())


def latest_checkpoint(path: Path) -> Path | None:
    """The newest checkpoint under a run directory, a ``checkpoints`` directory, or ``path`` itself."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    for root in (path / "checkpoints", path):
        pointer = root / LATEST
        if pointer.is_file():
            candidate = root / pointer.read_text().strip()
            if (candidate / "model.safetensors").is_file():
                return candidate
    return None


def prune_checkpoints(checkpoints: Path, keep: int, protect: set[str] = frozenset()) -> None:
    """Delete all but the newest ``keep`` ``step_*`` checkpoints (never one named in ``protect``)."""
    steps = sorted(p for p in Path(checkpoints).glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
