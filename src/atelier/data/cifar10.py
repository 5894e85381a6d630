"""CIFAR-10 from the official binary archive: a strict record reader, a pinned checksum and a cached download.

The archive ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` ..
``data_batch_5.bin`` (training), ``test_batch.bin`` and ``batches.meta.txt`` (the class names, one a
line, in label order). A batch file is 10,000 records of 3,073 bytes: one label byte (0..9), then
the 32x32 red plane, the green plane and the blue plane, each row-major.

Where it is read from: ``data_dir`` when given (never downloaded): the archive itself, its extracted
``cifar-10-batches-bin`` folder, a folder holding the .bin files, or a folder holding either of the
first two. Otherwise ``cache_dir()/"cifar10"`` in the same forms, downloading the archive there when
it is missing and ``download=True``. The archive is read as a stream, member by member, with only the
expected names kept and every size capped; nothing is extracted to disk.

``verify=True`` checks the archive's pinned SHA-256 (and size). An extracted folder has no pinned
checksum: there ``verify=True`` checks that every batch file holds exactly 10,000 records, and the
dataset's ``meta["verified"]`` is False.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from atelier.data.base import DataError, ImageDataset, Message, Option
from atelier.data.download import DownloadError, cache_dir, download_file, sha256_stream
from atelier.data.resize import check_resolution, convert_channels, resize_square

DEFAULT_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
URL_ENV = "ATELIER_CIFAR10_URL"

ARCHIVE_NAME = "cifar-10-binary.tar.gz"
ARCHIVE_SIZE = 170_052_171  # bytes
ARCHIVE_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
FOLDER_NAME = "cifar-10-batches-bin"  # the one folder inside the archive
META_NAME = "batches.meta.txt"

SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE  # label byte + R, G, B planes
RECORDS_PER_BATCH = 10_000
#: The official label order (also the order of ``batches.meta.txt``), used when that file is missing.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: split -> batch files, in the order their records are concatenated.
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
SPLIT_FILES["all"] = SPLIT_FILES["train"] + SPLIT_FILES["test"]

_MAX_META_BYTES = 64 * 1024
#: Decompressed bytes read from an archive at most: the official tar stream is about 184.4 MB.
_MAX_TAR_BYTES = 192 * 1024 * 1024
_MAX_MEMBERS = 1000


def _max_batch_bytes() -> int:
    """The largest batch file read (module constants looked up at call time, so tests may shrink them)."""
    return RECORDS_PER_BATCH * RECORD_BYTES


def archive_url(base_url: str | None = None) -> str:
    """Where the archive is downloaded from: ``base_url``, else ``$ATELIER_CIFAR10_URL``, else the official
    URL. A URL ending in .tar.gz/.tgz/.tar names the archive itself; any other is a folder that holds it."""
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url if url.endswith((".tar.gz", ".tgz", ".tar")) else url.rstrip("/") + "/" + ARCHIVE_NAME


def _describe_archive() -> str:
    return f"{ARCHIVE_NAME} ({ARCHIVE_SIZE:,} bytes, SHA-256 {ARCHIVE_SHA256})"


def _how_to_supply(folder: Path) -> Message:
    return Message(
        f"To use CIFAR-10 without downloading, put {_describe_archive()}, from {DEFAULT_URL}, in {folder} "
        f"(or its extracted {FOLDER_NAME} folder); or pass ", Option("data_dir", "`--data-dir DIR` (data_dir=DIR)"),
        f" naming a folder that holds it, or the archive itself; or point {URL_ENV} (base_url=...) at a reachable mirror.",
    )


def _find_in(folder: Path) -> Path | None:
    """The archive, or the folder of .bin files, that ``folder`` holds (in that order of preference)."""
    if (folder / ARCHIVE_NAME).is_file():
        return folder / ARCHIVE_NAME
    if (folder / FOLDER_NAME).is_dir():
        return folder / FOLDER_NAME
    if any((folder / name).is_file() for name in SPLIT_FILES["all"]):
        return folder
    return None


def _locate(
    *, data_dir: str | os.PathLike | None, download: bool, verify: bool, base_url: str | None, progress: bool,
) -> tuple[Path, bool]:
    """(the archive or a folder of .bin files, whether the archive's checksum was just checked by the download)."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if path.is_file():
            return path, False
        if not path.is_dir():
            raise DataError(f"CIFAR-10 data_dir {path} does not exist")
        found = _find_in(path)
        if found is None:
            raise DataError(
                f"CIFAR-10 data_dir {path} holds neither {ARCHIVE_NAME}, nor its extracted {FOLDER_NAME} folder, "
                f"nor the batch files ({', '.join(SPLIT_FILES['all'])})"
            )
        return found, False

    folder = cache_dir() / "cifar10"
    found = _find_in(folder) if folder.is_dir() else None
    if found is not None:
        return found, False
    if not download:
        raise DataError(Message(f"CIFAR-10 archive {ARCHIVE_NAME} is not in the cache and ",
                                Option("downloads_off", "download=False"), ". ", _how_to_supply(folder)))
    url = archive_url(base_url)
    try:
        path = download_file(url, folder / ARCHIVE_NAME, sha256=ARCHIVE_SHA256 if verify else None, progress=progress)
    except DownloadError as exc:
        raise DataError(Message(f"could not download the CIFAR-10 archive {ARCHIVE_NAME} from {exc.url}: {exc.reason}. ",
                                _how_to_supply(folder))) from exc
    return path, verify


def _verify_archive(path: Path, *, in_cache: bool) -> None:
    """Size, then SHA-256, against the pinned values; a DataError naming the file if either differs."""
    size = path.stat().st_size
    fix = Message("The file is damaged or not the official archive; ", "delete it to download it again, or " if in_cache else "",
                  "pass ", Option("no_verify_data", "verify=False (`--no-verify`)"), " if you modified it deliberately.")
    if size != ARCHIVE_SIZE:
        raise DataError(Message(f"{path}: {size:,} bytes, but the CIFAR-10 archive is {_describe_archive()}. ", fix))
    with open(path, "rb") as stream:
        actual = sha256_stream(stream)
    if actual != ARCHIVE_SHA256:
        raise DataError(Message(f"{path}: checksum mismatch: expected sha256 {ARCHIVE_SHA256}, got {actual}. ", fix))


def parse_batch(data: bytes, *, source: str, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch file's bytes: (images (N, 3, 32, 32) uint8, labels (N,) int64).

    Args:
        data: whole records of RECORD_BYTES (label byte, then the R, G and B planes, each row-major).
        source: the file named in errors.
        exact: require RECORDS_PER_BATCH records (the official count).

    Raises:
        DataError: a truncated last record, no records, a label over 9, or (``exact``) another count.
    """
    n, rest = divmod(len(data), RECORD_BYTES)
    if rest:
        raise DataError(
            f"{source}: truncated record: the record at index {n:,} (byte offset {n * RECORD_BYTES:,}) has only "
            f"{rest:,} of its {RECORD_BYTES:,} bytes; a CIFAR-10 batch file is whole records of 1 label byte and "
            f"3,072 pixel bytes. Re-download or replace the file."
        )
    if n == 0:
        raise DataError(f"{source}: holds no records")
    if exact and n != RECORDS_PER_BATCH:
        raise DataError(Message(f"{source}: holds {n:,} records, but a CIFAR-10 batch file holds {RECORDS_PER_BATCH:,}. "
                                "Re-download or replace the file, or pass ",
                                Option("no_verify_data", "verify=False (`--no-verify`)"), " if you built it deliberately."))
    records = np.frombuffer(data, dtype=np.uint8).reshape(n, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{source}: the record at index {i:,} has label {int(labels[i])}, but CIFAR-10's labels are 0 to 9 "
                        f"({bad.size:,} such records). Is it the CIFAR-10 binary version (not CIFAR-100's), and undamaged?")
    images = records[:, 1:].reshape(n, 3, SIDE, SIDE).copy()  # (N, 3, 32, 32): planes R, G, B, rows of 32
    return images, labels.astype(np.int64)


def parse_class_names(data: bytes, *, source: str) -> list[str]:
    """The ten class names of ``batches.meta.txt`` (one a line, blank lines ignored); the standard ten with a
    warning naming ``source`` when the file does not hold ten distinct short printable names."""
    try:
        names = [line.strip() for line in data.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError:
        names = []
    if len(names) == len(CLASSES) and len(set(names)) == len(names) and all(len(n) <= 64 and n.isprintable() for n in names):
        return names
    warnings.warn(f"{source}: does not hold ten distinct class names, one a line; using the standard ones "
                  f"({', '.join(CLASSES)})", stacklevel=3)
    return list(CLASSES)


class _Capped:
    """A read-only stream that refuses to deliver more than ``limit`` bytes in all (bounds a gzip bomb)."""

    def __init__(self, stream: BinaryIO, limit: int, source: str) -> None:
        self.stream, self.left, self.source = stream, limit, source

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise DataError(f"{self.source}: the archive inflates to more than {_MAX_TAR_BYTES:,} bytes; "
                            f"the CIFAR-10 archive holds about 184 MB. Is it the right file?")
        data = self.stream.read(self.left if size is None or size < 0 else min(size, self.left))
        self.left -= len(data)
        return data


def _member_key(name: str) -> str | None:
    """The expected file a tar member name stands for (``cifar-10-batches-bin/NAME``, ``./`` allowed), or None."""
    while name.startswith("./"):
        name = name[2:]
    folder, _, base = name.rpartition("/")
    if folder in ("", FOLDER_NAME) and (base in SPLIT_FILES["all"] or base == META_NAME):
        return base
    return None


def _read_archive(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of the members in ``wanted`` (file names) found in the archive, read as a stream."""
    source, found = str(path), {}
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            inner: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw  # type: ignore[assignment]
            with tarfile.open(fileobj=_Capped(inner, _MAX_TAR_BYTES, source), mode="r|", bufsize=1 << 20) as tar:  # type: ignore[call-overload]
                for count, member in enumerate(tar):
                    if count >= _MAX_MEMBERS:
                        raise DataError(f"{source}: more than {_MAX_MEMBERS} members; not the CIFAR-10 archive")
                    key = _member_key(member.name)
                    if key is None or key not in wanted:
                        continue
                    where = f"{source}: {member.name}"
                    if key in found:
                        raise DataError(f"{where}: appears twice in the archive")
                    if not member.isreg():
                        raise DataError(f"{where}: not a regular file (a link or a folder) in the archive")
                    cap = _MAX_META_BYTES if key == META_NAME else _max_batch_bytes()
                    if member.size > cap:
                        raise DataError(f"{where}: declares {member.size:,} bytes, more than the {cap:,} a CIFAR-10 "
                                        f"{'class-name file' if key == META_NAME else 'batch file'} holds")
                    stream = tar.extractfile(member)
                    data = stream.read() if stream is not None else b""
                    if len(data) != member.size:
                        raise DataError(f"{where}: truncated: {len(data):,} of its {member.size:,} bytes")
                    found[key] = data
                    if found.keys() == wanted:
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{source}: cannot read the archive ({type(exc).__name__}: {exc}). "
                        "Re-download or replace the file.") from exc
    missing = sorted(wanted - found.keys() - {META_NAME})
    if missing:
        raise DataError(f"{source}: the archive lacks {', '.join(f'{FOLDER_NAME}/{m}' for m in missing)}. "
                        "Is it the CIFAR-10 binary version, and complete?")
    return found


def _read_folder(folder: Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of the files in ``wanted`` that ``folder`` holds (each size checked before reading)."""
    missing = sorted(name for name in wanted - {META_NAME} if not (folder / name).is_file())
    if missing:
        raise DataError(f"CIFAR-10 batch files missing from {folder}: {', '.join(missing)}")
    found = {}
    for name in sorted(wanted):
        path = folder / name
        if not path.is_file():
            continue  # only the class names may be missing
        cap = _MAX_META_BYTES if name == META_NAME else _max_batch_bytes()
        try:
            size = path.stat().st_size
            if size > cap:
                raise DataError(f"{path}: {size:,} bytes, more than the {cap:,} a CIFAR-10 "
                                f"{'class-name file' if name == META_NAME else 'batch file'} holds")
            found[name] = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
    return found


def is_class_tree(folder: Path) -> bool:
    """Whether ``folder`` is a re-encoding of CIFAR-10 as image files: ``train/`` and ``test/`` folders of
    class folders (such as the shared JPEG tree, ``train/airplane/0001.jpg``)."""
    return (folder / "train").is_dir() and (folder / "test").is_dir() and not _find_in(folder)


def _load_tree(root: Path, *, resolution: int, split: str, progress: bool) -> ImageDataset:
    """CIFAR-10 from a tree of image files; its class folders must be CIFAR-10's ten, which sorted are also
    the official label order. Pixels differ from the official ones by the re-encoding (JPEG's error), so
    there is no checksum to check: ``meta["verified"]`` is False and ``meta["format"]`` says "image folder"."""
    from atelier.data.folder import load_folder

    parts = []
    for s in ("train", "test") if split == "all" else (split,):
        part = load_folder(root, resolution=resolution, split=s, progress=progress)
        if part.classes != list(CLASSES) or part.labels is None:
            raise DataError(f"{root / s}: the class folders are {part.classes}, not CIFAR-10's {list(CLASSES)}; "
                            f"for another labelled image set use folder:{root}")
        if part.channels != 3:
            part = ImageDataset(convert_channels(part.images, 3), part.labels, part.classes, part.name, part.meta)
        parts.append(part)
    images = parts[0].images if len(parts) == 1 else torch.cat([p.images for p in parts])
    labels = parts[0].labels if len(parts) == 1 else torch.cat([p.labels for p in parts])
    return ImageDataset(
        images=images, labels=labels, classes=list(CLASSES), name=f"cifar10:{split}",
        meta={"source": str(root), "split": split, "verified": False, "format": "image folder",
              "original_resolution": SIDE},
    )


def load_cifar10(
    *, resolution: int = 32, split: str = "train", data_dir: str | os.PathLike | None = None,
    download: bool = True, verify: bool = True, base_url: str | None = None, progress: bool = True,
) -> ImageDataset:
    """CIFAR-10 as a 3-channel :class:`ImageDataset` (see the module docstring for where it is read from).

    Args:
        resolution: output side; other than 32 resizes with antialiased bilinear interpolation.
        split: "train" (50,000: data_batch_1..5 in order), "test" (10,000) or "all" (train then test).
        data_dir: the archive, its extracted folder, or a folder holding either (no download); or a
            re-encoding as image files: ``train/`` and ``test/`` folders of CIFAR-10's ten class folders.
        download: fetch the archive into ``cache_dir()/"cifar10"`` when it is not there.
        verify: check the archive's pinned size and SHA-256 (also of a download); for an extracted
            folder, that each batch file holds exactly 10,000 records.
        base_url: where to download from: the archive's URL or a folder URL holding it; default
            ``$ATELIER_CIFAR10_URL``, else the official URL.
        progress: show a download progress bar.

    Returns:
        images uint8 (N, 3, resolution, resolution), labels int64 (N,) in 0..9, the class names in label
        order, and ``meta`` with ``source``, ``split``, ``verified`` (the archive's checksum was checked)
        and ``original_resolution`` (32).

    Raises:
        DataError: the data missing (offline: the message says which file to put where), unreadable,
            failing its checksum, truncated (naming the file and the record), with a label over 9, or
            not the CIFAR-10 binary layout.
        TooLargeError: the images resized to ``resolution`` would not fit in memory.
    """
    check_resolution(resolution)
    if split not in SPLIT_FILES:
        raise DataError(f"cifar10: unknown split {split!r}; use 'train', 'test' or 'all'")
    if data_dir is not None and is_class_tree(Path(data_dir).expanduser()):
        return _load_tree(Path(data_dir).expanduser(), resolution=resolution, split=split, progress=progress)
    names = SPLIT_FILES[split]
    source, checked = _locate(data_dir=data_dir, download=download, verify=verify, base_url=base_url, progress=progress)
    wanted = {*names, META_NAME}
    if source.is_file():
        if verify and not checked:
            _verify_archive(source, in_cache=data_dir is None)
        raw, where, verified = _read_archive(source, wanted), f"{source}: {FOLDER_NAME}/", verify
    else:
        raw, where, verified = _read_folder(source, wanted), f"{source}{os.sep}", False

    parts = [parse_batch(raw.pop(name), source=f"{where}{name}", exact=verify) for name in names]
    meta_bytes = raw.pop(META_NAME, None)
    classes = parse_class_names(meta_bytes, source=f"{where}{META_NAME}") if meta_bytes is not None else list(CLASSES)
    images_np = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])  # (N, 3, 32, 32)
    labels_np = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])  # (N,)
    del parts
    images = resize_square(torch.from_numpy(images_np), resolution)  # (N, 3, R, R) uint8
    return ImageDataset(
        images=images,
        labels=torch.from_numpy(labels_np),
        classes=classes,
        name=f"cifar10:{split}",
        meta={"source": str(source), "split": split, "verified": verified, "format": "binary",
              "original_resolution": SIDE},
    )

