"""The models a studio serves: found under the ``--models`` folders, described without loading them,
and loaded (once, on first use) through the pipeline façade.

A folder counts as one model when :func:`atelier.models.pretrained.resolve_pretrained` accepts it: a
training run (its newest checkpoint is served) or a saved model directory. Folders inside a model
(a run's checkpoints) are not listed again. A model's name is its path below the folder it was found
in (``gan-run``, ``style-fast-run`` for ``style/fast-run``), made unique with that folder's name when two folders clash.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.models.pretrained import resolve_pretrained
from atelier.pipelines import Pipeline

log = logging.getLogger("atelier.serve.catalog")

#: Folders never searched (a run's own artefacts, caches, virtual environments).
_SKIP = {"checkpoints", "samples", "tb", ".git", "__pycache__", ".venv", "node_modules"}
_MAX_DEPTH = 6


@dataclass
class ModelEntry:
    """What the studio says about a model without loading it."""

    name: str
    path: Path  # the run or model directory found
    checkpoint: Path  # what is loaded
    family: str
    config: dict[str, Any]
    parameters: int
    size_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)
    sealed: bool = False  # an encrypted envelope, opened in memory with the studio's key
    signed_by: str | None = None  # the trusted key's fingerprint, when signatures are required
    # an encrypted model's weights as decrypted at discovery, kept (in memory) for its first load only
    opened_weights: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def model_config(self) -> dict[str, Any]:
        return self.config.get("model", {}).get("config", {}) or {}

    @property
    def resolution(self) -> int | None:
        c = self.model_config
        value = c.get("resolution") or c.get("image_size")
        return int(value) if isinstance(value, int) else None

    @property
    def channels(self) -> int | None:
        value = self.model_config.get("channels")
        return int(value) if isinstance(value, int) else None

    @property
    def num_classes(self) -> int:
        value = self.model_config.get("num_classes") or 0
        return int(value) if isinstance(value, int) else 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "resolution": self.resolution, "channels": self.channels,
                "classes": self.num_classes, "parameters": self.parameters, "size_bytes": self.size_bytes,
                "metrics": self.metrics, "encrypted": self.sealed, "signed_by": self.signed_by}


def _weights_facts(path: Path) -> tuple[int, int]:
    """(parameter count, file size) of a safetensors file, from its header alone."""
    from safetensors import safe_open

    weights = path / "model.safetensors"
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            count = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        return int(count), weights.stat().st_size
    except Exception:  # an unreadable file is reported when the model is loaded, not here
        return 0, weights.stat().st_size if weights.exists() else 0


#: Bookkeeping numbers in a run's records that are not quality metrics.
_NOT_METRICS = {"step", "epoch", "best_step", "n", "iw_k", "iw_n", "n_fake", "n_real", "seconds", "time"}


def _count_from_header(weights: bytes) -> int:
    """Parameters in safetensors bytes, from the header alone (8-byte length, then JSON of shapes)."""
    try:
        n = int.from_bytes(weights[:8], "little")
        header = json.loads(weights[8:8 + n])
        return int(sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__"))
    except (ValueError, KeyError, TypeError):
        return 0


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, bool) or key in _NOT_METRICS:
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[prefix + str(key)] = float(value)
            elif isinstance(value, dict) and key in ("metrics",):
                out.update(_numbers(value, prefix))
    return out


def run_metrics(path: Path) -> dict[str, float]:
    """The quality numbers a run holds: ``metrics.json`` (e.g. the VAE's test ELBO), the last record
    of ``eval.jsonl`` (FID/KID during training) and the best checkpoint's FID."""
    found: dict[str, float] = {}
    inside = path.resolve()

    def readable(file: Path) -> bool:  # never a file a symbolic link leads to outside the run
        return file.is_file() and file.resolve().is_relative_to(inside)

    try:
        if readable(path / "eval.jsonl"):
            lines = [x for x in (path / "eval.jsonl").read_text().splitlines() if x.strip()]
            if lines:
                found.update(_numbers(json.loads(lines[-1])))
        best = path / "checkpoints" / "best.json"
        if readable(best):
            data = json.loads(best.read_text())
            if isinstance(data.get("value"), (int, float)) and isinstance(data.get("metric"), str):
                found[f"best_{data['metric']}"] = float(data["value"])
        for name in ("metrics.json", "evaluation/metrics.json"):
            if readable(path / name):
                found.update(_numbers(json.loads((path / name).read_text())))
    except (OSError, ValueError, AttributeError):
        pass  # metrics are a courtesy: a damaged file leaves them out
    return {k: v for k, v in sorted(found.items())}


def _checkpoints(folder: Path, newest: Path) -> list[Path]:
    """A run's other complete checkpoints (``checkpoints/step_*``, ``best``), oldest first."""
    root = folder / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p != newest and not p.name.startswith(".")
                  and (p / "model.safetensors").is_file() and (p / "config.json").is_file())


def _escape(inside: Path, checkpoint: Path) -> Path | None:
    """``checkpoint``, or the first file in it, when it lies outside the resolved folder ``inside`` once
    symbolic links and ``..`` are followed; None when the checkpoint and all it holds lie inside."""
    for p in (checkpoint, *sorted(checkpoint.iterdir())):
        if not p.resolve().is_relative_to(inside):
            return p
    return None


def _pointer_out(folder: Path) -> bool:
    """Whether ``folder`` holds a ``checkpoints/latest`` pointer naming anything but a checkpoint beside it."""
    pointer = folder / "checkpoints" / "latest"
    try:
        name = pointer.read_text(errors="replace").strip() if pointer.is_file() else ""
    except OSError:
        return False
    return bool(name) and (name in (".", "..") or any(c in name for c in "/\\\0"))


def _outside(path: Path, root: Path) -> Refused:
    return Refused(path, f"it leads outside {root} (a symbolic link, or a checkpoints/latest pointer naming a "
                         "folder elsewhere), so it is not served; to serve a model kept elsewhere, name its folder "
                         "in --models")


@dataclass
class Refused:
    """A model found but not served, and why (said on the console and in the log)."""

    path: Path
    reason: str


#: An encrypted model decrypted at discovery (to read its config) keeps its weights in memory until its
#: first load, rather than being decrypted again, when they are at most this large.
KEEP_OPENED_BYTES = 256 * 2**20


def find_models(roots: list[str | Path], *, checkpoints: bool = False, key: Any = None,
                trusted: list | None = None, refused: list[Refused] | None = None) -> list[ModelEntry]:
    """Every model under ``roots`` (each a model itself or a folder searched recursively). With
    ``checkpoints``, a run's other checkpoints are listed too, as ``RUN@CHECKPOINT`` (``gan-run@step_0001000``,
    ``gan-run@best``), so that raters can compare a run with itself earlier in training.

    Encrypted models (``model.atlenc``) are opened with ``key`` (in memory, to read their config). With
    ``trusted`` public keys, only models whose directory (the served checkpoint or model directory) carries
    a valid signature by one of them are served. Nothing outside a root is read or served: a symbolic link
    (or a ``checkpoints/latest`` pointer) leading out of it is not followed, and the model it would have been
    is refused. Models left out, and why, are appended to ``refused``."""
    from atelier.models.pretrained import latest_checkpoint, open_pretrained
    from atelier.protect.envelope import is_sealed

    refused = refused if refused is not None else []
    found: list[tuple[Path, Path, Path, dict, bytes | None]] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder of models")
        # nothing outside the folder is read or served: links out of it are not followed
        inside = root.resolve()
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            ckpt = folder if is_sealed(folder) else latest_checkpoint(folder)  # found, not yet read
            escaped = _escape(inside, ckpt) if ckpt is not None else None
            if escaped is not None:
                refused.append(_outside(escaped, root))
                continue
            ckpt = None
            if is_sealed(folder):
                if key is None:
                    refused.append(Refused(folder, "encrypted, and the studio was given no key (--key-file or "
                                                   "--key-env)"))
                    continue
                try:
                    ckpt, config, sealed = open_pretrained(folder, key)
                except (OSError, ValueError) as exc:
                    refused.append(Refused(folder, f"encrypted, and it does not open: {exc}"))
                    continue
            else:
                sealed = None
                try:
                    ckpt, config = resolve_pretrained(folder)
                except (OSError, ValueError):
                    ckpt = None
                    if _pointer_out(folder):  # latest_checkpoint did not follow it: say why it is not served
                        refused.append(_outside(folder, root))
                        continue
            if ckpt is not None:
                found.append((root, folder, ckpt, config, sealed))
                continue
            if depth >= _MAX_DEPTH:
                continue
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in _SKIP
                                  and not p.name.startswith("."))
            except OSError:
                continue
            refused.extend(_outside(c, root) for c in children if not c.resolve().is_relative_to(inside))
            children = [c for c in children if c.resolve().is_relative_to(inside)]
            stack.extend((c, depth + 1) for c in reversed(children))
    names: dict[str, int] = {}
    entries = []
    for root, folder, ckpt, config, sealed in found:
        rel = folder.relative_to(root).as_posix() if folder != root else root.name
        name = (rel if rel != "." else root.resolve().name).replace("/", "-")  # one URL path segment
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{root.resolve().name}-{name}"
        signed_by = None
        if trusted is not None:
            from atelier.protect.signing import SignatureError, verify_directory

            try:
                signed_by = verify_directory(ckpt, trusted).fingerprint
            except (SignatureError, OSError) as exc:
                refused.append(Refused(ckpt, f"not served: signatures are required and {exc}"))
                continue
        if sealed is not None:
            from atelier.protect.envelope import ENVELOPE_NAME

            params, size = _count_from_header(sealed), (ckpt / ENVELOPE_NAME).stat().st_size
        else:
            params, size = _weights_facts(ckpt)
        keep = sealed if sealed is not None and len(sealed) <= KEEP_OPENED_BYTES else None
        entries.append(ModelEntry(name, folder, ckpt, str(config["model"]["family"]), config, params, size,
                                  run_metrics(folder), sealed=sealed is not None, signed_by=signed_by,
                                  opened_weights=keep))
        for other in _checkpoints(folder, ckpt) if checkpoints and sealed is None and trusted is None else ():
            if _escape(Path(root).resolve(), other) is not None:
                refused.append(_outside(other, root))
                continue
            try:
                _, other_config = resolve_pretrained(other)
            except (OSError, ValueError):
                continue
            params, size = _weights_facts(other)
            entries.append(ModelEntry(f"{name}@{other.name}", folder, other, str(other_config["model"]["family"]),
                                      other_config, params, size, {}))
    return entries


def weights_sha256(entry: ModelEntry) -> str:
    """The SHA-256 of the file a model's weights came from (the envelope for an encrypted model)."""
    import hashlib

    from atelier.protect.envelope import ENVELOPE_NAME

    path = entry.checkpoint / (ENVELOPE_NAME if entry.sealed else "model.safetensors")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Catalog:
    """The served models by name, each loaded once (thread-safe) when first used."""

    def __init__(self, entries: list[ModelEntry], device: str = "cpu", *, key: Any = None,
                 refused: list[Refused] | None = None) -> None:
        self.entries = {e.name: e for e in entries}
        self.device = device
        self._key = key  # opens the encrypted models; kept in memory only, never logged
        self.refused = list(refused or [])
        self.on_load: Any = None  # called with (entry, sha256 of its weights file) after each load
        self._loaded: dict[str, Pipeline] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self.entries}
        self._operations: dict[str, list[str]] = {}

    @classmethod
    def from_folders(cls, roots: list[str | Path], device: str = "cpu", *, checkpoints: bool = False,
                     key: Any = None, trusted: list | None = None) -> "Catalog":
        refused: list[Refused] = []
        entries = find_models(roots, checkpoints=checkpoints, key=key, trusted=trusted, refused=refused)
        for r in refused:
            log.warning("model %s refused: %s", r.path, r.reason)
        return cls(entries, device, key=key, refused=refused)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> ModelEntry:
        return self.entries[name]

    def pipeline(self, name: str) -> Pipeline:
        """The loaded model (KeyError for an unknown name)."""
        entry = self.entries[name]
        pipe = self._loaded.get(name)
        if pipe is not None:
            return pipe
        with self._locks[name]:
            pipe = self._loaded.get(name)
            if pipe is None:
                if entry.opened_weights is not None:
                    opened, entry.opened_weights = (entry.checkpoint, entry.config, entry.opened_weights), None
                    pipe = Pipeline.from_opened(opened, device=self.device)
                else:
                    pipe = Pipeline.load(entry.checkpoint, device=self.device, key=self._key if entry.sealed else None)
                self._loaded[name] = pipe
                if self.on_load is not None:
                    self.on_load(entry, weights_sha256(entry))
        return pipe

    def operations(self, name: str) -> list[str]:
        """What the model can do, from its class, without loading its weights (looked up once)."""
        from atelier.models.pretrained import model_class

        if name not in self._operations:
            try:
                self._operations[name] = list(getattr(model_class(self.entries[name].family), "tasks", ()))
            except ValueError:
                self._operations[name] = []
        return list(self._operations[name])
