"""The local cache directory and a checksummed, atomic file download.

``download_file`` streams a URL into a temporary file beside ``dest``, checks its SHA-256 and only
then renames it into place (``os.replace`` is atomic), so an interrupted or bad download never
leaves a half-written or wrong file where a later run would trust it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from atelier.data.base import DataError

#: Seconds to wait for the server to answer (and between received chunks) before giving up.
DOWNLOAD_TIMEOUT = 60.0
_CHUNK = 1 << 16
_USER_AGENT = "atelier/0.1 (+python-urllib)"


class DownloadError(DataError):
    """The server could not be reached or did not deliver the file (network, HTTP or timeout).

    ``url`` and ``reason`` are kept so callers can add advice on supplying the file by hand.
    A checksum mismatch is a plain :class:`DataError`, not a ``DownloadError``.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"could not download {url}: {reason}")
        self.url = url
        self.reason = reason


def cache_dir() -> Path:
    """Where downloads are kept: ``$ATELIER_HOME`` if set, else ``~/.cache/atelier``; created on demand."""
    root = os.environ.get("ATELIER_HOME") or "~/.cache/atelier"
    path = Path(root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache directory {path} ({exc}); set ATELIER_HOME to a writable folder") from exc
    return path


def sha256_stream(stream: BinaryIO) -> str:
    """Hex SHA-256 of everything left in a binary stream, read in chunks."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _gunzipped_sha256(path: Path) -> str:
    """SHA-256 of the decompressed content if ``path`` is gzip, else of the file itself.

    Some mirrors serve the IDX files already decompressed under the ``.gz`` name; the content is what
    is pinned, so both forms verify.
    """
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if is_gzip else open(path, "rb")) as stream:
            return sha256_stream(stream)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path.name}: the downloaded file is not a valid gzip stream ({exc})") from exc


def _reason(exc: BaseException) -> str:
    """A short human-readable reason for a failed request."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    return f"{type(exc).__name__}: {exc}"


def _stream_to(url: str, out: BinaryIO, *, desc: str, progress: bool, timeout: float) -> int:
    """GET ``url`` and write the body to ``out``; returns the byte count. Raises DownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            expected = int(length_header) if length_header and length_header.isdigit() else None
            received = 0
            with tqdm(
                total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, leave=False,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError covers HTTPError and refused/unresolvable hosts; OSError covers timeouts and resets;
        # ValueError is an unusable URL ("unknown url type").
        raise DownloadError(url, _reason(exc)) from exc
    if expected is not None and received != expected:
        raise DownloadError(url, f"connection closed after {received} of {expected} bytes")
    return received


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    decompressed_sha256: bool = False,
    progress: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its SHA-256 first.

    Args:
        url: what to fetch (http, https or file).
        dest: final path; its folder is created. An existing file is replaced only after success.
        sha256: expected hex digest, or None to skip the check.
        decompressed_sha256: the digest is of the gunzipped content (gzip mirrors differ in their
            wrappers, not in the content). A file that is not gzip is hashed as is.
        progress: show a tqdm progress bar.
        timeout: seconds to wait on the server.

    Returns:
        ``dest``.

    Raises:
        DownloadError: the server was unreachable, answered with an HTTP error, timed out or cut the
            transfer short. Nothing is left on disk.
        DataError: the checksum did not match. The bad file is deleted, nothing is left on disk.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives in the destination folder so os.replace is a same-filesystem atomic rename;
    # its unique name keeps concurrent downloads of the same file from clobbering each other.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream_to(url, out, desc=dest.name, progress=progress, timeout=timeout)
        if sha256 is not None:
            if decompressed_sha256:
                actual = _gunzipped_sha256(tmp)
            else:
                with open(tmp, "rb") as stream:
                    actual = sha256_stream(stream)
            if actual != sha256.lower():
                what = "decompressed content" if decompressed_sha256 else "file"
                raise DataError(
                    f"checksum mismatch for {dest.name} downloaded from {url}: expected sha256 {sha256} "
                    f"of the {what}, got {actual}. The download was deleted; nothing was written to "
                    f"{dest.parent}. The server may be serving a different or damaged file."
                )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
