"""The one record a generated image carries about how it was made: an allowlisted provenance record.

The images Atelier writes hold pixels and, for generated ones, this record alone: the software and its
version, the model (family, the name it is served under, the SHA-256 of its weights file) and how the
image was drawn (seed, n, label, truncation, steps...). It is one PNG ``tEXt`` chunk under the keyword
:data:`PROVENANCE_KEY` holding compact JSON; :func:`read_provenance` gives it back.

The record is a dataclass, so its fields *are* the allowlist: nothing else can be written. Values are
plain scalars (ints, finite floats, booleans, short strings), and a string that looks like a file path,
an access token (``atl_...``), an e-mail address, a long secret-like run of characters or the login name
of the user running Atelier is refused (:class:`Provenance`) or dropped (:meth:`Provenance.from_mapping`):
a user name, a token or a path cannot reach an output through a model's name or a class name either.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import hashlib
import json
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier._version import __version__
from atelier.data.base import DataError

#: The PNG ``tEXt`` keyword of the record.
PROVENANCE_KEY = "atelier:provenance"
#: The longest string value kept (model and class names are far shorter).
MAX_TEXT = 128
#: The most bytes of record JSON :func:`read_provenance` reads (ours are a few hundred).
MAX_RECORD_BYTES = 4096

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
_DRIVE = re.compile(r"^[A-Za-z]:")
# 32+ letters and digits without a separator: what keys, tokens and hashes look like, never a name
_SECRET_RUN = re.compile(r"[A-Za-z0-9+=]{32,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ProvenanceError(ValueError):
    """A provenance value that is not allowed (a path, a token, an e-mail, not a plain scalar...)."""


@functools.lru_cache(maxsize=1)
def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no passwd entry, no USER variable
        return ""


def text_problem(text: str) -> str | None:
    """Why ``text`` may not be written into an image's provenance (a path, a token...), or None."""
    if len(text) > MAX_TEXT:
        return f"longer than {MAX_TEXT} characters"
    if _CONTROL.search(text):
        return "holds control characters"
    if "/" in text or "\\" in text or text.startswith("~") or _DRIVE.match(text):
        return "looks like a file path"
    if "atl_" in text.lower():
        return "looks like an access token"
    if _EMAIL.search(text):
        return "looks like an e-mail address"
    if _SECRET_RUN.search(text):
        return "looks like a key or token (32 or more letters and digits in a row)"
    login = _login_name()
    if len(login) >= 2 and text.strip().lower() == login.lower():
        return "is the login name of the user running Atelier"
    return None


@dataclass(frozen=True)
class Provenance:
    """How a generated image was made. Each field is optional (None: not recorded); the fields are the
    allowlist, and every value is checked (:class:`ProvenanceError` for one that is not allowed)."""

    operation: str | None = None  # what made it: "sample" (generation)...
    model_family: str | None = None  # dcgan, vae, ...
    model_name: str | None = None  # the name the studio serves it under: never its folder's path
    weights_sha256: str | None = None  # of the weights file (model.safetensors, or the encrypted envelope)
    seed: int | None = None
    n: int | None = None  # images drawn together
    index: int | None = None  # this image's place among them
    label: int | None = None  # its class, for a class-conditional model
    truncation: float | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None  # a flow model's ODE solver
    nfe: int | None = None  # network evaluations per image
    strength: float | None = None
    method: str | None = None
    direction: str | None = None
    software: str = "atelier"
    version: str = field(default=__version__)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            problem = _value_problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise ProvenanceError(f"provenance {f.name}: {problem}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Provenance":
        """The allowed part of ``values``: keys not on the allowlist and values that are not allowed are
        dropped (never an error), so a record can be built from request parameters or a model's config."""
        kept = {}
        for key, value in values.items():
            if key in _FIELDS and value is not None and _value_problem(key, value) is None:
                kept[key] = float(value) if _FIELDS[key] is float else value
        return cls(**kept)

    def record(self) -> dict[str, Any]:
        """The fields that are set, as the JSON object written."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def to_text(self) -> str:
        """The record as compact ASCII JSON, keys sorted (the same record, the same bytes)."""
        return json.dumps(self.record(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def replace(self, **changes: Any) -> "Provenance":
        """A copy with ``changes`` (checked like any value)."""
        return dataclasses.replace(self, **changes)


def _field_type(annotation: object) -> type:
    # the annotations are strings here ("int | None"): postponed evaluation
    text = str(annotation)
    return int if text.startswith("int") else float if text.startswith("float") else str


_FIELDS: dict[str, type] = {f.name: _field_type(f.type) for f in dataclasses.fields(Provenance)}
#: The keys a provenance record may hold.
ALLOWED_KEYS = frozenset(_FIELDS)


def _value_problem(key: str, value: Any) -> str | None:
    if value is None:
        return None
    kind = _FIELDS[key]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        if abs(value) >= 2**63:
            return "is out of range"
        return None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        return None if math.isfinite(value) else "must be finite"
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if key == "weights_sha256":
        return None if _HEX64.match(value) else "must be 64 lowercase hex digits"
    return text_problem(value)


# -- reading ---------------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[str, bytes]]:
    """The chunks of a PNG file as (type, data), in order: a check of what a PNG carries besides its
    pixels. Raises :class:`DataError` for what is not a well-formed PNG chunk sequence."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise DataError("not a PNG file (no PNG signature)")
    chunks, at = [], 8
    while at < len(data):
        if at + 8 > len(data):
            raise DataError(f"truncated PNG chunk header at byte {at}")
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8].decode("latin-1")
        end = at + 12 + length
        if end > len(data):
            raise DataError(f"PNG chunk {kind!r} at byte {at} runs past the end of the file")
        chunks.append((kind, data[at + 8:at + 8 + length]))
        at = end
        if kind == "IEND":
            break
    return chunks


def read_provenance(source: bytes | str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record of a PNG Atelier wrote (PNG bytes or a file's path), as the JSON object it
    holds; None when it holds none. Raises :class:`DataError` for a malformed PNG or record.

    The record is returned as written, not filtered: check it against :data:`ALLOWED_KEYS` (or use
    :meth:`Provenance.from_mapping`) before trusting an image of unknown origin."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    found = None
    for kind, body in png_chunks(bytes(data)):
        if kind == "IDAT":  # the record is written before the pixels
            break
        if kind != "tEXt":
            continue
        keyword, _, text = body.partition(b"\x00")
        if keyword.decode("latin-1") != PROVENANCE_KEY:
            continue
        if found is not None:
            raise DataError(f"the PNG holds more than one {PROVENANCE_KEY!r} record")
        if len(text) > MAX_RECORD_BYTES:
            raise DataError(f"the {PROVENANCE_KEY!r} record is {len(text):,} bytes, over {MAX_RECORD_BYTES:,}")
        try:
            found = json.loads(text.decode("latin-1"))
        except ValueError as exc:
            raise DataError(f"the {PROVENANCE_KEY!r} record is not JSON ({exc})") from None
        if not isinstance(found, dict):
            raise DataError(f"the {PROVENANCE_KEY!r} record is not a JSON object")
    return found


def png_info(provenance: Provenance | None):
    """PIL's ``pnginfo`` for a PNG carrying ``provenance`` (None: no text chunk at all)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if provenance is not None:
        info.add_text(PROVENANCE_KEY, provenance.to_text())
    return info


# -- the weights' hash -----------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_sha256(folder: str | os.PathLike) -> str | None:
    """The SHA-256 of a saved model's weights file in ``folder`` (``model.safetensors``, else the encrypted
    envelope ``model.atlenc``), or None when there is neither. Remembered per file, size and mtime, so a
    server hashing it for every answer reads it once."""
    from atelier.protect.envelope import ENVELOPE_NAME

    for name in ("model.safetensors", ENVELOPE_NAME):
        path = Path(folder) / name
        try:
            stat = path.stat()
        except OSError:
            continue
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if len(_DIGESTS) > 256:
                _DIGESTS.clear()
            _DIGESTS[key] = digest.hexdigest()
        return _DIGESTS[key]
    return None


__all__ = ["ALLOWED_KEYS", "PROVENANCE_KEY", "Provenance", "ProvenanceError", "png_chunks", "png_info",
           "read_provenance", "text_problem", "weights_sha256"]
