"""Fuzzing every file reader with generated files: only documented errors, in bounded time and memory.

Each reader below is fed, through hypothesis, (a) random bytes, (b) byte-level mutations of valid files
(flips, truncations, insertions, deletions, repeated ranges, interesting integers written over them) and
(c) files built with hostile header fields (an IDX header declaring 2**32 - 1 images, a PNG of 60000 x
60000 with a valid CRC, a safetensors header declaring huge shapes or offsets, a zip bomb inside an
``.npz``, deep JSON/TOML/YAML nesting, YAML aliases that expand exponentially, envelopes whose canonical
headers and key slots hold odd values, manifests signed by the trusted key but malformed). The property,
for every case:

* the reader returns, or raises one of its documented errors (listed per reader here and in
  ``docs/errors.md``) with a message; anything else escaping is a bug in the reader;
* it finishes within ``CASE_SECONDS`` (a SIGALRM turns a hang into a failure);
* it allocates no more than its reader's bound, measured two ways around the call alone: the peak of
  ``tracemalloc`` (Python objects and numpy buffers) and the growth of the process's peak RSS (every
  allocation that is touched, PIL's, torch's and the Rust safetensors reader's included: the kernel's
  high-water mark is reset through ``/proc/self/clear_refs`` before each case, and glibc's free lists
  are trimmed first so earlier cases' memory is not silently reused). Declared sizes are checked
  against ``ATELIER_MEMORY_LIMIT=256M`` while fuzzing, so a header declaring gigabytes must be refused.

Profiles: ``reader-fuzz-ci`` (the default, with the suite: ``ATELIER_FUZZ_EXAMPLES`` cases per reader,
derandomised) and ``reader-fuzz-slow`` (``pytest -m slow tests/test_reader_fuzz.py``: at least 10,000
cases per reader, random). With ``ATELIER_FUZZ_REPORT=path.json`` each reader's case count, time and
measured peaks are written there (the numbers in BENCHMARKS.md). Longer than 400 lines: one place for
every reader's generators, so the harness and the bounds are read together.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import ctypes
import dataclasses
import gzip
import io
import json
import os
import re
import signal
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MiB = 1 << 20
CI_EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "100"))
SLOW_EXAMPLES = max(10_000, int(os.environ.get("ATELIER_FUZZ_SLOW_EXAMPLES", "10000")))
CASE_SECONDS = float(os.environ.get("ATELIER_FUZZ_CASE_SECONDS", "20"))
MEMORY_LIMIT = "256M"  # ATELIER_MEMORY_LIMIT while fuzzing: what any size check must refuse above

settings.register_profile("reader-fuzz-ci", max_examples=CI_EXAMPLES, derandomize=True, database=None,
                          deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("reader-fuzz-slow", max_examples=SLOW_EXAMPLES, derandomize=False, database=None,
                          deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


# -- the harness: time and memory around one call ---------------------------------------------------------

class Hang(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def _status_bytes(name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{name}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


@dataclass
class Stats:
    cases: int = 0
    refused: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    slowest_case: str = ""
    python_peak: int = 0
    rss_growth: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "refused": self.refused, "accepted": self.cases - self.refused,
                "seconds": round(self.seconds, 2), "slowest_case_s": round(self.slowest, 3),
                "slowest_case": self.slowest_case,
                "python_peak_mib": round(self.python_peak / MiB, 1), "rss_growth_mib": round(self.rss_growth / MiB, 1),
                "errors": dict(self.errors.most_common())}


@dataclass(frozen=True)
class Reader:
    """One reader: ``inputs`` generates a case, ``prepare`` turns it into the reader's argument (writing
    files; not measured), ``read`` is the measured call, ``errors`` what it is documented to raise."""

    name: str
    inputs: Callable[["World"], st.SearchStrategy]
    prepare: Callable[["World", Path, Any], Any]
    read: Callable[["World", Any], Any]
    errors: tuple[type[BaseException], ...]
    memory: int = 64 * MiB  # bound on both the tracemalloc peak and the peak-RSS growth of one call
    ci_share: float = 1.0  # fraction of CI_EXAMPLES for readers whose single case is slow


def shown(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class Shown:
    """A generated case whose repr is cut short (hypothesis prints failing cases; some are megabytes)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return shown(self.value)


def run_case(reader: Reader, world: "World", workdir: Path, case: Any, stats: Stats) -> None:
    arg = reader.prepare(world, workdir, case)
    if _malloc_trim is not None:
        _malloc_trim(0)
    rss_before = _status_bytes("VmRSS")
    measured_rss = rss_before is not None and _reset_peak_rss()
    tracemalloc.reset_peak()
    traced_before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    outcome = "accepted"
    try:
        with time_bound(CASE_SECONDS):
            reader.read(world, arg)
    except reader.errors as exc:
        outcome = type(exc).__name__
        assert str(exc).strip(), f"{reader.name}: {type(exc).__name__} without a message"
    elapsed = time.perf_counter() - start
    python_peak = tracemalloc.get_traced_memory()[1] - traced_before
    rss_growth = (_status_bytes("VmHWM") or 0) - rss_before if measured_rss else 0
    stats.cases += 1
    stats.refused += outcome != "accepted"
    stats.errors[outcome] += 1
    stats.seconds += elapsed
    if elapsed >= stats.slowest:
        stats.slowest, stats.slowest_case = elapsed, shown(case, 120)
    stats.python_peak = max(stats.python_peak, python_peak)
    stats.rss_growth = max(stats.rss_growth, rss_growth)
    assert python_peak <= reader.memory, f"{reader.name}: Python allocations peaked at {python_peak / MiB:.1f} MiB"
    assert rss_growth <= reader.memory, f"{reader.name}: peak RSS grew by {rss_growth / MiB:.1f} MiB"


# -- generic generators -------------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 7, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1,
               2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1]


@st.composite
def mutated(draw, seed: bytes, max_edits: int = 4) -> bytes:
    """``seed`` with a few byte-level edits."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "int", "repeat"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=256))
        elif kind == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            data[pos:pos + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
        elif kind == "repeat" and data:
            start = min(pos, len(data) - 1)
            piece = data[start:start + draw(st.integers(1, 64))]
            data[start:start] = piece * draw(st.integers(1, 8))
    return bytes(data)


def any_bytes(seeds: list[bytes], *built: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """Random bytes, mutations of valid files, and files built by the reader's own generators."""
    parts = [st.binary(max_size=512), st.sampled_from(seeds), *(mutated(s) for s in seeds), *built]
    return st.one_of(*parts)


json_leaves = st.one_of(st.none(), st.booleans(), st.sampled_from(INTERESTING + [-1, -(2**63), 10**30]),
                        st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@st.composite
def edited_json(draw, seed: Any) -> Any:
    """``seed`` (parsed JSON) with a value somewhere in it replaced, a key added or one removed."""
    doc = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            action = draw(st.sampled_from(["replace", "replace", "add", "remove"]))
            if action == "replace":
                node[key] = draw(json_values)
            elif action == "add":
                node[draw(st.text(max_size=6))] = draw(json_values)
            else:
                del node[key]
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
        else:
            return draw(json_values)
    return doc


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def deep_json(draw) -> bytes:
    n = draw(st.sampled_from([50, 500, 990, 1100, 5000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = "1" if opener != "[" else ""
    return (opener * n + inner + closer * n).encode()


huge_number = st.builds(lambda n, neg: (("-" if neg else "") + "9" * n).encode(), st.sampled_from([400, 4301, 20_000]),
                        st.booleans())


# -- images ---------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def built_png(draw) -> bytes:
    """A PNG with valid chunk CRCs (so PIL's CRC check passes) and hostile header fields: sizes up to
    2**32 - 1 (60000 x 60000 among them), any bit depth and colour type, odd ancillary chunks, and image
    data that is random, short, or a run of zeros that inflates far (capped at 4 MiB to generate)."""
    side = st.one_of(st.integers(1, 64), st.sampled_from([0, 1000, 7071, 60000, 2**31 - 1, 2**32 - 1]))
    width, height = draw(side), draw(side)
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 5, 7]))
    interlace = draw(st.sampled_from([0, 1, 2]))
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([b"PLTE", b"tRNS", b"eXIf", b"iCCP", b"zTXt", b"tEXt", b"gAMA", b"pHYs",
                                     b"sBIT", b"acTL", b"fcTL"]))
        body = draw(st.binary(max_size=64))
        if kind == b"eXIf" and draw(st.booleans()):
            body = _exif_orientation(draw(st.integers(0, 10)))
        if kind in (b"iCCP", b"zTXt"):
            body = b"name\0\0" + zlib.compress(draw(st.binary(max_size=64)) * draw(st.sampled_from([1, 1000])))
        chunks.append(_png_chunk(kind, body))
    raw_size = min(4 * MiB, height * (1 + (width * max(depth, 8) * 4 + 7) // 8))
    payload = draw(st.sampled_from(["random", "zeros", "short", "none"]))
    if payload == "random":
        idat = zlib.compress(draw(st.binary(max_size=2048)))
    elif payload == "zeros":
        idat = zlib.compress(bytes(raw_size), 1)
    elif payload == "short":
        idat = zlib.compress(bytes(raw_size // 2 + 1), 1)[: draw(st.integers(0, 64))]
    else:
        idat = b""
    if idat or draw(st.booleans()):
        chunks.append(_png_chunk(b"IDAT", idat))
    if draw(st.booleans()):
        chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _exif_orientation(value: int) -> bytes:
    """A little-endian TIFF/EXIF block with one Orientation tag."""
    return b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + b"\0\0\0\0"


@st.composite
def built_bmp(draw) -> bytes:
    """A BMP whose header declares any size (negative heights are top-down), bit count and compression."""
    width = draw(st.one_of(st.integers(-4, 64), st.sampled_from([60000, 2**31 - 1, -(2**31)])))
    height = draw(st.one_of(st.integers(-64, 64), st.sampled_from([60000, 2**31 - 1, -(2**31)])))
    bits = draw(st.sampled_from([1, 4, 8, 16, 24, 32, 0, 7, 64]))
    compression = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99]))
    colours = draw(st.sampled_from([0, 1, 2, 256, 2**31]))
    pixels = draw(st.binary(max_size=1024))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(pixels), 2835, 2835, colours, 0)
    palette = draw(st.binary(max_size=64))
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


@st.composite
def jpeg_with_odd_size(draw, seed: bytes) -> bytes:
    """A JPEG whose SOF marker declares another height and width."""
    data = bytearray(seed)
    at = data.find(b"\xff\xc0")
    if at >= 0:
        side = st.sampled_from([0, 1, 8, 7072, 60000, 65535])
        data[at + 5:at + 9] = struct.pack(">HH", draw(side), draw(side))
    return bytes(data)


def image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)

    def save(im: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        return buf.getvalue()

    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    grey16 = Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    return [save(rgb.convert("L"), "PNG"), save(rgb.convert("RGBA"), "PNG"), save(palette, "PNG"),
            save(grey16, "PNG"), save(rgb, "JPEG", exif=exif.tobytes()), save(rgb, "WEBP"), save(rgb, "BMP"),
            save(rgb.convert("1"), "BMP"), save(rgb, "PNG", exif=exif.tobytes())]


def image_inputs(world: "World") -> st.SearchStrategy[bytes]:
    jpeg = world.image_seeds[4]
    return any_bytes(world.image_seeds, built_png(), built_png(), built_bmp(), jpeg_with_odd_size(jpeg))


def write_input(name: str) -> Callable[["World", Path, bytes], Path]:
    def prepare(world: "World", workdir: Path, data: bytes) -> Path:
        path = workdir / name
        path.write_bytes(data)
        return path

    return prepare


# -- IDX (MNIST) -------------------------------------------------------------------------------------------------

def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@st.composite
def built_idx(draw, ndim: int, magic: int) -> bytes:
    """An IDX file whose header declares any dimensions (up to 2**32 - 1 each), holding a payload of the
    declared size when that is small, else a short one; sometimes gzip'd, sometimes a gzip bomb (a
    header declaring much more than is there, or zeros that inflate past what the header declares)."""
    dim = st.one_of(st.integers(0, 30), st.sampled_from([2**16, 2**31, 2**32 - 1]))
    dims = tuple(draw(dim) for _ in range(ndim))
    found = draw(st.sampled_from([magic, magic, 2049 if magic == 2051 else 2051, 0, 2**32 - 1]))
    declared = int(np.prod(dims, dtype=object))
    size = declared + draw(st.sampled_from([0, 0, 0, -1, 1, 100])) if declared <= 4096 else draw(st.integers(0, 256))
    data = _idx(found, dims, draw(st.binary(min_size=max(0, size), max_size=max(0, size))))
    wrap = draw(st.sampled_from(["plain", "gzip", "bomb", "cut"]))
    if wrap == "gzip":
        return gzip.compress(data, 1)
    if wrap == "bomb":  # zeros that inflate to megabytes after whatever the header declares
        return gzip.compress(data + bytes(draw(st.sampled_from([MiB, 8 * MiB]))), 1)
    if wrap == "cut":
        packed = gzip.compress(data, 1)
        return packed[: draw(st.integers(0, len(packed)))]
    return data


def idx_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.idx_images], built_idx(3, 2051))


@dataclass(frozen=True)
class MnistCase:
    images: bytes
    labels: bytes


def mnist_inputs(world: "World") -> st.SearchStrategy[MnistCase]:
    images = st.one_of(st.just(world.idx_images), idx_inputs(world))
    labels = st.one_of(st.just(world.idx_labels), any_bytes([world.idx_labels], built_idx(1, 2049)))
    return st.builds(MnistCase, images, labels)


def prepare_mnist(world: "World", workdir: Path, case: MnistCase) -> Path:
    folder = workdir / "mnist"
    folder.mkdir(exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(case.images)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(case.labels)
    return folder


# -- CIFAR-10 binary batches and archives -------------------------------------------------------------------------

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_NAMES = ["cifar-10-batches-bin/test_batch.bin", "./cifar-10-batches-bin/test_batch.bin", "test_batch.bin",
               "cifar-10-batches-bin/batches.meta.txt", "cifar-10-batches-bin/data_batch_1.bin",
               "elsewhere/test_batch.bin", "cifar-10-batches-bin/", "../test_batch.bin"]


@st.composite
def built_cifar_batch(draw) -> bytes:
    """0 to 4 records with labels in and out of range, the pixels of each a constant, maybe cut short."""
    records = b"".join(bytes([draw(st.sampled_from([0, 3, 9, 10, 255]))]) + bytes([draw(st.integers(0, 255))])
                       * (CIFAR_RECORD - 1) for _ in range(draw(st.integers(0, 4))))
    return records[:len(records) - draw(st.sampled_from([0, 0, 1, CIFAR_RECORD - 1]))]


def cifar_batch_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.cifar_batch], built_cifar_batch())


def tar_bytes(members: list[tuple[str, bytes, bytes]], *, gz: bool) -> bytes:
    """A tar (gzipped or not) of (name, data, tarfile type) members; links point at the first name."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) if gz else tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = members[0][0]
                tar.addfile(info)
    return buf.getvalue()


@st.composite
def built_cifar_archive(draw, world: "World") -> bytes:
    """Archives with wanted and unwanted names, links and folders, repeats, odd class-name files, cut short."""
    import tarfile

    meta = st.sampled_from([b"airplane\nship\n", b"\xff\xfe\n", b"a" * 70_000, b"\n\n\n", b""])
    members = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(CIFAR_NAMES))
        data = draw(meta) if name.endswith(".txt") else draw(st.one_of(built_cifar_batch(), st.binary(max_size=64)))
        kind = draw(st.sampled_from([tarfile.REGTYPE] * 4 + [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE]))
        members.append((name, data, kind))
    data = tar_bytes(members, gz=draw(st.booleans()))
    return data[:len(data) - draw(st.sampled_from([0, 0, 1, 100, 600]))]


def cifar_archive_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return st.one_of(any_bytes([world.cifar_archive], built_cifar_archive(world)),
                     st.sampled_from(world.cifar_bombs))


# -- safetensors, .pth, saved models ---------------------------------------------------------------------------

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "F8_E4M3", "Q99", "", 5]


@st.composite
def built_safetensors(draw) -> bytes:
    """A safetensors file whose JSON header declares tensors of any dtype, shape and byte range: huge or
    negative dimensions, hundreds of dimensions, offsets past the end, overlaps, odd metadata, deep
    nesting; and a length field that may lie."""
    dim = st.one_of(st.integers(0, 8), st.sampled_from(INTERESTING + [-1, 1.5, "2", True, None]))
    shape = st.one_of(st.lists(dim, max_size=4), st.builds(lambda d, n: [d] * n, st.sampled_from([0, 1, 2, 2**40]),
                                                             st.sampled_from([65, 300, 5000])))
    offset = st.one_of(st.integers(0, 256), st.sampled_from(INTERESTING + [-1]))
    entry = st.fixed_dictionaries({"dtype": st.sampled_from(DTYPES), "shape": shape,
                                   "data_offsets": st.one_of(st.lists(offset, min_size=2, max_size=2),
                                                             st.lists(offset, max_size=3))})
    header: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "__metadata__"),
                                                  st.one_of(entry, entry, json_values), max_size=4))
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), json_values))
    text = dumps(header)
    if draw(st.integers(0, 9)) == 0:
        text = b'{"a":' + draw(deep_json()) + b"}"
    body = draw(st.binary(max_size=300))
    length = draw(st.sampled_from([len(text)] * 4 + INTERESTING))
    return struct.pack("<Q", length % 2**64) + text + body


def safetensors_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.safetensors], built_safetensors())


def pth_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes(world.pth, *(mutated(seed, max_edits=12) for seed in world.pth))


@dataclass(frozen=True)
class ModelCase:
    config: bytes
    weights: bytes


def model_inputs(world: "World") -> st.SearchStrategy[ModelCase]:
    config = json.loads(world.model_config)
    configs = st.one_of(st.just(world.model_config), mutated(world.model_config),
                        edited_json(config).map(dumps), deep_json(), st.binary(max_size=64))
    weights = st.one_of(st.just(world.model_weights), safetensors_inputs(world), mutated(world.model_weights, 8))
    return st.one_of(st.builds(ModelCase, configs, st.just(world.model_weights)),
                     st.builds(ModelCase, st.just(world.model_config), weights))


def prepare_model(world: "World", workdir: Path, case: ModelCase) -> Path:
    folder = workdir / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes(case.config)
    (folder / "model.safetensors").write_bytes(case.weights)
    return folder


@dataclass(frozen=True)
class TrainStateCase:
    plain: bytes
    tensors: bytes


def train_state_inputs(world: "World") -> st.SearchStrategy[TrainStateCase]:
    plain = json.loads(world.state_json)
    plains = st.one_of(mutated(world.state_json), edited_json(plain).map(dumps), deep_json(), huge_number)
    return st.one_of(st.builds(TrainStateCase, plains, st.just(world.state_tensors)),
                     st.builds(TrainStateCase, st.just(world.state_json), safetensors_inputs(world)))


def prepare_train_state(world: "World", workdir: Path, case: TrainStateCase) -> Path:
    folder = workdir / "checkpoint"
    folder.mkdir(exist_ok=True)
    (folder / "state.json").write_bytes(case.plain)
    (folder / "state.safetensors").write_bytes(case.tensors)
    return folder


# -- encrypted envelopes ---------------------------------------------------------------------------------------

def build_envelope(plaintext: bytes, key: Any, *, header: dict | None = None, kdf: dict | None = None,
                   slot_edit: dict | None = None, prefix: tuple[int, int, int] = (1, 0, 0), second_slot: bytes = b"",
                   chunk_size: int = 64) -> bytes:
    """An envelope built as ``seal`` builds one, with any header, KDF parameters, slot fields, version,
    active-slot byte and reserved byte: each chunk and the key wrap are computed over what is written,
    so a reader must judge the fields themselves, not a failed tag."""
    import hashlib
    import secrets

    from atelier.protect.envelope import (BUNDLE, MAGIC, PREFIX, SLOT_SIZE, _aesgcm, _canonical, _check_kdf,
                                          _chunk_aad, _nonce)

    data_key = secrets.token_bytes(32)
    fields = {"cipher": "AES-256-GCM", "chunk_size": chunk_size, "content": BUNDLE, "file_id": "f" * 32,
              "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(), "plaintext_size": len(plaintext)}
    if header is not None:
        fields = header
    header_bytes = _canonical(fields)
    version, active, reserved = prefix
    head = PREFIX.pack(MAGIC, version, active, reserved, len(header_bytes))
    digest = hashlib.sha256(head[:10] + head[12:16] + header_bytes).digest()
    kdf = kdf if kdf is not None else key.new_kdf()
    try:  # only parameters the reader would run: a builder deriving a 4 GiB scrypt is a slow test, not a fuzz
        kek = key.derive(_check_kdf(kdf))
    except Exception:  # refused parameters: wrap under zeros, the reader must refuse before unwrapping
        kek = bytes(32)
    nonce = secrets.token_bytes(12)
    slot = {"key_id": key.key_id(), "kdf": kdf, "nonce": nonce.hex(),
            "wrapped": _aesgcm(kek).encrypt(nonce, data_key, digest + _canonical({"key_id": key.key_id(),
                                                                                  "kdf": kdf})).hex()}
    slot.update(slot_edit or {})
    slot_bytes = _canonical(slot)[:SLOT_SIZE].ljust(SLOT_SIZE, b"\0")
    slots = [slot_bytes, second_slot[:SLOT_SIZE].ljust(SLOT_SIZE, b"\0")]
    if active == 1:
        slots.reverse()
    aead, chunks = _aesgcm(data_key), []
    n_chunks = max(1, -(-len(plaintext) // chunk_size))
    for i in range(n_chunks):
        piece = plaintext[i * chunk_size:(i + 1) * chunk_size]
        chunks.append(aead.encrypt(_nonce(i), piece, _chunk_aad(digest, i, i == n_chunks - 1)))
    return head + header_bytes + b"".join(slots) + b"".join(chunks)


CHEAP_KDF = {"name": "argon2id", "salt": "00" * 16, "time_cost": 1, "memory_kib": 64, "parallelism": 1}
HEADER_FIELDS = ["cipher", "chunk_size", "content", "file_id", "plaintext_sha256", "plaintext_size"]


@st.composite
def built_envelope(draw, world: "World", key_name: str = "raw") -> bytes:
    """An envelope of the sealed test model whose canonical header, key slot or prefix holds odd values."""
    key = world.keys[key_name]
    plaintext = world.bundle
    part = draw(st.sampled_from(["header", "kdf", "slot", "prefix", "second", "chunk"]))
    kwargs: dict[str, Any] = {"kdf": CHEAP_KDF} if key_name == "passphrase" else {}  # the default costs 0.15 s
    if part == "header":
        import hashlib

        from atelier.protect.envelope import BUNDLE

        header = {"cipher": "AES-256-GCM", "chunk_size": 64, "content": BUNDLE, "file_id": "f" * 32,
                  "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(), "plaintext_size": len(plaintext)}
        for _ in range(draw(st.integers(1, 2))):
            name = draw(st.sampled_from(HEADER_FIELDS + ["extra"]))
            if draw(st.integers(0, 5)) == 0:
                header.pop(name, None)
            else:
                header[name] = draw(st.one_of(json_values, st.sampled_from(
                    [0, -1, 2**63, 2**64, 1e308, float("inf"), float("nan"), True, 1.5,
                     64 << 20, (64 << 20) + 1])))
        kwargs["header"] = header
    elif part == "kdf":
        kwargs["kdf"] = draw(kdf_params())
    elif part == "slot":
        kwargs["slot_edit"] = {draw(st.sampled_from(["key_id", "kdf", "nonce", "wrapped", "x"])): draw(json_values)}
    elif part == "prefix":
        kwargs["prefix"] = (draw(st.sampled_from([1, 0, 2, 65535])), draw(st.sampled_from([0, 1, 2, 255])),
                            draw(st.sampled_from([0, 0, 1, 255])))
    elif part == "second":
        kwargs["second_slot"] = draw(st.one_of(st.binary(min_size=1, max_size=64), st.just(b"{}")))
    else:
        kwargs["chunk_size"] = draw(st.sampled_from([1, 3, 16, 4096, 64 << 20]))
    return build_envelope(plaintext, key, **kwargs)


@st.composite
def kdf_params(draw) -> dict:
    """KDF parameters: cheap valid ones, and ones over every bound (memory, work, lanes) or malformed."""
    name = draw(st.sampled_from(["argon2id", "scrypt", "raw", "pbkdf2", None]))
    salt = draw(st.one_of(st.just("0" * 32), st.just("zz" * 16), st.text(max_size=40)))
    if name == "argon2id":
        return {"name": name, "salt": salt, "time_cost": draw(st.sampled_from([1, 2, 0, 21, 2**31, True, 1.0])),
                "memory_kib": draw(st.sampled_from([8, 64, 256, 7, 1 << 21, 1 << 20, 2**40, "64"])),
                "parallelism": draw(st.sampled_from([1, 2, 64, 65, 0, -1]))}
    if name == "scrypt":
        return {"name": name, "salt": salt, "n": draw(st.sampled_from([2, 16, 1024, 3, 1 << 20, 1 << 21, 0])),
                "r": draw(st.sampled_from([1, 8, 32, 33, 0])), "p": draw(st.sampled_from([1, 16, 17, 0]))}
    return draw(st.one_of(st.just({"name": name}), json_values))


def envelope_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.envelope], built_envelope(world), mutated(world.envelope, 8))


def passphrase_envelope_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return st.one_of(built_envelope(world, "passphrase"), mutated(world.passphrase_envelope))


@st.composite
def sealed_bundles(draw, world: "World") -> bytes:
    """A correctly sealed envelope (the key opens it) whose bundled config and weights are fuzzed: what
    the loader does with authentic but odd content."""
    from atelier.protect.envelope import bundle

    config = draw(st.one_of(st.just(world.model_config), mutated(world.model_config),
                            edited_json(json.loads(world.model_config)).map(dumps), deep_json()))
    weights = draw(st.one_of(st.just(world.model_weights), mutated(world.model_weights, 8),
                             built_safetensors()))
    plain = draw(st.one_of(st.just(bundle(config, weights)), st.just(bundle(config, weights)),
                           mutated(bundle(config, weights)), st.binary(max_size=16)))
    return build_envelope(plain, world.keys["raw"], chunk_size=4096)


def prepare_sealed(world: "World", workdir: Path, data: bytes) -> Path:
    folder = workdir / "sealed"
    folder.mkdir(exist_ok=True)
    (folder / "model.atlenc").write_bytes(data)
    return folder


# -- signed manifests and keys ---------------------------------------------------------------------------------

ODD_PATHS = ["", "/abs", "../up", "a/../b", "a//b", "a/", ".", "x\0y", "MANIFEST.json", "\ud800", "é/ü", "a" * 300,
             "config.json", "model.safetensors"]


@dataclass(frozen=True)
class SignedCase:
    manifest: bytes
    signature: str  # "trusted": signed by the trusted key; "other": by another key; else written as is
    raw_signature: bytes = b""
    extra_file: bool = False


@st.composite
def signed_inputs(draw, world: "World") -> SignedCase:
    manifest = json.loads(world.manifest)
    kind = draw(st.sampled_from(["valid", "edit", "files", "mutate", "deep", "random"]))
    if kind == "valid":
        data = world.manifest
    elif kind == "edit":
        data = world.canonical(draw(edited_json(manifest)))
    elif kind == "files":
        entry = st.fixed_dictionaries({"path": st.one_of(st.sampled_from(ODD_PATHS), st.text(max_size=10)),
                                       "sha256": st.one_of(st.just("0" * 64), st.text(max_size=64)),
                                       "size": st.one_of(st.sampled_from(INTERESTING + [-1, 1.5, True]), json_values)})
        manifest["files"] = draw(st.lists(entry, max_size=4)) + manifest["files"] * draw(st.integers(0, 2))
        data = world.canonical(manifest)
    elif kind == "mutate":
        data = draw(mutated(world.manifest))
    elif kind == "deep":
        data = draw(deep_json())
    else:
        data = draw(st.binary(max_size=256))
    signature = draw(st.sampled_from(["trusted", "trusted", "trusted", "other", "raw"]))
    raw = draw(st.one_of(st.binary(max_size=100), mutated(world.signature))) if signature == "raw" else b""
    return SignedCase(data, signature, raw, draw(st.integers(0, 9)) == 0)


def prepare_signed(world: "World", workdir: Path, case: SignedCase) -> Path:
    import shutil

    from atelier.protect.signing import MANIFEST_NAME, SIGNATURE_NAME

    folder = workdir / "signed"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(world.model_dir, folder)
    (folder / MANIFEST_NAME).write_bytes(case.manifest)
    if case.signature == "raw":
        signature = case.raw_signature
    else:
        signer = world.signing_key if case.signature == "trusted" else world.other_signing_key
        signature = base64.b64encode(signer.sign(case.manifest)) + b"\n"
    (folder / SIGNATURE_NAME).write_bytes(signature)
    if case.extra_file:
        (folder / "extra.txt").write_text("not signed")
    return folder


@st.composite
def built_public_keys(draw, world: "World") -> bytes:
    """Key-list text: OpenSSH lines of other types or with damaged blobs, PEM blocks, comments, blanks."""
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["ssh", "blob", "pem", "comment", "type", "junk"]))
        if kind == "ssh":
            lines.append(world.public_key_line)
        elif kind == "blob":
            blob = draw(mutated(base64.b64decode(world.public_key_line.split()[1])))
            lines.append(b"ssh-ed25519 " + base64.b64encode(blob))
        elif kind == "pem":
            lines.append(draw(st.sampled_from([world.public_pem, draw(mutated(world.public_pem))])))
        elif kind == "comment":
            lines.append(b"# " + draw(st.binary(max_size=20)).replace(b"\n", b""))
        elif kind == "type":
            lines.append(draw(st.sampled_from([b"ssh-rsa", b"ecdsa-sha2-nistp256", b"sk-ssh-ed25519@openssh.com"]))
                         + b" AAAA" + base64.b64encode(draw(st.binary(max_size=60))))
        else:
            lines.append(draw(st.binary(max_size=40)))
    return b"\n".join(lines)


def public_key_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.public_key_line, world.public_pem], built_public_keys(world))


@dataclass(frozen=True)
class PrivateKeyCase:
    data: bytes
    passphrase: str | None


def private_key_inputs(world: "World") -> st.SearchStrategy[PrivateKeyCase]:
    plain = any_bytes([world.private_pem, world.private_openssh])
    encrypted = any_bytes([world.private_pem_encrypted])
    return st.one_of(st.builds(PrivateKeyCase, plain, st.sampled_from([None, None, "fuzz-passphrase"])),
                     st.builds(PrivateKeyCase, encrypted, st.sampled_from([None, "fuzz-passphrase", "wrong-one!"])))


def prepare_private_key(world: "World", workdir: Path, case: PrivateKeyCase) -> tuple[Path, str | None]:
    path = workdir / "key.pem"
    path.write_bytes(case.data)
    return path, case.passphrase


# -- config files: JSON, TOML, YAML ----------------------------------------------------------------------------

TOML_PIECES = [
    "[train]\nsteps = 3\n", "[model]\ng_width = 8\n", "model_name = 'dcgan'\n", "conditional = true\n",
    "a = 1979-05-27T07:32:00Z\n", "a = 9999-12-31T23:59:60Z\n", "a = 0000-00-00\n", "a = 0x7FFFFFFFFFFFFFFFFFFFFFFF\n",
    "a = 1e400\n", "a = -inf\n", "a = nan\n", "a = '''\n" + "x" * 100 + "'''\n", "a.b.c = 1\na.b = 2\n",
    "[[data]]\n" * 50, "a = \"\\uD800\"\n", "a = \"\\U0010FFFF\"\n", "[a]\n[a]\n", "a = [1, 'x', {b = 2}]\n",
    "a = 1\na = 2\n", "\ufeffa = 1\n", "a = " + "9" * 5000 + "\n", "[" + ".".join(["k"] * 500) + "]\n",
]


@st.composite
def built_toml(draw) -> bytes:
    text = "".join(draw(st.lists(st.sampled_from(TOML_PIECES), min_size=1, max_size=4)))
    if draw(st.integers(0, 4)) == 0:
        n = draw(st.sampled_from([50, 990, 5000, 100_000]))
        text += "deep = " + draw(st.sampled_from([("[" * n) + ("]" * n), ("{a = " * n) + "1" + ("}" * n)])) + "\n"
    return text.encode()


@st.composite
def billion_laughs(draw) -> bytes:
    """YAML aliases nesting ``width`` copies per level over ``levels`` levels (``width ** levels`` values
    when expanded), placed where the reader walks them; or an alias referring to itself."""
    levels, width = draw(st.integers(2, 12)), draw(st.integers(2, 10))
    lines = ["l0: &l0 [lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    where = draw(st.sampled_from(["ops: *l{n}", "ops: [{{name: blur, sigma: *l{n}}}]", "ops: [*l{n}]",
                                  "ops: &me [*me]", "ops: [{{name: blur, sigma: &s [*s]}}]"]))
    return ("\n".join(lines) + "\n" + where.format(n=levels) + "\n").encode()


YAML_PIECES = ["ops:\n  - {name: blur, p: 0.5}\n", "ops: [flip]\n", "!!python/object/apply:os.system ['true']\n",
               "ops: !!binary AAAA\n", "ops: *undefined\n", "<<: {a: 1}\n", "ops: [{name: blur, sigma: 1e400}]\n",
               "ops: [{name: blur, sigma: .nan}]\n", "%YAML 1.1\n---\nops: []\n...\n---\nops: []\n",
               "? [a, b]\n: c\n", "ops: [{name: rotate, degrees: 99999999999999999999999}]\n",
               "ops: [{name: " + "x" * 10_000 + "}]\n", "\t\n", "ops: 'unterminated\n"]


@st.composite
def built_yaml(draw) -> bytes:
    kind = draw(st.sampled_from(["laughs", "pieces", "deep"]))
    if kind == "laughs":
        return draw(billion_laughs())
    if kind == "deep":
        n = draw(st.sampled_from([50, 990, 5000, 50_000]))
        return ("ops: " + "[" * n + "]" * n + "\n").encode()
    return "".join(draw(st.lists(st.sampled_from(YAML_PIECES), min_size=1, max_size=3))).encode()


@dataclass(frozen=True)
class SuffixedCase:
    suffix: str
    data: bytes


def config_inputs(world: "World") -> st.SearchStrategy[SuffixedCase]:
    seed_json = json.loads(world.run_config_json)
    json_files = any_bytes([world.run_config_json], edited_json(seed_json).map(dumps), deep_json(), huge_number)
    toml_files = any_bytes([world.run_config_toml], built_toml())
    return st.one_of(st.builds(SuffixedCase, st.just(".json"), json_files),
                     st.builds(SuffixedCase, st.just(".toml"), toml_files))


def augment_inputs(world: "World") -> st.SearchStrategy[SuffixedCase]:
    yaml_files = any_bytes([world.augment_yaml], built_yaml(), built_yaml())
    return st.one_of(st.builds(SuffixedCase, st.sampled_from([".yaml", ".yml"]), yaml_files),
                     config_inputs(world).map(lambda c: SuffixedCase(c.suffix, c.data)))


def prepare_suffixed(world: "World", workdir: Path, case: SuffixedCase) -> Path:
    path = workdir / f"config{case.suffix}"
    path.write_bytes(case.data)
    return path


def json_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.run_config_json], deep_json(), huge_number,
                     st.sampled_from([b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b'"\\ud800"', b"NaN", b"[1e999]"]))


# -- .npz and zip uploads ----------------------------------------------------------------------------------------

def npy_bytes(descr: Any, fortran: Any, shape: Any, data: bytes, version: int = 1,
              raw_header: str | None = None) -> bytes:
    """A ``.npy`` member written by hand, so its header may say anything (numpy's writer would refuse)."""
    text = raw_header if raw_header is not None else \
        f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    size_format = "<H" if version == 1 else "<I"
    prefix = 8 + struct.calcsize(size_format)
    text += " " * ((64 - (prefix + len(text) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(size_format, len(text)) + text.encode("latin1") + data


def zip_bytes(members: list[tuple[str, bytes, int]], *, declare: dict[str, int] | None = None,
              encrypted: bool = False) -> bytes:
    """A zip of ``(name, data, compression)`` members; ``declare`` rewrites a member's declared
    uncompressed size (in the central directory and the local header), ``encrypted`` sets the flag."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, method in members:
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    out = bytearray(buf.getvalue())
    for name, size in (declare or {}).items():
        encoded = name.encode()
        for signature, size_at, name_at in ((b"PK\x01\x02", 24, 46), (b"PK\x03\x04", 22, 30)):
            at = out.find(signature)
            while at >= 0:
                if out[at + name_at:at + name_at + len(encoded)] == encoded:
                    out[at + size_at:at + size_at + 4] = struct.pack("<I", size % 2**32)
                at = out.find(signature, at + 4)
    if encrypted:
        for signature, flag_at in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
            at = out.find(signature)
            while at >= 0:
                out[flag_at + at] |= 1
                at = out.find(signature, at + 4)
    return bytes(out)


DESCRS = ["|u1", "<f4", ">f8", "<f2", "|b1", "<i8", "|O", "<U3", "<c8", "|V4", [("a", "|u1")], "nonsense", 5]
SHAPES = [(2, 4, 4), (2, 4, 4, 3), (2, 3, 4, 4), (1, 1, 1, 4), (0, 4, 4), (2, 0, 4), (), (3,), (2**31, 64, 64),
          (10**7, 1000, 1000), (-1, 4, 4), (2**63, 2, 2), [2, 4, 4], "x", (1.5, 4, 4), (2, 4, 4, 4, 4)]


@st.composite
def built_npz(draw) -> bytes:
    """An ``.npz`` whose ``images`` (and ``labels``) member header declares any dtype, order and shape,
    with data of the declared size when that is small, a deflated run of zeros matching a large declared
    size (a zip bomb under the memory limit or over it), bzip2/LZMA members that inflate far beyond a
    small declared size, members whose declared sizes lie, encrypted members, odd header literals."""
    descr = draw(st.sampled_from(DESCRS))
    shape = draw(st.sampled_from(SHAPES))
    fortran = draw(st.sampled_from([False, False, True, "yes"]))
    version = draw(st.sampled_from([1, 1, 2, 3]))
    try:
        count = int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize
    except Exception:
        count = 16
    payload = draw(st.sampled_from(["exact", "exact", "short", "long", "zeros"]))
    if payload == "exact" and 0 <= count <= 65536:
        data = draw(st.binary(min_size=count, max_size=count))
    elif payload == "zeros":
        data = bytes(min(max(count, 0), 8 * MiB))
    else:
        data = draw(st.binary(max_size=128))
    raw_header = None
    if draw(st.integers(0, 9)) == 0:
        raw_header = draw(st.sampled_from(["{'descr': " + "(" * 300 + ")" * 300 + "}", "__import__('os')", "{}",
                                           "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                                           "{'descr': '|u1', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",)}",
                                           "[" * 5000]))
    images = npy_bytes(descr, fortran, shape, data, version, raw_header)
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                   zipfile.ZIP_LZMA]))
    members = [("images.npy", images, method)]
    if draw(st.booleans()):
        labels = npy_bytes(draw(st.sampled_from(["<i8", "|u1", "<f4", "<U2"])), False,
                           draw(st.sampled_from([(2,), (1,), (2, 2), (10**9,)])), draw(st.binary(max_size=16)))
        members.append(("labels.npy", labels, zipfile.ZIP_STORED))
    declare = {"images.npy": draw(st.sampled_from([0, 10, len(images) - 1, len(images) + 1, 2**32 - 1]))} \
        if draw(st.integers(0, 4)) == 0 else None
    return zip_bytes(members, declare=declare, encrypted=draw(st.integers(0, 9)) == 0)


def npz_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes(world.npz_seeds, built_npz(), built_npz())


@st.composite
def built_upload_zip(draw, world: "World") -> bytes:
    png = world.image_seeds[0]
    members = [(draw(st.sampled_from(["a.png", "../b.png", "dir/", "__MACOSX/._c.png", "d.png", "e" * 200])),
                draw(st.sampled_from([png, b"", png * 3, bytes(4 * MiB)])),
                draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])))
               for _ in range(draw(st.integers(1, 4)))]
    declare = {members[0][0]: draw(st.sampled_from([0, 1, 2**31]))} if draw(st.integers(0, 3)) == 0 else None
    return zip_bytes(members, declare=declare, encrypted=draw(st.integers(0, 9)) == 0)


def upload_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return st.one_of(any_bytes(world.zip_seeds, built_upload_zip(world)),
                     st.binary(max_size=256).map(lambda b: b"PK\x03\x04" + b))


# -- ratings (JSON lines) ----------------------------------------------------------------------------------------

@st.composite
def built_ratings(draw, world: "World") -> bytes:
    seed = json.loads(world.ratings.splitlines()[0])
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["valid", "edit", "deep", "huge", "bytes"]))
        if kind == "valid":
            lines.append(dumps(seed))
        elif kind == "edit":
            lines.append(dumps(draw(edited_json(seed))))
        elif kind == "deep":
            lines.append(draw(deep_json()))
        elif kind == "huge":
            lines.append(draw(huge_number))
        else:
            lines.append(draw(st.binary(max_size=40)).replace(b"\n", b""))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


def ratings_inputs(world: "World") -> st.SearchStrategy[bytes]:
    return any_bytes([world.ratings], built_ratings(world))


# -- the valid files every generator starts from ---------------------------------------------------------------

class World:
    """Valid files of every kind (the seeds of the mutations), keys, and a tiny saved model."""

    def __init__(self, root: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from atelier.io import save_tensors
        from atelier.metrics.ratings import Rating
        from atelier.models.registry import create_model
        from atelier.protect.envelope import Key, bundle, seal
        from atelier.protect.signing import MANIFEST_NAME, SIGNATURE_NAME, sign_directory
        from atelier.train.checkpoint import split_tensors

        self.root = root
        rng = np.random.default_rng(0)
        self.image_seeds = image_seeds()
        self.idx_images = _idx(2051, (2, 5, 5), bytes(rng.integers(0, 256, 50, dtype=np.uint8)))
        self.idx_labels = _idx(2049, (2,), bytes([3, 7]))
        self.mnist_bomb = gzip.compress(self.idx_images + bytes(64 * MiB), 1)
        self.cifar_batch = bytes([3]) + bytes(range(256)) * 12 + bytes([9]) + bytes(CIFAR_RECORD - 1)
        self.cifar_archive = tar_bytes([("cifar-10-batches-bin/batches.meta.txt", b"airplane\n" * 10, b"0"),
                                        ("cifar-10-batches-bin/test_batch.bin", self.cifar_batch, b"0")], gz=True)
        # a full-size test batch of zeros (30 MB read, 10,000 images made), and 200 MiB of an unwanted member
        self.cifar_bombs = [tar_bytes([("cifar-10-batches-bin/test_batch.bin", bytes(10_000 * CIFAR_RECORD), b"0")],
                                      gz=True),
                            tar_bytes([("cifar-10-batches-bin/junk", bytes(200 * MiB), b"0"),
                                       ("cifar-10-batches-bin/test_batch.bin", self.cifar_batch, b"0")], gz=True)]

        save_tensors({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3, dtype=torch.float16),
                      "n": torch.tensor([1, 2], dtype=torch.int64)}, root / "seed.safetensors", metadata={"k": "v"})
        self.safetensors = (root / "seed.safetensors").read_bytes()
        self.pth = []
        for zipped in (True, False):  # torch.save's zip format, and the legacy one (a bare pickle stream)
            buf = io.BytesIO()
            torch.save({"w": torch.arange(4.0), "b": torch.zeros(2, dtype=torch.int32)}, buf,
                       _use_new_zipfile_serialization=zipped)
            self.pth.append(buf.getvalue())

        torch.manual_seed(0)
        model = create_model("dcgan", g_width=8, d_width=8, latent_dim=8)
        self.model_dir = model.save_pretrained(root / "model")
        self.model_config = (self.model_dir / "config.json").read_bytes()
        self.model_weights = (self.model_dir / "model.safetensors").read_bytes()
        layer = torch.nn.Linear(3, 2)
        optimiser = torch.optim.Adam(layer.parameters())
        layer(torch.ones(1, 3)).sum().backward()
        optimiser.step()  # a training state as checkpoints hold it: moments, step counts, hyper-parameters
        tensors: dict[str, torch.Tensor] = {}
        plain = split_tensors({"step": 1, "optimiser": optimiser.state_dict()}, "state", tensors)
        self.state_json = dumps(plain)
        save_tensors(tensors, root / "state.safetensors")
        self.state_tensors = (root / "state.safetensors").read_bytes()

        self.keys = {"raw": Key.generate(), "passphrase": Key(passphrase=b"fuzz-passphrase")}
        self.bundle = bundle(self.model_config, self.model_weights)
        self.envelope = seal(self.bundle, self.keys["raw"], root / "seed.atlenc", chunk_size=4096).read_bytes()
        self.passphrase_envelope = build_envelope(self.bundle, self.keys["passphrase"], kdf=CHEAP_KDF, chunk_size=4096)

        self.signing_key, self.other_signing_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        signed = root / "signed-seed"
        import shutil

        shutil.copytree(self.model_dir, signed)
        sign_directory(signed, self.signing_key, signer="fuzz")
        self.manifest = (signed / MANIFEST_NAME).read_bytes()
        self.signature = (signed / SIGNATURE_NAME).read_bytes()
        public = self.signing_key.public_key()
        self.public_key_line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        self.public_pem = public.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.private_pem = self.signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption())
        self.private_openssh = self.signing_key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.OpenSSH,
                                                              serialization.NoEncryption())
        self.private_pem_encrypted = self.signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"fuzz-passphrase"))

        self.run_config_json = b'{"model_name": "dcgan", "train": {"steps": 3}, "model": {"g_width": 8}}'
        self.run_config_toml = b'model_name = "dcgan"\n[train]\nsteps = 3\n[model]\ng_width = 8\n'
        self.augment_yaml = b"ops:\n  - {name: rotate, p: 0.4, degrees: 20}\n  - name: blur\n    sigma: [0.2, 1.5]\n" \
                            b"  - noise\n"

        images = rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
        self.npz_seeds = []
        for save, arrays in ((np.savez, {"images": images, "labels": np.array([1, 2])}),
                             (np.savez_compressed, {"images": images.astype(np.float32) / 255}),
                             (np.savez, {"images": np.asfortranarray(images[..., 0])})):
            buf = io.BytesIO()
            save(buf, **arrays)
            self.npz_seeds.append(buf.getvalue())
        self.zip_seeds = [zip_bytes([("a.png", self.image_seeds[0], zipfile.ZIP_DEFLATED),
                                     ("sub/b.png", self.image_seeds[1], zipfile.ZIP_STORED)])]
        # bzip2 members of 64 MiB of zeros (a few hundred bytes each) declaring a few bytes: zipfile would
        # inflate them whole before cutting them to their declared size
        self.npz_seeds.append(zip_bytes([("images.npy", npy_bytes("|u1", False, (1, 2, 5), bytes(64 * MiB)),
                                          zipfile.ZIP_BZIP2)], declare={"images.npy": 138}))
        self.zip_seeds.append(zip_bytes([("a.png", bytes(64 * MiB), zipfile.ZIP_BZIP2)], declare={"a.png": 10}))

        rating = Rating(item_id="run/1/0", rater_id="r1", question="realism", score=4.0, model="run")
        self.ratings = (dumps(rating.to_dict()) + b"\n") * 2

    @staticmethod
    def canonical(obj: Any) -> bytes:
        # "surrogatepass": a lone surrogate in a generated path becomes bytes that are not UTF-8, as a
        # buggy signer could write them
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")


# -- the readers and what each may raise -------------------------------------------------------------------------

def _same(world: World, workdir: Path, case: Any) -> Any:
    return case


def _readers() -> list[Reader]:
    from atelier.augment.pipeline import AugmentConfig
    from atelier.config import load_config_file
    from atelier.data.base import DataError
    from atelier.data.cifar10 import load_cifar10, parse_batch
    from atelier.data.images import (MAX_PIXELS, clean_upload, decode_image, image_size, read_image, read_image_bytes,
                                     strict_pil)
    from atelier.data.mnist import load_mnist, parse_idx
    from atelier.device import TooLargeError
    from atelier.io import FileFormatError, load_json, load_tensors
    from atelier.metrics.ratings import RatingStore
    from atelier.metrics.sources import load_generated
    from atelier.models.pretrained import load_pretrained
    from atelier.protect.envelope import MAX_KDF_MEMORY, IntegrityError, inspect_envelope, open_envelope, open_model
    from atelier.protect.signing import SignatureError, load_private_key, load_public_keys, verify_directory
    from atelier.serve.operations import photo, upload_members
    from atelier.train.checkpoint import load_train_state
    from atelier.weights import read_state_dict

    def decode(world: World, path: Path) -> Any:
        with strict_pil():
            return decode_image(path, 16)

    return [
        # images: at most MAX_PIXELS (50 M) pixels are decoded, but what a case may touch is bounded by the
        # generators' 4 MiB of inflated data; see docs/errors.md for the bound by construction
        Reader("images.read_image", image_inputs, write_input("input.png"), lambda w, p: read_image(p), (DataError,),
               memory=192 * MiB),
        Reader("images.read_image_bytes", image_inputs, _same, lambda w, d: read_image_bytes(d, size=32), (DataError,),
               memory=192 * MiB),
        Reader("images.decode_image", image_inputs, write_input("input.jpg"), decode, (DataError,), memory=192 * MiB),
        Reader("images.image_size", image_inputs, write_input("input.bmp"), lambda w, p: image_size(p), (DataError,)),
        Reader("images.clean_upload", image_inputs, _same, lambda w, d: clean_upload(d, max_side=64), (DataError,),
               memory=192 * MiB),
        Reader("serve.photo", image_inputs, _same,
               lambda w, d: photo(d, max_pixels=MAX_PIXELS, max_side=64, what="the upload"), (DataError,),
               memory=192 * MiB),
        Reader("mnist.parse_idx", idx_inputs, _same,
               lambda w, d: parse_idx(d, magic=2051, ndim=3, source="fuzz"), (DataError,)),
        Reader("mnist.load_mnist", mnist_inputs, prepare_mnist,
               lambda w, folder: load_mnist(data_dir=folder, split="test", verify=False, progress=False),
               (DataError, TooLargeError), memory=96 * MiB),
        Reader("cifar10.parse_batch", cifar_batch_inputs, _same, lambda w, d: parse_batch(d, source="fuzz"),
               (DataError,)),
        Reader("cifar10.load_cifar10(archive)", cifar_archive_inputs, write_input("cifar-10-binary.tar.gz"),
               lambda w, p: load_cifar10(data_dir=p, split="test", verify=False, download=False, progress=False),
               (DataError, TooLargeError), memory=160 * MiB, ci_share=0.5),
        Reader("io.load_tensors", safetensors_inputs, write_input("t.safetensors"), lambda w, p: load_tensors(p),
               (FileFormatError,)),
        Reader("weights.read_state_dict", pth_inputs, write_input("w.pth"), lambda w, p: read_state_dict(p),
               (DataError,)),
        Reader("pretrained.load_pretrained", model_inputs, prepare_model, lambda w, p: load_pretrained(p),
               (ValueError, FileNotFoundError), ci_share=0.5),
        Reader("checkpoint.load_train_state", train_state_inputs, prepare_train_state,
               lambda w, p: load_train_state(p), (FileFormatError,)),
        Reader("envelope.open_model", envelope_inputs, write_input("m.atlenc"),
               lambda w, p: open_model(p, w.keys["raw"]), (IntegrityError,)),
        Reader("envelope.inspect_envelope", envelope_inputs, write_input("m.atlenc"), lambda w, p: inspect_envelope(p),
               (IntegrityError,)),
        Reader("envelope.open_envelope(passphrase)", passphrase_envelope_inputs, write_input("m.atlenc"),
               lambda w, p: open_envelope(p, w.keys["passphrase"]), (IntegrityError,),
               memory=MAX_KDF_MEMORY + 64 * MiB),  # a slot may ask the KDF for up to MAX_KDF_MEMORY
        Reader("envelope.load_pretrained(sealed)", sealed_bundles, prepare_sealed,
               lambda w, p: load_pretrained(p, key=w.keys["raw"]), (ValueError, FileNotFoundError), ci_share=0.5),
        Reader("signing.verify_directory", signed_inputs, prepare_signed,
               lambda w, p: verify_directory(p, [w.signing_key.public_key()]), (SignatureError,)),
        Reader("signing.load_public_keys", public_key_inputs, write_input("keys.pub"),
               lambda w, p: load_public_keys(p), (SignatureError,)),
        Reader("signing.load_private_key", private_key_inputs, prepare_private_key,
               lambda w, a: load_private_key(*a), (SignatureError,)),
        Reader("config.load_config_file", config_inputs, prepare_suffixed, lambda w, p: load_config_file(p),
               (ValueError,)),
        Reader("io.load_json", json_inputs, write_input("x.json"), lambda w, p: load_json(p), (FileFormatError,)),
        Reader("augment.AugmentConfig.from_file", augment_inputs, prepare_suffixed,
               lambda w, p: AugmentConfig.from_file(p), (ValueError,)),
        Reader("metrics.load_generated(npz)", npz_inputs, write_input("s.npz"), lambda w, p: load_generated(p),
               (DataError,), memory=96 * MiB),
        Reader("serve.upload_members(zip)", upload_inputs, _same, lambda w, d: upload_members(d, max_bytes=2 * MiB),
               (DataError,), memory=96 * MiB),
        Reader("ratings.RatingStore.load", ratings_inputs, write_input("r.jsonl"),
               lambda w, p: RatingStore(p).load(), (ValueError,)),
    ]


READERS = _readers()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("reader-fuzz-seeds"))


@pytest.fixture(scope="module")
def fuzz_env() -> Iterator[None]:
    """Size checks refuse above ``MEMORY_LIMIT``; tracemalloc runs for the module (it slows Python code
    a little and sees numpy's buffers, not PIL's or torch's: the RSS measurement covers those)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ATELIER_MEMORY_LIMIT", MEMORY_LIMIT)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()
    patch.undo()


def _record(profile: str, reader: Reader, stats: Stats, wall: float) -> None:
    line = {"reader": reader.name, "profile": profile, "memory_bound_mib": reader.memory // MiB,
            "wall_s": round(wall, 1), **stats.as_dict()}
    print(json.dumps(line))
    target = os.environ.get("ATELIER_FUZZ_REPORT")
    if target:
        from atelier.io import atomic_write_json

        report = json.loads(Path(target).read_text()) if Path(target).is_file() else {}
        report[f"{profile}:{reader.name}"] = line
        atomic_write_json(target, report)


def fuzz(reader: Reader, world: World, workdir: Path, profile: str, examples: int) -> Stats:
    stats = Stats()
    warm = []
    started = time.perf_counter()

    @settings(settings.get_profile(profile), max_examples=examples)
    @given(shown_case=reader.inputs(world).map(Shown))
    def check(shown_case: Shown) -> None:
        case = shown_case.value
        if not warm:  # the reader's lazy imports and first-call caches are not part of any case
            with contextlib.suppress(*reader.errors):
                reader.read(world, reader.prepare(world, workdir, case))
            warm.append(True)
        run_case(reader, world, workdir, case, stats)

    check()
    _record(profile, reader, stats, time.perf_counter() - started)  # wall: generating the files too
    return stats


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_reader_refuses_generated_files_with_its_documented_errors(reader, world, fuzz_env, tmp_path) -> None:
    examples = max(10, int(CI_EXAMPLES * reader.ci_share))
    stats = fuzz(reader, world, tmp_path, "reader-fuzz-ci", examples)
    assert stats.cases >= examples and stats.refused > 0  # the generators do reach the readers' refusals


@pytest.mark.slow
@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_reader_fuzz_large_budget(reader, world, fuzz_env, tmp_path) -> None:
    stats = fuzz(reader, world, tmp_path, "reader-fuzz-slow", SLOW_EXAMPLES)
    assert stats.cases >= SLOW_EXAMPLES


# -- the inputs that found bugs, kept as fixed cases (each escaped, hung or over-allocated before) -------------

def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _sealed(world: World, config: bytes, weights: bytes) -> bytes:
    from atelier.protect.envelope import bundle

    return build_envelope(bundle(config, weights), world.keys["raw"])


def _slot_with(world: World, kdf: dict) -> bytes:
    return build_envelope(world.bundle, world.keys["passphrase"], kdf=kdf)


@dataclass(frozen=True)
class Fixed:
    """An input that found a bug: ``reader`` must refuse it (or accept it, ``refused=False``) within its
    bounds, or within ``memory`` when the bug was an allocation the reader no longer makes."""

    reader: str
    why: str
    make: Callable[[World], Any]
    refused: bool = True
    memory: int | None = None


def _huge_shape(dims: int) -> bytes:
    header = dumps({"a": {"dtype": "U8", "shape": [2**40] * dims, "data_offsets": [0, 0]}})
    return struct.pack("<Q", len(header)) + header


def _billion_laughs(levels: int = 10, width: int = 9) -> bytes:
    lines = ["l0: &l0 [lol, lol]"] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]"
                                      for i in range(1, levels + 1)]
    return ("\n".join(lines) + f"\nops: [{{name: blur, sigma: *l{levels}}}]\n").encode()


def _nested_header_envelope(world: World, depth: int) -> bytes:
    """An envelope prefix declaring a header of ``depth`` nested lists (valid magic, version, slots)."""
    from atelier.protect.envelope import MAGIC, PREFIX

    header = _deep(depth)
    return PREFIX.pack(MAGIC, 1, 0, 0, len(header)) + header + bytes(1024 + 64)


INF_HEADER = {"cipher": "AES-256-GCM", "chunk_size": float("inf"), "content": "atelier-model-bundle/1",
              "file_id": "f", "plaintext_sha256": "0" * 64, "plaintext_size": 10}

def _short_ed25519_pem() -> bytes:
    """A well-formed PKCS#8 PEM for Ed25519 whose key is 31 bytes, not 32 (the slow fuzz run's find)."""
    def tlv(tag: int, value: bytes) -> bytes:
        return bytes([tag, len(value)]) + value

    der = tlv(0x30, tlv(0x02, b"\x00") + tlv(0x30, tlv(0x06, b"\x2b\x65\x70")) + tlv(0x04, tlv(0x04, b"\x01" * 31)))
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


#: A 10x12 PNG whose broken IDAT is followed by bytes read as a 201 MB chunk length (the slow fuzz run's find).
DAMAGED_PNG_CHUNK = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\n\x00\x00\x00\x0c\x08\x00\x00\x00\x00~\x00s|"
                     b"\x0c\x00\x00\x8fIDAT\x01\x16\x0c\x18\x00\x00$'(28<l\x7f\x82\x84\xa2\xaa\xe2\xeb\xf2\xfa")

REGRESSIONS = [
    Fixed("io.load_json", "RecursionError from nesting", lambda w: _deep(100_000)),
    Fixed("io.load_json", "a bare ValueError (no file named) from a 5,000-digit integer", lambda w: b"9" * 5000),
    Fixed("config.load_config_file", "RecursionError from TOML nesting",
          lambda w: SuffixedCase(".toml", b"a = " + _deep(100_000))),
    Fixed("io.load_tensors", "RecursionError from a nested header",
          lambda w: struct.pack("<Q", 5 + 40_000 + 1) + b'{"a":' + _deep(20_000) + b"}"),
    Fixed("io.load_tensors", "150 s of bignum products for a shape of 200,000 dimensions",
          lambda w: _huge_shape(200_000)),
    Fixed("metrics.load_generated(npz)", "MemoryError: a header declaring 10 TB",
          lambda w: zip_bytes([("images.npy", npy_bytes("|u1", False, (10**7, 1000, 1000), bytes(100)), 0)]),
          memory=8 * MiB),
    Fixed("metrics.load_generated(npz)", "AttributeError: a bare .npy named .npz",
          lambda w: npy_bytes("|u1", False, (2, 4, 4), bytes(32))),
    Fixed("metrics.load_generated(npz)", "BadZipFile escaped", lambda w: b"PK\x03\x04" + bytes(60)),
    Fixed("metrics.load_generated(npz)", "numpy's tokenize.TokenError for an unbalanced header",
          lambda w: zip_bytes([("images.npy", npy_bytes(None, None, None, b"", raw_header="[" * 5000), 0)])),
    Fixed("metrics.load_generated(npz)", "a bzip2 member inflating 64 MiB past its declared 138 bytes",
          lambda w: w.npz_seeds[-1], memory=16 * MiB),
    Fixed("mnist.load_mnist", "a gzip bomb: 64 MiB of zeros after a 2-image header",
          lambda w: MnistCase(w.mnist_bomb, w.idx_labels), memory=16 * MiB),
    Fixed("mnist.parse_idx", "numpy's ValueError for the shape (2**32 - 1, 2**32 - 1, 0)",
          lambda w: _idx(2051, (2**32 - 1, 2**32 - 1, 0), b"")),
    Fixed("mnist.load_mnist", "a RuntimeError resizing images of 0 x 5 pixels",
          lambda w: MnistCase(_idx(2051, (2, 0, 5), b""), w.idx_labels)),
    Fixed("envelope.open_model", "OverflowError: a canonical header with chunk_size Infinity",
          lambda w: build_envelope(w.bundle, w.keys["raw"], header=INF_HEADER)),
    Fixed("envelope.inspect_envelope", "RecursionError: a header of 30,000 nested lists",
          lambda w: _nested_header_envelope(w, 30_000)),
    Fixed("envelope.open_envelope(passphrase)", "argon2's HashingError: 64 lanes in 8 KiB",
          lambda w: _slot_with(w, {"name": "argon2id", "salt": "00" * 16, "time_cost": 1, "memory_kib": 8,
                                   "parallelism": 64})),
    Fixed("envelope.open_envelope(passphrase)", "a key slot asking scrypt for 4 GiB and minutes",
          lambda w: _slot_with(w, {"name": "scrypt", "salt": "00" * 16, "n": 2**20, "r": 32, "p": 16}),
          memory=64 * MiB),
    Fixed("envelope.open_model", "a sealed config that is a list, not an object", lambda w: _sealed(w, b"[]", b"")),
    Fixed("augment.AugmentConfig.from_file", "billion laughs walked by _normalise (9**10 values)",
          lambda w: SuffixedCase(".yaml", _billion_laughs())),
    Fixed("augment.AugmentConfig.from_file", "RecursionError: an alias inside itself",
          lambda w: SuffixedCase(".yaml", b"ops: [{name: blur, sigma: &s [*s]}]\n")),
    Fixed("images.decode_image", "PIL's UnidentifiedImageError escaped", lambda w: b"not an image"),
    Fixed("signing.load_private_key", "cryptography's InternalError: a PKCS#8 Ed25519 key of 31 bytes",
          lambda w: PrivateKeyCase(_short_ed25519_pem(), None)),
    Fixed("images.read_image", "192 MiB reserved: PIL reads a damaged PNG chunk by its declared length",
          lambda w: DAMAGED_PNG_CHUNK, memory=8 * MiB),
    Fixed("images.decode_image", "192 MiB reserved: PIL reads a damaged PNG chunk by its declared length",
          lambda w: DAMAGED_PNG_CHUNK, memory=8 * MiB),
    Fixed("signing.verify_directory", "64 MiB reserved to read a 1 KiB manifest",
          lambda w: SignedCase(w.manifest, "trusted"), refused=False, memory=8 * MiB),
    Fixed("weights.read_state_dict", "128 MiB reserved for a legacy pickle's damaged string length",
          lambda w: b"X\xb8\x89\x04\x08\nU\x9ex\xc9\xff\xb9\xb5,\xdd;\x0cX\x07\x8b\xb4j\xc4", memory=8 * MiB),
    Fixed("checkpoint.load_train_state", "KeyError: a tensor reference to nothing",
          lambda w: TrainStateCase(b'{"s:a": {"__tensor__": "missing"}}', w.state_tensors)),
    Fixed("ratings.RatingStore.load", "RecursionError from one nested line", lambda w: _deep(100_000) + b"\n"),
    Fixed("serve.upload_members(zip)", "a bzip2 member inflating 64 MiB past its declared 10 bytes",
          lambda w: w.zip_seeds[-1], memory=16 * MiB),
    Fixed("serve.upload_members(zip)", "zlib.error from a damaged deflate stream",
          lambda w: zip_bytes([("a.png", bytes(64), zipfile.ZIP_DEFLATED)]).replace(
              zlib.compress(bytes(64))[2:-4], b"\xff" * 5, 1)),
]


@pytest.mark.parametrize("fixed", REGRESSIONS, ids=[f"{f.reader}: {f.why}" for f in REGRESSIONS])
def test_inputs_that_found_bugs_are_handled_within_bounds(fixed, world, fuzz_env, tmp_path) -> None:
    reader = next(r for r in READERS if r.name == fixed.reader)
    if fixed.memory is not None:
        reader = dataclasses.replace(reader, memory=fixed.memory)
    case = fixed.make(world)
    with contextlib.suppress(*reader.errors):  # warm: lazy imports are not part of the case
        reader.read(world, reader.prepare(world, tmp_path, case))
    stats = Stats()
    run_case(reader, world, tmp_path, case, stats)
    assert stats.refused == fixed.refused, f"{fixed.reader}: {fixed.why}: {stats.errors}"
