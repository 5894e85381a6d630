"""Signed model manifests: the SHA-256 of every file of a model directory, signed with Ed25519.

``sign_directory`` writes two files into the directory it signs:

- ``MANIFEST.json``: every other regular file of the directory (recursively) with its size and SHA-256,
  the time of signing, a signer label and the signing key's fingerprint, serialised canonically
  (sorted keys, no whitespace, UTF-8);
- ``MANIFEST.sig``: the 64-byte Ed25519 signature over the exact bytes of ``MANIFEST.json``, as one line
  of base64.

``verify_directory`` checks the signature under a set of trusted public keys, then that the directory
holds exactly the signed files with the signed contents: a changed, truncated, missing, added or renamed
file fails, and so does any symbolic link or special file. Every failure raises :class:`SignatureError`
(a :class:`~atelier.io.FileFormatError`) whose message names what failed and never holds key material.
The format, the trust model and a worked example are in ``docs/signing.md``.

Keys: private keys are PKCS#8 PEM (encrypted when a passphrase is given, file mode 0600); public keys
are one OpenSSH line (``ssh-ed25519 AAAA... [comment]``). Loading also accepts PEM SubjectPublicKeyInfo
public keys and OpenSSH private keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Union

# InternalError: OpenSSL's own failure on a well-formed DER holding a key of the wrong length
# ("key setup failed"), which the library does not map to ValueError (found by the reader fuzz)
from cryptography.exceptions import InternalError, InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from atelier.io import FileFormatError, atomic_open, atomic_write_bytes, display_path

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "VERSION",
    "ManifestEntry",
    "SignatureError",
    "VerifiedManifest",
    "generate_keypair",
    "is_encrypted_private_key",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
    "sign_directory",
    "verify_directory",
]

MANIFEST_NAME = "MANIFEST.json"
SIGNATURE_NAME = "MANIFEST.sig"
FORMAT = "atelier-signed-manifest"
VERSION = 1

CHUNK = 1 << 20  # files are hashed 1 MiB at a time
MAX_MANIFEST_BYTES = 64 << 20
MAX_SIGNATURE_BYTES = 1024
MAX_KEY_BYTES = 64 << 10
PRIVATE_KEY_MODE = 0o600

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the scan must not block the open
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"ed25519:[0-9a-f]{16}")
_MANIFEST_FIELDS = {"format", "version", "created", "signer", "key_fingerprint", "files"}
_ENTRY_FIELDS = {"path", "sha256", "size"}

PathLike = Union[str, "os.PathLike[str]"]
PublicKeyLike = Union[Ed25519PublicKey, Ed25519PrivateKey, str, bytes, "os.PathLike[str]"]


class SignatureError(FileFormatError):
    """A signature, a signed manifest or a key cannot be made, read or verified; the message says which
    check failed and on what file (never any key material)."""


@dataclass(frozen=True)
class ManifestEntry:
    """One signed file: its path relative to the directory (POSIX), SHA-256 (lowercase hex) and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class VerifiedManifest:
    """What :func:`verify_directory` vouches for: the key that signed (its fingerprint), the signer label,
    the signed files (sorted by path) and when they were signed (UTC)."""

    fingerprint: str
    signer: str
    files: tuple[ManifestEntry, ...]
    created: datetime


# --------------------------------------------------------------------------------------------- keys


def key_fingerprint(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``"ed25519:"`` and the first 16 hex digits of the SHA-256 of the key's 32 raw public bytes.

    A label to recognise a key by, not a trust decision: verification always checks the signature under
    the trusted keys themselves."""
    if isinstance(public_key, Ed25519PrivateKey):
        public_key = public_key.public_key()
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"key_fingerprint takes an Ed25519 key, not {type(public_key).__name__}")
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _passphrase_bytes(passphrase: bytes | str | None) -> bytes | None:
    if passphrase is None:
        return None
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not data:
        raise ValueError("an empty passphrase protects nothing; give a non-empty one or none")
    return data


def generate_keypair(private_path: PathLike, public_path: PathLike | None = None, *,
                     passphrase: bytes | str | None = None, comment: str = "") -> tuple[Path, Path]:
    """A new Ed25519 key pair: the private key at ``private_path`` (PKCS#8 PEM, mode 0600; encrypted with
    the best available scheme when ``passphrase`` is given, at least 8 characters), the public key at
    ``public_path`` (default: ``private_path`` + ``.pub``) as one OpenSSH line ``ssh-ed25519 AAAA... [comment]``.

    Both are written atomically. An existing file at either path is never overwritten: FileExistsError
    names it. Returns ``(private_path, public_path)``."""
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path is not None else private_path.with_name(private_path.name + ".pub")
    if private_path == public_path:
        raise ValueError(f"{private_path}: the private and the public key need two different files")
    if "\n" in comment or "\r" in comment:
        raise ValueError("a public key comment is one line")
    secret = _passphrase_bytes(passphrase)
    if secret is not None and len(secret) < 8:
        raise ValueError("a passphrase has at least 8 characters")
    for path, what in ((private_path, "private key"), (public_path, "public key")):
        if os.path.lexists(path):
            raise FileExistsError(f"{path}: a file is already there; refusing to overwrite it with a new {what}")
    key = Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(secret) if secret is not None
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    with atomic_open(private_path) as f:
        os.fchmod(f.fileno(), PRIVATE_KEY_MODE)  # before any key byte is written
        f.write(pem)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment.strip():
        line += b" " + comment.strip().encode("utf-8")
    atomic_write_bytes(public_path, line + b"\n")
    return private_path, public_path


def _read_small(path: Path, limit: int, what: str) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{display_path(path)}: no {what} file there")
    with open(path, "rb") as f:
        data = _read_at_most(f, limit)
    if len(data) > limit:
        raise SignatureError(f"{path}: too large for {what} file ({limit} bytes at most)")
    return data


def is_encrypted_private_key(path: PathLike) -> bool:
    """Whether the private key file at ``path`` needs a passphrase (an encrypted PKCS#8 PEM, or an
    OpenSSH private key protected by one)."""
    data = _read_small(Path(path), MAX_KEY_BYTES, "private key")
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
        return True
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        try:
            serialization.load_ssh_private_key(data, password=None)
        except TypeError:  # "password-protected, but password was not given"
            return True
        except (ValueError, UnsupportedAlgorithm, InternalError):
            return False
    return False


def load_private_key(path: PathLike, passphrase: bytes | str | None = None) -> Ed25519PrivateKey:
    """The Ed25519 private key in the file at ``path`` (PKCS#8 PEM as :func:`generate_keypair` writes,
    or an OpenSSH private key), decrypted with ``passphrase`` when it is encrypted.

    FileNotFoundError if missing; SignatureError naming the file if it is not such a key, is encrypted and
    no passphrase was given, the passphrase is wrong, or a passphrase was given for an unencrypted key."""
    path = Path(path)
    data = _read_small(path, MAX_KEY_BYTES, "private key")
    secret = _passphrase_bytes(passphrase)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----" in data
    if encrypted and secret is None:
        raise SignatureError(f"{path}: the private key is encrypted; give its passphrase")
    if not encrypted and not openssh and secret is not None:
        raise SignatureError(f"{path}: the private key is not encrypted, but a passphrase was given")
    try:
        if openssh:
            key = serialization.load_ssh_private_key(data, password=secret)
        else:
            key = serialization.load_pem_private_key(data, password=secret)
    except (TypeError, ValueError, UnsupportedAlgorithm, InternalError) as exc:
        # no library text in the message: it never holds key bytes, but it need not be shown either
        if openssh and isinstance(exc, TypeError):
            reason = ("the private key is encrypted; give its passphrase" if secret is None
                      else "the private key is not encrypted, but a passphrase was given")
        elif openssh and isinstance(exc, UnsupportedAlgorithm):
            reason = "its encryption needs a package that is not installed (bcrypt)"
        elif encrypted or (openssh and secret is not None):
            reason = "wrong passphrase, or the file is damaged"
        else:
            reason = "not a PEM (PKCS#8) or OpenSSH private key"
        raise SignatureError(f"{path}: cannot load the private key: {reason}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: a {type(key).__name__.lstrip('_')} key, not an Ed25519 private key")
    return key


def _public_from_text(data: bytes, origin: str) -> Ed25519PublicKey:
    text = data.strip()
    if text.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in text:
        raise SignatureError(f"{origin}: a private key where a public key was expected")
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_ssh_public_key(text)
    except (ValueError, UnsupportedAlgorithm, InternalError) as exc:
        raise SignatureError(f"{origin}: not an OpenSSH or PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{origin}: a {type(key).__name__.lstrip('_')} key, not an Ed25519 public key")
    return key


_KEY_TEXT = re.compile(r"\s*(-----BEGIN |#|(ssh|ecdsa|sk)-[\w.@-]+\s+AAAA)")


def _looks_like_key_text(text: str) -> bool:
    return bool(_KEY_TEXT.match(text))


def load_public_key(path_or_pem: PublicKeyLike) -> Ed25519PublicKey:
    """One Ed25519 public key, from: a key object (a private key gives its public half); ``bytes`` or a
    ``str`` holding the key itself (an OpenSSH line ``ssh-ed25519 AAAA...`` or a PEM SubjectPublicKeyInfo
    block); or a path (``str`` or ``os.PathLike``) to a file holding it.

    FileNotFoundError for a missing file; SignatureError if it is not an Ed25519 public key."""
    if isinstance(path_or_pem, Ed25519PublicKey):
        return path_or_pem
    if isinstance(path_or_pem, Ed25519PrivateKey):
        return path_or_pem.public_key()
    if not isinstance(path_or_pem, (str, bytes, bytearray, memoryview, os.PathLike)):
        raise TypeError(f"load_public_key takes a key, its text or a path, not {type(path_or_pem).__name__}")
    keys = load_public_keys(path_or_pem)
    if len(keys) != 1:
        origin = "public key text" if _is_text(path_or_pem) else str(path_or_pem)
        raise SignatureError(f"{origin}: holds {len(keys)} keys where one was expected (see load_public_keys)")
    return keys[0]


def _is_text(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) or (isinstance(value, str)
                                                                and _looks_like_key_text(value))


def load_public_keys(path_or_text: str | bytes | os.PathLike[str]) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key of a trusted-keys file (or its text, as ``bytes`` or a ``str`` that starts
    like a key): OpenSSH lines, one key a line, with blank lines and ``#`` comments skipped (as in
    ``authorized_keys``), and/or PEM SubjectPublicKeyInfo blocks. SignatureError if there is none or any
    is not an Ed25519 public key; FileNotFoundError for a missing file."""
    if isinstance(path_or_text, (bytes, bytearray, memoryview)):
        data, origin = bytes(path_or_text), "public key text"
    elif isinstance(path_or_text, str) and _looks_like_key_text(path_or_text):
        data, origin = path_or_text.encode("utf-8"), "public key text"
    else:
        path = Path(path_or_text)
        data, origin = _read_small(path, MAX_KEY_BYTES, "public keys"), str(path)
    keys: list[Ed25519PublicKey] = []
    for block in re.findall(rb"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", data, flags=re.S):
        keys.append(_public_from_text(block, origin))
    rest = re.sub(rb"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", lambda m: b"\n" * m.group().count(b"\n"),
                  data, flags=re.S)  # the blocks' lines kept as blank ones, so line numbers stay right
    for number, line in enumerate(rest.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith(b"#"):
            keys.append(_public_from_text(line, f"{origin}, line {number}"))
    if not keys:
        raise SignatureError(f"{origin}: no public key in it")
    return keys


def _trusted_keys(trusted: Iterable[PublicKeyLike] | None) -> list[Ed25519PublicKey]:
    if trusted is None:
        raise ValueError("verify_directory needs the trusted public keys: a signature proves nothing "
                         "without knowing whose key may sign")
    if isinstance(trusted, (str, bytes, os.PathLike, Ed25519PublicKey, Ed25519PrivateKey)):
        trusted = [trusted]
    keys: dict[bytes, Ed25519PublicKey] = {}
    for item in trusted:  # a file or text may hold several keys (an authorized_keys-like list)
        loaded = ([load_public_key(item)] if isinstance(item, (Ed25519PublicKey, Ed25519PrivateKey))
                  else load_public_keys(item))
        for key in loaded:
            keys[key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)] = key
    if not keys:
        raise ValueError("verify_directory needs at least one trusted public key")
    return list(keys.values())


# ---------------------------------------------------------------------------------- the directory


def _scan(root: Path) -> dict[str, Path]:
    """Every regular file under ``root`` by relative POSIX path, but the manifest and signature at its
    top; a symbolic link, a special file or a name that is not UTF-8 raises SignatureError. Links are
    never followed (directories are entered only when they are real directories)."""
    files: dict[str, Path] = {}
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as exc:
            where = "/".join(parts) or "."
            raise SignatureError(f"{root}: cannot list {where}: {exc.strerror or exc}") from exc
        for entry in listing:
            rel_parts = (*parts, entry.name)
            rel = "/".join(rel_parts)
            if not parts and entry.name in (MANIFEST_NAME, SIGNATURE_NAME):
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise SignatureError(f"{root}: file name not UTF-8: {rel!r}") from None
            if entry.is_symlink():
                raise SignatureError(f"{root}: symlink: {rel} (signed directories may not contain links)")
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), rel_parts))
            elif entry.is_file(follow_symlinks=False):
                files[rel] = Path(entry.path)
            else:
                raise SignatureError(f"{root}: not a regular file: {rel}")
    return dict(sorted(files.items()))


def _open_regular(path: Path) -> int:
    """A read descriptor on ``path``, refusing a link at its last component (O_NOFOLLOW) and anything
    but a regular file."""
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(0, "not a regular file", str(path))
    return fd


def _hash_file(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a regular file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with os.fdopen(_open_regular(path), "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _encode_signature(signature: bytes) -> bytes:
    return base64.b64encode(signature) + b"\n"


def sign_directory(model_dir: PathLike, private_key: Ed25519PrivateKey | PathLike, *,
                   signer: str = "") -> Path:
    """Sign the directory ``model_dir``: write ``MANIFEST.json`` (every other regular file, recursively,
    with its SHA-256 and size; the time; ``signer``; the key's fingerprint) and ``MANIFEST.sig`` (the
    Ed25519 signature over the manifest's exact bytes, base64), both atomically, replacing earlier ones.

    ``private_key`` is a key or the path of an unencrypted key file (load an encrypted one with
    :func:`load_private_key`). A symbolic link or special file anywhere in the directory raises
    SignatureError: nothing is written. Returns the manifest's path."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory to sign")
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"sign_directory takes an Ed25519 private key, not {type(key).__name__}")
    entries = []
    for rel, path in _scan(root).items():
        try:
            sha256, size = _hash_file(path)
        except OSError as exc:
            raise SignatureError(f"{root}: cannot read {rel}: {exc.strerror or exc}") from exc
        entries.append({"path": rel, "sha256": sha256, "size": size})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "signer": str(signer),
        "key_fingerprint": key_fingerprint(key),
        "files": entries,
    }
    data = _canonical(manifest)
    signature = key.sign(data)
    # the old signature goes first: a crash in between leaves an unsigned directory, never a mismatch
    (root / SIGNATURE_NAME).unlink(missing_ok=True)
    manifest_path = atomic_write_bytes(root / MANIFEST_NAME, data)
    atomic_write_bytes(root / SIGNATURE_NAME, _encode_signature(signature))
    return manifest_path


def _read_signed_file(root: Path, name: str, limit: int) -> bytes:
    path = root / name
    if not os.path.lexists(path):
        raise SignatureError(f"{root}: unsigned: no {name}")
    if path.is_symlink():
        raise SignatureError(f"{root}: symlink: {name} (signed directories may not contain links)")
    try:
        with os.fdopen(_open_regular(path), "rb") as f:
            data = _read_at_most(f, limit)
    except OSError as exc:
        raise SignatureError(f"{root}: cannot read {name}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise SignatureError(f"{root}: {name} is too large ({limit} bytes at most)")
    return data


def _read_at_most(f, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes of ``f``, allocating for what the file holds rather than for ``limit``
    (``read(n)`` reserves n bytes first: 64 MiB for every 1 KiB manifest). The extra byte tells a file
    over the limit, or one that grew since it was measured."""
    return f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)


def _decode_signature(root: Path, data: bytes) -> bytes:
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        signature = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64 or base64.b64encode(signature) != body:
        raise SignatureError(f"{root}: {SIGNATURE_NAME} is malformed: expected one line of base64 "
                             "holding a 64-byte Ed25519 signature")
    return signature


def _claimed_fingerprint(data: bytes) -> str | None:
    try:
        claimed = json.loads(data.decode("utf-8")).get("key_fingerprint")
    except (ValueError, AttributeError, RecursionError):
        return None
    return claimed if isinstance(claimed, str) and _FINGERPRINT.fullmatch(claimed) else None


def _valid_path(path: Any) -> bool:
    if not isinstance(path, str) or not path or "\x00" in path:
        return False
    parts = PurePosixPath(path).parts
    if path.startswith("/") or "/".join(parts) != path:  # no empty components, trailing or double slashes
        return False
    if any(part in (".", "..") for part in parts):
        return False
    return path not in (MANIFEST_NAME, SIGNATURE_NAME)


def _parse_manifest(root: Path, data: bytes) -> tuple[dict[str, Any], tuple[ManifestEntry, ...], datetime]:
    def bad(detail: str) -> SignatureError:
        return SignatureError(f"{root}: manifest malformed: {detail}")

    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad(f"not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if set(manifest) != _MANIFEST_FIELDS:
        missing, unknown = sorted(_MANIFEST_FIELDS - set(manifest)), sorted(set(manifest) - _MANIFEST_FIELDS)
        raise bad("; ".join(filter(None, [missing and f"missing fields {missing}",
                                          unknown and f"unknown fields {unknown}"])))
    if manifest["format"] != FORMAT:
        raise bad(f"format is {manifest['format']!r}, not {FORMAT!r}")
    if type(manifest["version"]) is not int or manifest["version"] != VERSION:
        raise bad(f"version {manifest['version']!r} is not {VERSION} (written by a newer Atelier?)")
    if not isinstance(manifest["signer"], str):
        raise bad("signer is not a string")
    if not isinstance(manifest["key_fingerprint"], str) or not _FINGERPRINT.fullmatch(manifest["key_fingerprint"]):
        raise bad("key_fingerprint is not 'ed25519:' and 16 hex digits")
    created_text = manifest["created"]
    try:
        if not isinstance(created_text, str) or not created_text.endswith("Z"):
            raise ValueError
        created = datetime.strptime(created_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise bad("created is not a UTC time YYYY-MM-DDTHH:MM:SSZ") from None
    if not isinstance(manifest["files"], list):
        raise bad("files is not a list")
    entries: list[ManifestEntry] = []
    for number, item in enumerate(manifest["files"]):
        if not isinstance(item, dict) or set(item) != _ENTRY_FIELDS:
            raise bad(f"files[{number}] is not an object of exactly {sorted(_ENTRY_FIELDS)}")
        path, sha256, size = item["path"], item["sha256"], item["size"]
        if not _valid_path(path):
            raise bad(f"files[{number}] has an invalid path {path!r}")
        if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
            raise bad(f"{path}: sha256 is not 64 lowercase hex digits")
        if type(size) is not int or size < 0:
            raise bad(f"{path}: size is not a non-negative integer")
        if entries and path <= entries[-1].path:
            raise bad(f"files are not sorted by path without repeats (at {path!r})")
        entries.append(ManifestEntry(path, sha256, size))
    return manifest, tuple(entries), created


def _names(paths: list[str], limit: int = 10) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def verify_directory(model_dir: PathLike, trusted: Iterable[PublicKeyLike]) -> VerifiedManifest:
    """Check that ``model_dir`` is exactly what a trusted key signed, and return what was signed.

    ``trusted``: the public keys whose signatures are accepted (required, at least one): key objects,
    key text or key file paths (see :func:`load_public_key`). Checks, in order: ``MANIFEST.sig`` and
    ``MANIFEST.json`` are there; the signature verifies the manifest's exact bytes under one of the
    trusted keys; the manifest is well formed and names that key; the directory holds no symbolic link,
    special file, unlisted file, nor lacks a listed one; every file has its signed size and SHA-256.

    Raises SignatureError at the first failed check (its message says which: ``unsigned``, ``untrusted
    key``, ``bad signature``, ``manifest malformed``, ``symlink``, ``file missing``, ``extra file``,
    ``file changed``), FileNotFoundError if ``model_dir`` is not a directory, ValueError if ``trusted``
    is empty."""
    root = Path(model_dir)
    keys = _trusted_keys(trusted)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory to verify")
    signature_bytes = _read_signed_file(root, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    data = _read_signed_file(root, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    signature = _decode_signature(root, signature_bytes)

    signing_key = None
    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        signing_key = key
        break
    trusted_fingerprints = [key_fingerprint(key) for key in keys]
    if signing_key is None:
        claimed = _claimed_fingerprint(data)
        if claimed is not None and claimed not in trusted_fingerprints:
            raise SignatureError(f"{root}: untrusted key: {MANIFEST_NAME} names key {claimed} as its signer, "
                                 f"which is not among the trusted keys ({', '.join(trusted_fingerprints)})")
        raise SignatureError(f"{root}: bad signature: {SIGNATURE_NAME} does not verify {MANIFEST_NAME} under "
                             "any trusted key (the manifest or the signature was altered, or they come from "
                             "different signings)")

    # from here on the manifest is authentic: what it says was said by a trusted key
    manifest, entries, created = _parse_manifest(root, data)
    fingerprint = key_fingerprint(signing_key)
    if manifest["key_fingerprint"] != fingerprint:
        raise SignatureError(f"{root}: manifest malformed: it names key {manifest['key_fingerprint']} "
                             f"but was signed by {fingerprint}")

    on_disk = _scan(root)
    signed = {entry.path: entry for entry in entries}
    missing = [path for path in signed if path not in on_disk]
    extra = [path for path in on_disk if path not in signed]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"file missing: {_names(missing)}")
        if extra:
            problems.append(f"extra file: {_names(extra)}")
        raise SignatureError(f"{root}: " + "; ".join(problems))
    sizes = {}
    for entry in entries:
        try:
            sizes[entry.path] = os.lstat(on_disk[entry.path]).st_size
        except OSError as exc:
            raise SignatureError(f"{root}: cannot read {entry.path}: {exc.strerror or exc}") from exc
    resized = [entry.path for entry in entries if sizes[entry.path] != entry.size]
    if resized:
        first = signed[resized[0]]
        raise SignatureError(f"{root}: file changed: {_names(resized)} ({first.path}: "
                             f"{sizes[first.path]} bytes, signed with {first.size})")
    for entry in entries:
        try:
            sha256, size = _hash_file(on_disk[entry.path])
        except OSError as exc:
            raise SignatureError(f"{root}: cannot read {entry.path}: {exc.strerror or exc}") from exc
        if size != entry.size or sha256 != entry.sha256:
            raise SignatureError(f"{root}: file changed: {entry.path} (its SHA-256 differs from the signed one)")
    return VerifiedManifest(fingerprint=fingerprint, signer=manifest["signer"], files=entries, created=created)
