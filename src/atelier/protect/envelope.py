"""Encrypted envelopes: a model's files sealed with AES-256-GCM, opened only into memory.

Layout (format 1; every integer big-endian; written down with a test vector in ``docs/envelope.md``)::

    0   8    magic  b"ATLENC\\r\\n"
    8   2    format version (1)
    10  1    active key slot (0 or 1)
    11  1    reserved (0)
    12  4    H, the length of the header
    16  H    header: canonical JSON (cipher, chunk size, plaintext size and SHA-256, file id, content)
    ..  512  key slot 0 } one holds the data key wrapped by the key-encryption key (KEK), the other is
    ..  512  key slot 1 } all zeros; rotation writes the new wrap into the free slot, then switches
    ..       chunks: AES-256-GCM(data key, nonce = chunk index (12 bytes), AAD) of CHUNK bytes each,
             the last one shorter (or empty), each followed by its 16-byte tag

Every chunk's associated data is ``SHA-256(magic || version || H || header) || index (8) || final
(1)``: a changed header, a reordered, repeated, dropped or appended chunk, or a truncated file fails to
authenticate. The data key (256 random bits, fresh for every file, so chunk-index nonces never repeat
under one key) is wrapped with AES-256-GCM under the KEK with that header digest, the key id and the KDF
parameters as associated data. The KEK comes from a key file, an environment variable, or a passphrase
through Argon2id (``argon2-cffi``) or scrypt. ``rotate`` re-wraps the data key: only a slot changes, so it
takes the same time for 1 KB and 1 GB, and the old KEK no longer opens the file.

The plaintext is a bundle: ``u32 n`` + ``config.json`` (n bytes) + ``model.safetensors``. Opening it
verifies everything (every chunk, the length, the SHA-256) before returning a byte; nothing is written.
Every failure is one :class:`IntegrityError` (or :class:`WrongKeyError`, a subclass) naming what failed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.io import FileFormatError, atomic_open

MAGIC = b"ATLENC\r\n"
VERSION = 1
PREFIX = struct.Struct(">8sHBBI")  # magic, version, active slot, reserved, header length
SLOT_SIZE = 512
TAG = 16
DEFAULT_CHUNK = 1 << 20
MAX_HEADER = 64 * 1024
MAX_CHUNK = 64 << 20
ENVELOPE_NAME = "model.atlenc"
BUNDLE = "atelier-model-bundle/1"
KEY_ENV = "ATELIER_MODEL_KEY"
#: Argon2id cost (RFC 9106's second recommended option, with 64 MiB) and scrypt's (2**15, 8, 1).
ARGON2 = {"time_cost": 3, "memory_kib": 65536, "parallelism": 4}
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
#: The most a key slot may ask of a passphrase's KDF, checked before it runs: the slot is read from the file
#: before anything is authenticated, so its parameters must not be able to make opening hang or exhaust
#: memory. 1 GiB of memory (16 times the default) and 16 times the default's work for either KDF.
MAX_KDF_MEMORY = 1 << 30
MAX_ARGON2_WORK = 16 * ARGON2["time_cost"] * ARGON2["memory_kib"]  # passes x KiB
MAX_SCRYPT_WORK = 16 * SCRYPT["n"] * SCRYPT["r"] * SCRYPT["p"]  # n x r x p


class IntegrityError(FileFormatError):
    """The envelope is not intact: altered, truncated, reordered, or not an envelope at all."""


class WrongKeyError(IntegrityError):
    """The key does not open this envelope (a wrong key, or an altered key slot)."""


# -- keys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A key-encryption key: 32 raw bytes, or a passphrase to derive them from (per file, salted)."""

    raw: bytes | None = None
    passphrase: bytes | None = None
    kdf: str = "argon2id"  # for passphrases: argon2id | scrypt

    def __post_init__(self) -> None:
        if (self.raw is None) == (self.passphrase is None):
            raise ValueError("a key is either 32 raw bytes or a passphrase")
        if self.raw is not None and len(self.raw) != 32:
            raise ValueError(f"a raw key is 32 bytes (256 bits), got {len(self.raw)}")
        if self.passphrase is not None and len(self.passphrase) < 8:
            raise ValueError("a passphrase has at least 8 characters")
        if self.kdf not in ("argon2id", "scrypt"):
            raise ValueError(f"kdf must be argon2id or scrypt, got {self.kdf!r}")

    def __repr__(self) -> str:  # never print key material
        return f"Key({'raw' if self.raw is not None else self.kdf + ' passphrase'})"

    @classmethod
    def generate(cls) -> "Key":
        return cls(raw=secrets.token_bytes(32))

    @classmethod
    def from_text(cls, text: str, what: str = "the key") -> "Key":
        """A raw key written as 64 hex digits or URL-safe base64 (what ``atelier protect keygen`` writes)."""
        text = text.strip()
        try:
            raw = bytes.fromhex(text) if len(text) == 64 else base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            raise ValueError(f"{what} is not a 256-bit key (64 hex digits or base64 of 32 bytes)") from None
        if len(raw) != 32:
            raise ValueError(f"{what} is not a 256-bit key (64 hex digits or base64 of 32 bytes)")
        return cls(raw=raw)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Key":
        p = Path(path)
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the key file {p} ({type(exc).__name__})") from None
        return cls.from_text(text, f"the key file {p}")

    @classmethod
    def from_env(cls, name: str = KEY_ENV) -> "Key":
        value = os.environ.get(name)
        if not value:
            raise ValueError(f"the environment variable {name} holds no key")
        return cls.from_text(value, f"the environment variable {name}")

    def to_text(self) -> str:
        assert self.raw is not None
        return base64.urlsafe_b64encode(self.raw).decode().rstrip("=")

    def key_id(self) -> str:
        """A public name for a raw key (a hash of it, not the key); ``passphrase`` for passphrases."""
        if self.raw is None:
            return "passphrase"
        return hashlib.sha256(b"atelier-kek-id\0" + self.raw).hexdigest()[:16]

    def derive(self, kdf: dict[str, Any]) -> bytes:
        """The 32-byte KEK for the slot's KDF parameters."""
        if kdf["name"] == "raw":
            if self.raw is None:
                raise WrongKeyError("this file was sealed with a key file, not a passphrase")
            return self.raw
        if self.passphrase is None:
            raise WrongKeyError("this file was sealed with a passphrase, not a key file")
        salt = bytes.fromhex(kdf["salt"])
        if kdf["name"] == "argon2id":
            from argon2.low_level import Type, hash_secret_raw

            return hash_secret_raw(self.passphrase, salt, time_cost=int(kdf["time_cost"]),
                                   memory_cost=int(kdf["memory_kib"]), parallelism=int(kdf["parallelism"]),
                                   hash_len=32, type=Type.ID)
        if kdf["name"] == "scrypt":
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            return Scrypt(salt=salt, length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(
                self.passphrase)
        raise IntegrityError(f"unknown key derivation {kdf['name']!r} in the key slot")

    def new_kdf(self) -> dict[str, Any]:
        if self.raw is not None:
            return {"name": "raw"}
        salt = secrets.token_hex(16)
        return {"name": "argon2id", "salt": salt, **ARGON2} if self.kdf == "argon2id" else \
            {"name": "scrypt", "salt": salt, **SCRYPT}


def _check_kdf(kdf: Any) -> dict[str, Any]:
    """Refuse KDF parameters that would make opening a file hang or exhaust memory (a hostile slot): at
    most :data:`MAX_KDF_MEMORY` bytes and 16 times the default's work (:data:`MAX_ARGON2_WORK`,
    :data:`MAX_SCRYPT_WORK`), and only what the libraries accept (Argon2 needs 8 KiB per lane)."""

    def ints(*names: str) -> bool:
        return all(type(kdf.get(k)) is int for k in names)  # true, false and 3.0 are not costs

    ok = isinstance(kdf, dict) and kdf.get("name") in ("raw", "argon2id", "scrypt")
    if ok and kdf["name"] == "argon2id":
        ok = ints("time_cost", "memory_kib", "parallelism") and 1 <= kdf["time_cost"] <= 20 and \
            1 <= kdf["parallelism"] <= 64 and 8 * kdf["parallelism"] <= kdf["memory_kib"] <= MAX_KDF_MEMORY >> 10 \
            and kdf["time_cost"] * kdf["memory_kib"] <= MAX_ARGON2_WORK
    if ok and kdf["name"] == "scrypt":
        ok = ints("n", "r", "p") and 2 <= kdf["n"] <= 1 << 20 and kdf["n"] & (kdf["n"] - 1) == 0 and \
            1 <= kdf["r"] <= 32 and 1 <= kdf["p"] <= 16 and 128 * kdf["n"] * kdf["r"] <= MAX_KDF_MEMORY and \
            kdf["n"] * kdf["r"] * kdf["p"] <= MAX_SCRYPT_WORK
    if ok and kdf["name"] != "raw":
        ok = isinstance(kdf.get("salt"), str) and len(kdf["salt"]) == 32
    if not ok:
        raise IntegrityError("the key slot's key-derivation parameters are malformed or out of bounds")
    return kdf


# -- the format ---------------------------------------------------------------------------------------


def _aesgcm(key: bytes):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _chunk_aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, 1 if final else 0)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _slot_bytes(slot: dict[str, Any]) -> bytes:
    data = _canonical(slot)
    if len(data) > SLOT_SIZE:
        raise ValueError("key slot too large")
    return data + b"\0" * (SLOT_SIZE - len(data))


def _wrap(data_key: bytes, key: Key, header_digest: bytes, nonce: bytes | None = None) -> dict[str, Any]:
    kdf = key.new_kdf()
    key_id = key.key_id()
    nonce = nonce or secrets.token_bytes(12)
    aad = header_digest + _canonical({"key_id": key_id, "kdf": kdf})
    wrapped = _aesgcm(key.derive(kdf)).encrypt(nonce, data_key, aad)
    return {"key_id": key_id, "kdf": kdf, "nonce": nonce.hex(), "wrapped": wrapped.hex()}


def _unwrap(slot: dict[str, Any], key: Key, header_digest: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    kdf = _check_kdf(slot.get("kdf"))
    key_id = slot.get("key_id")
    if not isinstance(key_id, str) or not isinstance(slot.get("nonce"), str) or not isinstance(slot.get("wrapped"), str):
        raise IntegrityError("the key slot is malformed")
    if kdf["name"] == "raw" and key.raw is not None and key_id != key.key_id():
        raise WrongKeyError(f"this file is sealed with key {key_id}, not with the key given ({key.key_id()})")
    try:
        nonce, wrapped = bytes.fromhex(slot["nonce"]), bytes.fromhex(slot["wrapped"])
        aad = header_digest + _canonical({"key_id": key_id, "kdf": kdf})
        data_key = _aesgcm(key.derive(kdf)).decrypt(nonce, wrapped, aad)
    except (InvalidTag, ValueError):
        raise WrongKeyError("the key does not open this file (a wrong key or passphrase, or an altered key slot "
                            "or header)") from None
    if len(data_key) != 32:
        raise IntegrityError("the key slot holds a data key of the wrong size")
    return data_key


@dataclass
class _Parsed:
    header: dict[str, Any]
    header_digest: bytes
    active: int
    slots_at: int
    body_at: int
    slots: tuple[bytes, bytes]


def _read_prefix(f, size: int, where: str) -> _Parsed:
    raw = f.read(PREFIX.size)
    if len(raw) < PREFIX.size:
        raise IntegrityError(f"{where}: too short to be an Atelier envelope")
    magic, version, active, reserved, h = PREFIX.unpack(raw)
    if magic != MAGIC:
        raise IntegrityError(f"{where}: not an Atelier envelope (no {MAGIC!r} magic)")
    if version != VERSION:
        raise IntegrityError(f"{where}: envelope format version {version}; this Atelier reads version {VERSION}")
    if active not in (0, 1) or reserved != 0:
        raise IntegrityError(f"{where}: the envelope's key-slot selector is altered")
    if not 2 <= h <= MAX_HEADER or PREFIX.size + h + 2 * SLOT_SIZE > size:
        raise IntegrityError(f"{where}: the header length is altered or the file is truncated")
    header_bytes = f.read(h)
    header = _canonical_object(header_bytes, f"{where}: the envelope's header")
    digest = hashlib.sha256(raw[:8] + raw[8:10] + raw[12:16] + header_bytes).digest()
    slots = (f.read(SLOT_SIZE), f.read(SLOT_SIZE))
    return _Parsed(header, digest, active, PREFIX.size + h, PREFIX.size + h + 2 * SLOT_SIZE, slots)


def _check_header(header: dict[str, Any], where: str) -> tuple[int, int, bytes]:
    try:
        chunk, size, sha = header["chunk_size"], header["plaintext_size"], bytes.fromhex(header["plaintext_sha256"])
        ok = header["cipher"] == "AES-256-GCM" and header["content"] == BUNDLE and type(chunk) is int and \
            type(size) is int and 1 <= chunk <= MAX_CHUNK and size >= 0 and len(sha) == 32 and \
            isinstance(header["file_id"], str)  # ints only: 1e400 reads as inf, and true as 1
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise IntegrityError(f"{where}: the envelope's header is malformed")
    return chunk, size, sha


def _slot(parsed: _Parsed, where: str) -> dict[str, Any]:
    active, inactive = parsed.slots[parsed.active], parsed.slots[1 - parsed.active]
    if any(inactive):
        raise IntegrityError(f"{where}: the unused key slot is not empty: altered, or a key rotation was "
                             "interrupted (finish it with `atelier protect rotate` and the new key)")
    return _canonical_object(active.rstrip(b"\0"), f"{where}: the key slot")


def _canonical_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object written canonically, or IntegrityError: any other bytes mean an alteration."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting such as [[[[...]]]]
        raise IntegrityError(f"{what} is not valid JSON (altered)") from None
    if not isinstance(value, dict) or _canonical(value) != data:
        raise IntegrityError(f"{what} is altered")
    return value


# -- sealing and opening ----------------------------------------------------------------------------


def bundle(config: bytes, weights: bytes) -> bytes:
    return struct.pack(">I", len(config)) + config + weights


def unbundle(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < 4:
        raise IntegrityError("the sealed bundle is too short")
    (n,) = struct.unpack(">I", data[:4])
    if 4 + n > len(data):
        raise IntegrityError("the sealed bundle's config length is wrong")
    return data[4:4 + n], data[4 + n:]


def seal(plaintext: bytes, key: Key, path: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK,
         data_key: bytes | None = None, file_id: str | None = None, wrap_nonce: bytes | None = None) -> Path:
    """Write ``plaintext`` to ``path`` as an envelope opened by ``key`` (atomically: a crash leaves no file).
    ``data_key``/``file_id``/``wrap_nonce`` are for test vectors only; by default all are fresh and random
    (a repeated data key would repeat the chunk nonces)."""
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must lie in 1..{MAX_CHUNK}")
    data_key = data_key or secrets.token_bytes(32)
    header = {"cipher": "AES-256-GCM", "chunk_size": chunk_size, "content": BUNDLE,
              "file_id": file_id or secrets.token_hex(16), "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
              "plaintext_size": len(plaintext)}
    header_bytes = _canonical(header)
    prefix = PREFIX.pack(MAGIC, VERSION, 0, 0, len(header_bytes))
    digest = hashlib.sha256(prefix[:10] + prefix[12:16] + header_bytes).digest()
    slot = _slot_bytes(_wrap(data_key, key, digest, wrap_nonce))
    aead = _aesgcm(data_key)
    n_chunks = max(1, -(-len(plaintext) // chunk_size))
    with atomic_open(path) as f:
        f.write(prefix + header_bytes + slot + b"\0" * SLOT_SIZE)
        for i in range(n_chunks):
            piece = plaintext[i * chunk_size:(i + 1) * chunk_size]
            f.write(aead.encrypt(_nonce(i), piece, _chunk_aad(digest, i, i == n_chunks - 1)))
    return Path(path)


def open_envelope(path: str | os.PathLike, key: Key) -> bytes:
    """The plaintext of the envelope at ``path``, fully verified, in memory only. FileNotFoundError when
    it cannot be opened; IntegrityError (WrongKeyError for the key) for anything else. Memory: the
    plaintext, whose size the header declares and the file's size must match before a chunk is read, and
    the KDF's (at most :data:`MAX_KDF_MEMORY`, for a passphrase)."""
    from cryptography.exceptions import InvalidTag

    p = Path(path)
    where = str(p)
    try:
        size = p.stat().st_size
        f = open(p, "rb")
    except OSError as exc:
        raise FileNotFoundError(f"{where}: cannot open the envelope ({exc.strerror})") from None
    with f:
        parsed = _read_prefix(f, size, where)
        chunk, plain_size, sha = _check_header(parsed.header, where)
        n_chunks = max(1, -(-plain_size // chunk))
        expected = parsed.body_at + plain_size + n_chunks * TAG
        if size != expected:
            raise IntegrityError(f"{where}: the file is {size:,} bytes where its header says {expected:,}: "
                                 f"{'truncated' if size < expected else 'extended'}")
        data_key = _unwrap(_slot(parsed, where), key, parsed.header_digest)
        aead = _aesgcm(data_key)
        out = bytearray()
        f.seek(parsed.body_at)
        for i in range(n_chunks):
            length = min(chunk, plain_size - i * chunk) + TAG
            piece = f.read(length)
            try:
                out += aead.decrypt(_nonce(i), piece, _chunk_aad(parsed.header_digest, i, i == n_chunks - 1))
            except InvalidTag:
                raise IntegrityError(f"{where}: chunk {i} of {n_chunks} does not authenticate (altered, "
                                     "reordered or truncated)") from None
    if len(out) != plain_size or hashlib.sha256(out).digest() != sha:
        raise IntegrityError(f"{where}: the opened data does not match its recorded SHA-256")
    return bytes(out)


@dataclass(frozen=True)
class EnvelopeInfo:
    path: Path
    version: int
    key_id: str
    kdf: str
    chunk_size: int
    plaintext_size: int
    plaintext_sha256: str
    file_id: str


def inspect_envelope(path: str | os.PathLike) -> EnvelopeInfo:
    """What an envelope says about itself, without a key (nothing secret is in it). Reads the prefix,
    header and key slots only (at most :data:`MAX_HEADER` + 1 KiB). FileNotFoundError when it cannot be
    opened, IntegrityError when it is not an intact envelope's prefix."""
    p = Path(path)
    try:
        size = p.stat().st_size
        f = open(p, "rb")
    except OSError as exc:
        raise FileNotFoundError(f"{p}: cannot open the envelope ({exc.strerror})") from None
    with f:
        parsed = _read_prefix(f, size, str(p))
    _check_header(parsed.header, str(p))
    slot = _slot(parsed, str(p))
    kdf = _check_kdf(slot.get("kdf"))
    h = parsed.header
    return EnvelopeInfo(p, VERSION, str(slot.get("key_id")), kdf["name"], int(h["chunk_size"]),
                        int(h["plaintext_size"]), str(h["plaintext_sha256"]), str(h["file_id"]))


def rotate(path: str | os.PathLike, old: Key, new: Key) -> None:
    """Re-wrap the data key of ``path`` under ``new``: afterwards ``new`` opens it and ``old`` does not.

    The weights are not re-encrypted. Crash-safe: the new wrap goes into the free slot (synced), then the
    selector byte switches to it (synced), then the old slot is zeroed (synced). If a crash leaves both
    slots filled, calling ``rotate`` again with the same keys finishes the job."""
    p = Path(path)
    with open(p, "r+b") as f:
        parsed = _read_prefix(f, p.stat().st_size, str(p))
        _check_header(parsed.header, str(p))
        free = 1 - parsed.active
        if any(parsed.slots[free]):  # an interrupted rotation: the selector may already point at the new wrap
            slot = _canonical_object(parsed.slots[parsed.active].rstrip(b"\0"), f"{p}: the key slot")
            _unwrap(slot, new, parsed.header_digest)  # the active slot must open with the new key
            f.seek(parsed.slots_at + free * SLOT_SIZE)
            f.write(b"\0" * SLOT_SIZE)
            f.flush()
            os.fsync(f.fileno())
            return
        data_key = _unwrap(_slot(parsed, str(p)), old, parsed.header_digest)
        f.seek(parsed.slots_at + free * SLOT_SIZE)
        f.write(_slot_bytes(_wrap(data_key, new, parsed.header_digest)))
        f.flush()
        os.fsync(f.fileno())
        f.seek(10)
        f.write(bytes([free]))
        f.flush()
        os.fsync(f.fileno())
        f.seek(parsed.slots_at + parsed.active * SLOT_SIZE)
        f.write(b"\0" * SLOT_SIZE)
        f.flush()
        os.fsync(f.fileno())


# -- model directories ------------------------------------------------------------------------------


def seal_model_dir(model_dir: str | os.PathLike, out_dir: str | os.PathLike, key: Key, **kwargs) -> Path:
    """``out_dir/model.atlenc`` sealing ``model_dir``'s ``config.json`` and ``model.safetensors``."""
    src = Path(model_dir)
    try:
        config, weights = (src / "config.json").read_bytes(), (src / "model.safetensors").read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"{src}: a model directory needs config.json and model.safetensors "
                                f"({exc.strerror}: {exc.filename})") from None
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return seal(bundle(config, weights), key, out / ENVELOPE_NAME, **kwargs)


def open_model(path: str | os.PathLike, key: Key) -> tuple[dict[str, Any], bytes]:
    """(config, safetensors bytes) of a sealed model (``path``: the envelope or its folder), in memory.
    Raises as :func:`open_envelope`, and IntegrityError when the sealed config is not a JSON object."""
    p = Path(path)
    envelope = p / ENVELOPE_NAME if p.is_dir() else p
    config, weights = unbundle(open_envelope(envelope, key))
    try:
        parsed = json.loads(config)
    except (ValueError, RecursionError):
        raise IntegrityError(f"{envelope}: the sealed config is not JSON") from None
    if not isinstance(parsed, dict):
        raise IntegrityError(f"{envelope}: the sealed config is not a JSON object")
    return parsed, weights


def is_sealed(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an encrypted model: a folder holding ``model.atlenc``, or a file that is an
    envelope by its magic or by its ``.atlenc`` name (so that an envelope with a damaged magic is reported
    as a damaged envelope, not as a folder without a model)."""
    p = Path(path)
    if p.is_dir():
        return (p / ENVELOPE_NAME).is_file()
    if p.suffix == ".atlenc":
        return p.is_file()
    try:
        with open(p, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
