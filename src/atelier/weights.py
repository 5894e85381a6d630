"""Pretrained weight files: find, download, verify, read and check them.

Several parts of atelier need a network trained elsewhere (the FID InceptionV3, VGG for style losses).
They all follow the same rules, gathered here:

* **Where a file comes from**, in this order: an explicit path the user gave; the cache
  ``cache_dir() / "weights"`` (``$ATELIER_HOME/weights``); a download from the file's URL (overridable
  by an argument and an environment variable), written atomically by :func:`download_file`.
* **Checksums.** A :class:`WeightSpec` pins the SHA-256 of its file. Following torch.hub's naming
  (``name-<hash prefix>.pth``), a spec may also pin only a prefix of at least 8 hex digits when the full
  digest is not known; :func:`hash_matches` accepts either.
* **Offline.** When the file is neither given nor cached and cannot be downloaded, the error names the
  file, the URL and the path to put it at (:meth:`WeightSpec.advice`).
* **Reading** never unpickles code: ``.pth`` files go through ``torch.load(weights_only=True)``;
  ``.safetensors`` files are read with their metadata. :func:`atelier.io.save_tensors` writes safetensors
  atomically, so a cache never holds half a file.
* **Checking** a state dict against the shapes a model expects (:func:`check_state_dict`) lists what
  is missing, unexpected and mis-shaped in one message, instead of failing on the first key.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.data.base import DataError, Message, Option
from atelier.data.download import DownloadError, cache_dir, download_file, sha256_stream
from atelier.io import read_safetensors

__all__ = [
    "WeightSpec",
    "WeightsUnavailableError",
    "check_sha256",
    "check_state_dict",
    "fetch",
    "few",
    "hash_matches",
    "locate_weights",
    "read_state_dict",
    "sha256_file",
    "weights_dir",
]

#: Fewest hex digits a hash prefix may have and still count as a check.
MIN_PREFIX = 8


class WeightsUnavailableError(DataError):
    """The weight file is not at hand: not cached with ``download=False``, or the download failed.

    Unlike a damaged file or a checksum mismatch, this is what a fallback may paper over. ``url``,
    ``dest`` and ``reason`` (plain text) are kept for the caller's own advice.
    """

    def __init__(self, message: str | Message, *, url: str, dest: Path, reason: str | Message) -> None:
        super().__init__(message)
        self.url, self.dest, self.reason = url, dest, str(reason)


@dataclass(frozen=True)
class WeightSpec:
    """What a weight file is and where it comes from.

    Attributes:
        filename: the file's standard name, also its name in the cache.
        url: default download URL.
        sha256: full hex SHA-256 of the file, or a prefix of at least 8 hex digits (then only the
            prefix is checked), or None for no check.
        what: a short name for messages, e.g. ``"InceptionV3 FID weights"``.
        url_env: environment variable that overrides ``url`` (e.g. an internal mirror).
        purpose: first sentence of the offline advice (why the file is needed).
        hint: appended to "Download it from URL and put it at PATH" (other ways to supply it); a
            :class:`~atelier.data.base.Message` when it names a setting.
    """

    filename: str
    url: str
    sha256: str | None
    what: str
    url_env: str | None = None
    purpose: str = ""
    hint: str | Message = "."

    def resolve_url(self, url: str | None = None) -> str:
        """``url`` if given, else ``$url_env`` if set, else the default URL."""
        return url or (os.environ.get(self.url_env) if self.url_env else None) or self.url

    def cache_path(self) -> Path:
        """Where the file lives in the cache (the folder is created on demand)."""
        return weights_dir() / self.filename

    def advice(self, url: str, dest: Path) -> Message:
        """How to supply the file by hand: which file, from where, to where (``str()`` it for plain text)."""
        purpose = self.purpose or f"This needs the {self.what} ({self.filename})."
        return Message(f"{purpose} Download it from {url} and put it at {dest}", self.hint)


def weights_dir() -> Path:
    """``cache_dir() / "weights"``: where downloaded and converted weight files are kept."""
    return cache_dir() / "weights"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def hash_matches(actual: str, expected: str) -> bool:
    """Whether a full hex digest matches ``expected``: the full digest, or a prefix of >= 8 digits."""
    expected = expected.lower()
    if len(expected) < MIN_PREFIX:
        raise ValueError(f"a sha256 to check against needs at least {MIN_PREFIX} hex digits, got {expected!r}")
    return actual.lower().startswith(expected) if len(expected) < 64 else actual.lower() == expected


def check_sha256(path: Path, expected: str, *, what: str, note: str = "") -> str:
    """Raise DataError unless ``path``'s SHA-256 matches ``expected`` (full or prefix); return it.

    ``note`` is added to the advice on passing ``verify=False`` (e.g. what different weights imply).
    The message names ``verify=False`` and ``sha256=`` as :class:`~atelier.data.base.Option` s (keys
    ``no_verify_weights`` and ``weights_sha256``).
    """
    actual = sha256_file(path)
    if not hash_matches(actual, expected):
        kind = "sha256" if len(expected) >= 64 else "sha256 starting with"
        raise DataError(Message(
            f"{path}: not the expected {what}: sha256 {actual}, expected {kind} {expected}. "
            f"The file may be damaged or a different conversion; pass ", Option("no_verify_weights", "verify=False"),
            f" to use deliberately different weights{note}",
            *((" or ", Option("weights_sha256", "sha256="), " of your converted file.")
              if Path(path).suffix == ".safetensors" else (".",)),
        ))
    return actual


def fetch(spec: WeightSpec, dest: Path, *, url: str, sha256: str | None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``sha256`` (full or prefix) before it appears.

    A download failure becomes a :class:`WeightsUnavailableError` that says how to supply the file by
    hand; a checksum mismatch is a plain DataError and leaves nothing behind.
    """
    full = sha256 if sha256 is not None and len(sha256) >= 64 else None
    try:
        download_file(url, dest, sha256=full, progress=progress)
    except DownloadError as exc:
        raise WeightsUnavailableError(
            f"could not download {url} ({exc.reason}). " + spec.advice(url, dest), url=url, dest=dest, reason=exc.reason
        ) from exc
    if sha256 is not None and full is None:  # only a prefix is pinned: download_file could not check it
        actual = sha256_file(dest)
        if not hash_matches(actual, sha256):
            dest.unlink(missing_ok=True)
            raise DataError(
                f"checksum mismatch for {dest.name} downloaded from {url}: expected a sha256 starting with "
                f"{sha256}, got {actual}. The download was deleted. The server may be serving a different "
                f"or damaged file."
            )
    return dest


def locate_weights(
    spec: WeightSpec,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str | None = None,
    verify: bool = True,
    sha256: str | None = None,
    note: str = "",
) -> Path:
    """Find a weight file as it is distributed: ``path``, else the cache, else a download; its path.

    Args:
        spec: the file.
        path: a local file to use instead of the cache; it must exist.
        download: fetch the file into the cache when it is not there yet.
        url: where to download from (default: :meth:`WeightSpec.resolve_url`).
        verify: check the file's SHA-256 (given, cached or downloaded).
        sha256: expected digest instead of ``spec.sha256`` (for mirrors of other weights).
        note: added to the hash-mismatch advice (see :func:`check_sha256`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsUnavailableError: not cached and ``download=False``, or the download failed (the
            message says how to supply the file by hand).
        DataError: the hash does not match.
    """
    url = spec.resolve_url(url)
    expected = sha256 or spec.sha256
    check = verify and expected is not None
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(
                f"{spec.what} not found at {p}; expected the file {spec.filename} (download it from {url})"
            )
    else:
        p = spec.cache_path()
        if not p.is_file():
            if not download:
                raise WeightsUnavailableError(
                    Message(f"{spec.filename} is not in the cache and ", Option("downloads_off", "download=False"),
                            ". ", spec.advice(url, p)),
                    url=url, dest=p, reason="not cached and download=False",
                )
            return fetch(spec, p, url=url, sha256=expected if check else None)  # checked before it appears
    if check:
        check_sha256(p, expected, what=spec.what, note=note)
    return p


class _ReadsWithinFile(io.FileIO):
    """A file whose ``read(n)`` asks for no more than what is left of it: an unpickler reads as many bytes as
    a length field says, and ``read(n)`` reserves n bytes before reading (4 GiB for a damaged string length)."""

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, os.fstat(self.fileno()).st_size - self.tell()))
        return super().read(size)


def read_state_dict(path: Path, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``.pth`` state dict (``weights_only=True``) on the CPU.

    Raises DataError, naming the file, when it cannot be read or is not a flat dict of tensors (for a
    ``.safetensors`` file: FileNotFoundError or FileFormatError, see :func:`atelier.io.read_safetensors`).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path, what=what)[0]
    try:
        with _ReadsWithinFile(path) as f:
            zipped = f.read(4) == b"PK\x03\x04"
            f.seek(0)
            # torch.save's zip format reads its pickle from a record of known size; the legacy format is read
            # as a pickle stream straight from the file, through reads that never ask for more than it holds
            state = torch.load(path if zipped else f, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of many kinds: name the file, keep the cause
        raise DataError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def few(items: list[str], n: int = 4, sep: str = ", ") -> str:
    """The first ``n`` items joined, and how many more there are."""
    return sep.join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    *,
    source: str | Path,
    what: str,
    optional: Callable[[str], bool] | None = None,
    ignore: Callable[[str], bool] | None = None,
) -> None:
    """Raise DataError unless ``state`` has every expected key with the expected shape.

    Args:
        state: the loaded tensors.
        expected: key -> shape the model needs.
        source: the file (for the message).
        what: what the state dict should be, e.g. ``"FID InceptionV3"``.
        optional: expected keys that may be absent (e.g. BatchNorm's ``num_batches_tracked``).
        ignore: keys of ``state`` the model does not need and that are not an error (e.g. a classifier).
    """
    missing = [k for k in expected if k not in state and not (optional and optional(k))]
    unexpected = [k for k in state if k not in expected and not (ignore and ignore(k))]
    bad = [
        f"{k} {tuple(v.shape)} != {tuple(expected[k])}"
        for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys [{few(missing)}]")
    if unexpected:
        problems.append(f"unexpected keys [{few(unexpected)}]")
    if bad:
        problems.append(f"wrong shapes [{few(bad, sep='; ')}]")
    if problems:
        raise DataError(f"{source}: not a valid {what} state_dict: {', '.join(problems)}")
