"""CIFAR-10's binary reader on small archives built here in the official format (records of a label byte and
the R, G, B planes; ``cifar-10-batches-bin/*.bin`` in a .tar.gz), the download from 127.0.0.1, and the
JPEG tree through ``folder:``."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.data import DataError, load_dataset
from atelier.data import cifar10 as c10
from atelier.data.registry import SPECS

SHARED_JPEG = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10" / "cifar10-jpeg.tar.gz"
PER_BATCH = 2  # records in each small batch file
META = "".join(f"{name}\n" for name in c10.CLASSES) + "\n"  # as the official file: ten lines, then a blank one


def _record(label: int, r: np.ndarray | int, g: np.ndarray | int, b: np.ndarray | int) -> bytes:
    """One record: the label byte, then the R, G and B planes (32x32, row-major)."""
    planes = np.zeros((3, 32, 32), np.uint8)
    planes[0], planes[1], planes[2] = r, g, b
    return bytes([label]) + planes.tobytes()


def _batches() -> tuple[dict[str, bytes], dict[str, list[int]]]:
    """(file name -> bytes, file name -> labels) of five training batches and a test batch, PER_BATCH records each.

    data_batch_1's first record is pure red; its second has R = 8 x row, G = 8 x column, B = 7."""
    rng = np.random.default_rng(0)
    rows = np.arange(32, dtype=np.uint8)[:, None] * 8 * np.ones((1, 32), np.uint8)  # (32, 32): 8 x row index
    files, labels = {}, {}
    for k, name in enumerate(c10.SPLIT_FILES["all"]):
        labels[name] = [(PER_BATCH * k + j) % 10 for j in range(PER_BATCH)]
        recs = [_record(lab, *rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)) for lab in labels[name]]
        if k == 0:
            recs = [_record(labels[name][0], 255, 0, 0), _record(labels[name][1], rows, rows.T, 7)]
        files[name] = b"".join(recs)
    return files, labels


def _tar(path: Path, members: dict[str, bytes], *, gz: bool = True, links: dict[str, str] | None = None,
         again: str | None = None) -> Path:
    """A tar (gzip'd unless ``gz`` is False) of ``members`` (path -> bytes), plus symlinks (path -> target);
    ``again`` names a member stored a second time, right after the first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    items = list(members.items())
    if again is not None:
        items.insert(1, (again, members[again]))
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _official(files: dict[str, bytes], meta: str | None = META) -> dict[str, bytes]:
    """Archive members as the official archive names them (the class-name file in the middle)."""
    members = {f"{c10.FOLDER_NAME}/{name}": data for name, data in files.items()}
    if meta is not None:
        members = {**dict(list(members.items())[:2]), f"{c10.FOLDER_NAME}/{c10.META_NAME}": meta.encode(),
                   **dict(list(members.items())[2:])}
    return members


def _pin(monkeypatch: pytest.MonkeyPatch, archive: Path) -> None:
    """Make ``archive`` the one the reader expects (its size and SHA-256, PER_BATCH records a batch)."""
    monkeypatch.setattr(c10, "ARCHIVE_SIZE", archive.stat().st_size)
    monkeypatch.setattr(c10, "ARCHIVE_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(c10, "RECORDS_PER_BATCH", PER_BATCH)


@pytest.fixture
def home(atelier_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(c10.URL_ENV, raising=False)
    return atelier_home


@pytest.fixture
def small(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch):
    """(archive path, batch bytes by file name, labels by file name), with the archive pinned."""
    files, labels = _batches()
    archive = _tar(tmp_path / "site" / c10.ARCHIVE_NAME, _official(files))
    _pin(monkeypatch, archive)
    return archive, files, labels


# -------------------------------------------------------------------------------- the record format


def test_label_plane_and_row_order(small) -> None:
    archive, _, labels = small
    ds = load_dataset("cifar10", data_dir=archive, resolution=32, split="train", progress=False)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [lab for name in c10.SPLIT_FILES["train"] for lab in labels[name]]  # batches 1..5 in order
    assert ds.classes == list(c10.CLASSES) and ds.name == "cifar10:train"
    assert ds.meta == {"source": str(archive), "split": "train", "verified": True, "format": "binary",
                       "original_resolution": 32}
    red = ds.images[0]
    assert (red[0] == 255).all() and (red[1:] == 0).all()  # the first plane is red
    grad = ds.images[1]
    assert grad[0, :, 0].tolist() == [8 * y for y in range(32)] and (grad[0, 0, :] == 0).all()  # rows, then columns
    assert grad[1, 0, :].tolist() == [8 * x for x in range(32)] and (grad[2] == 7).all()


def test_splits_resolution_and_slices(small) -> None:
    archive, files, labels = small
    test = load_dataset("cifar10", data_dir=archive, resolution=32, split="test", progress=False)
    assert test.labels.tolist() == labels["test_batch.bin"] and test.name == "cifar10:test"
    first = np.frombuffer(files["test_batch.bin"][1:c10.RECORD_BYTES], np.uint8).reshape(3, 32, 32)
    assert torch.equal(test.images[0], torch.from_numpy(first.copy()))
    every = load_dataset("cifar10", data_dir=archive, resolution=32, split="all", progress=False)
    train = load_dataset("cifar10", data_dir=archive, resolution=32, split="train", progress=False)
    assert torch.equal(every.images, torch.cat([train.images, test.images]))
    assert every.labels.tolist() == train.labels.tolist() + test.labels.tolist()
    part = load_dataset("cifar10", data_dir=archive, resolution=32, split="train[:3]", progress=False)
    assert len(part) == 3 and torch.equal(part.images, train.images[:3]) and part.name == "cifar10:train[:3]"
    small16 = load_dataset("cifar10", data_dir=archive, resolution=16, split="train", progress=False)
    assert small16.images.shape == (10, 3, 16, 16) and small16.meta["original_resolution"] == 32
    assert (small16.images[0, 0] == 255).all() and (small16.images[0, 1:] == 0).all()
    with pytest.raises(DataError, match="unknown split"):
        c10.load_cifar10(data_dir=archive, split="valid")


def test_class_names_come_from_the_meta_file(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = _batches()
    monkeypatch.setattr(c10, "RECORDS_PER_BATCH", PER_BATCH)
    named = _tar(tmp_path / "named.tar.gz", _official(files, meta=META.upper()))
    assert load_dataset("cifar10", data_dir=named, verify=False, progress=False).classes == [n.upper() for n in c10.CLASSES]
    bare = _tar(tmp_path / "bare.tar.gz", _official(files, meta=None))
    assert load_dataset("cifar10", data_dir=bare, verify=False, progress=False).classes == list(c10.CLASSES)
    odd = _tar(tmp_path / "odd.tar.gz", _official(files, meta="cat\ncat\n"))
    with pytest.warns(UserWarning, match="batches.meta.txt: does not hold ten distinct class names"):
        assert load_dataset("cifar10", data_dir=odd, verify=False, progress=False).classes == list(c10.CLASSES)


def test_truncated_record_and_bad_label(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = _batches()
    monkeypatch.setattr(c10, "RECORDS_PER_BATCH", PER_BATCH + 1)
    cut = _tar(tmp_path / "cut.tar.gz", _official({**files, "data_batch_3.bin": files["data_batch_3.bin"] + b"\x01" * 100}))
    with pytest.raises(DataError, match=r"cut.tar.gz: cifar-10-batches-bin/data_batch_3.bin: truncated record: "
                                        r"the record at index 2 \(byte offset 6,146\) has only 100 of its 3,073 bytes"):
        load_dataset("cifar10", data_dir=cut, verify=False, progress=False)
    bad = bytearray(files["test_batch.bin"])
    bad[c10.RECORD_BYTES] = 10  # the second record's label
    folder = tmp_path / "bins"
    folder.mkdir()
    for name, data in {**files, "test_batch.bin": bytes(bad)}.items():
        (folder / name).write_bytes(data)
    with pytest.raises(DataError, match=r"test_batch.bin: the record at index 1 has label 10, but CIFAR-10's labels are 0 to 9"):
        load_dataset("cifar10", data_dir=folder, split="test", verify=False, progress=False)
    assert len(load_dataset("cifar10", data_dir=folder, split="train", verify=False, progress=False)) == 10
    with pytest.raises(DataError, match=r"data_batch_1.bin: holds 2 records, but a CIFAR-10 batch file holds 3.*verify=False"):
        load_dataset("cifar10", data_dir=folder, split="train", verify=True, progress=False)  # folders: the count is checked


def test_checksum_mismatch(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = _batches()
    plain = _tar(tmp_path / "a" / c10.ARCHIVE_NAME, _official(files), gz=False)
    pinned_size = c10.ARCHIVE_SIZE
    with pytest.raises(DataError, match=f"bytes, but the CIFAR-10 archive is cifar-10-binary.tar.gz \\({pinned_size:,} "
                                        f"bytes, SHA-256 {c10.ARCHIVE_SHA256}\\).*verify=False"):
        load_dataset("cifar10", data_dir=plain, progress=False)  # the real pin: a small archive is refused by its size
    _pin(monkeypatch, plain)
    assert load_dataset("cifar10", data_dir=plain, progress=False).meta["verified"] is True
    tampered = bytearray(plain.read_bytes())
    i = tampered.index(files["data_batch_1.bin"][:64]) + 10
    tampered[i] ^= 1  # one pixel: same size, other digest
    plain.write_bytes(bytes(tampered))
    with pytest.raises(DataError, match=f"checksum mismatch: expected sha256 {c10.ARCHIVE_SHA256}, got "
                                        f"{hashlib.sha256(tampered).hexdigest()}") as err:
        load_dataset("cifar10", data_dir=plain, progress=False)
    assert str(plain) in str(err.value) and "delete it" not in str(err.value)  # not in the cache: not ours to delete
    assert load_dataset("cifar10", data_dir=plain, verify=False, progress=False).meta["verified"] is False


# -------------------------------------------------------------------------------- where the data comes from


def test_data_dir_forms(small, tmp_path: Path) -> None:
    archive, files, _ = small
    expect = load_dataset("cifar10", data_dir=archive, resolution=32, split="all", progress=False)
    extracted = tmp_path / "x" / c10.FOLDER_NAME
    extracted.mkdir(parents=True)
    for name, data in files.items():
        (extracted / name).write_bytes(data)
    (extracted / c10.META_NAME).write_text(META)
    loose = tmp_path / "loose"  # the .bin files alone: no class-name file
    loose.mkdir()
    for name, data in files.items():
        (loose / name).write_bytes(data)
    forms = {archive: True, archive.parent: True, extracted: False, extracted.parent: False, loose: False}
    for form, verified in forms.items():
        ds = load_dataset("cifar10", data_dir=form, resolution=32, split="all", progress=False)
        assert torch.equal(ds.images, expect.images) and torch.equal(ds.labels, expect.labels), form
        assert ds.classes == list(c10.CLASSES) and ds.meta["verified"] is verified, form
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"empty holds neither {c10.ARCHIVE_NAME}, nor its extracted {c10.FOLDER_NAME}"):
        load_dataset("cifar10", data_dir=tmp_path / "empty", progress=False)
    (loose / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match="CIFAR-10 batch files missing from .*loose: data_batch_4.bin"):
        load_dataset("cifar10", data_dir=loose, split="train", progress=False)
    assert len(load_dataset("cifar10", data_dir=loose, split="test", progress=False)) == PER_BATCH


def test_archive_is_read_safely(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = _batches()
    members = _official(files)
    monkeypatch.setattr(c10, "RECORDS_PER_BATCH", PER_BATCH)
    before = sorted(p.name for p in tmp_path.iterdir())

    def load(path: Path) -> None:
        load_dataset("cifar10", data_dir=path, verify=False, progress=False)

    link = {k: v for k, v in members.items() if not k.endswith("data_batch_2.bin")}
    with pytest.raises(DataError, match="data_batch_2.bin: not a regular file"):
        load(_tar(tmp_path / "t" / "link.tar.gz", link, links={f"{c10.FOLDER_NAME}/data_batch_2.bin": "/etc/passwd"}))
    big = {**members, f"{c10.FOLDER_NAME}/data_batch_1.bin": files["data_batch_1.bin"] * 2}
    with pytest.raises(DataError, match=f"data_batch_1.bin: declares 12,292 bytes, more than the {2 * c10.RECORD_BYTES:,}"):
        load(_tar(tmp_path / "t" / "big.tar.gz", big))
    elsewhere = {f"../{k}": v for k, v in members.items()}  # names outside the expected ones are never read
    with pytest.raises(DataError, match="the archive lacks cifar-10-batches-bin/data_batch_1.bin"):
        load(_tar(tmp_path / "t" / "elsewhere.tar.gz", elsewhere))
    first = next(iter(members))
    with pytest.raises(DataError, match="data_batch_1.bin: appears twice"):
        load(_tar(tmp_path / "t" / "twice.tar", members, gz=False, again=first))
    (tmp_path / "t" / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="junk.tar.gz: cannot read the archive"):
        load(tmp_path / "t" / "junk.tar.gz")
    bomb = {f"{c10.FOLDER_NAME}/readme.html": bytes(1 << 20), **members}  # 1 MiB of zeros, inflated and skipped
    monkeypatch.setattr(c10, "_MAX_TAR_BYTES", 256 * 1024)
    with pytest.raises(DataError, match="inflates to more than 262,144 bytes"):
        load(_tar(tmp_path / "t" / "bomb.tar.gz", bomb))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "t"])  # nothing extracted anywhere
    assert not any((tmp_path / "t").glob("*/"))


@pytest.mark.network
def test_download_into_the_cache(small, home: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _, _ = small
    url, hits = serve(archive.parent)
    ds = load_dataset("cifar10", base_url=url, resolution=32, split="train[:3]", progress=False)
    cached = home / "cifar10" / c10.ARCHIVE_NAME
    assert hits == [f"/{c10.ARCHIVE_NAME}"] and cached.read_bytes() == archive.read_bytes()
    assert len(ds) == 3 and ds.meta["source"] == str(cached) and ds.meta["verified"] is True
    assert sorted(p.name for p in cached.parent.iterdir()) == [c10.ARCHIVE_NAME]  # no temporary file left
    again = load_dataset("cifar10", download=False, resolution=32, split="train[:3]", progress=False)
    assert torch.equal(again.images, ds.images) and len(hits) == 1
    cached.unlink()
    monkeypatch.setenv(c10.URL_ENV, url + c10.ARCHIVE_NAME)  # the environment variable: the archive's own URL
    assert len(load_dataset("cifar10", split="test", progress=False)) == PER_BATCH and len(hits) == 2


@pytest.mark.network
def test_download_checksum_mismatch_leaves_nothing(small, home: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _, _ = small
    url, _ = serve(archive.parent)
    monkeypatch.setattr(c10, "ARCHIVE_SHA256", "0" * 64)
    with pytest.raises(DataError, match=f"checksum mismatch for {c10.ARCHIVE_NAME} downloaded from {url}"):
        load_dataset("cifar10", base_url=url, progress=False)
    assert list((home / "cifar10").iterdir()) == []


@pytest.mark.network
def test_offline_errors_say_what_to_put_where(home: Path) -> None:
    where = home / "cifar10"
    what = f"{c10.ARCHIVE_NAME} \\(170,052,171 bytes, SHA-256 {c10.ARCHIVE_SHA256}\\)"
    with pytest.raises(DataError, match=f"not in the cache and download=False. .*put {what}.* in {where} ") as err:
        load_dataset("cifar10", download=False, progress=False)
    assert {o.key for o in err.value.options} == {"downloads_off", "data_dir"}
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match=f"could not download the CIFAR-10 archive {c10.ARCHIVE_NAME} from "
                                        f"http://127.0.0.1:{port}/mirror/{c10.ARCHIVE_NAME}: .*refused.*put {what}.* in {where} "):
        load_dataset("cifar10", base_url=f"http://127.0.0.1:{port}/mirror/", progress=False)
    assert not any(where.iterdir())


def test_registry_lists_cifar10(home: Path) -> None:
    assert "cifar10" in SPECS
    with pytest.raises(DataError, match="use one of digits, mnist, cifar10, folder:PATH"):
        load_dataset("cifar100")
    assert c10.archive_url() == c10.DEFAULT_URL
    assert c10.archive_url("http://mirror/x") == f"http://mirror/x/{c10.ARCHIVE_NAME}"


# -------------------------------------------------------------------------------- the JPEG tree via folder:


def test_train_test_jpeg_tree_through_folder(tmp_path: Path) -> None:
    colours = {"airplane": (0, 0, 255), "cat": (255, 0, 0), "truck": (0, 255, 0)}
    for split, n in (("train", 2), ("test", 1)):
        for name, rgb in colours.items():
            (tmp_path / "c10" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), rgb).save(tmp_path / "c10" / split / name / f"{i:04d}.jpg", quality=95)
    train = load_dataset(f"folder:{tmp_path / 'c10'}", resolution=32, split="train", progress=False)
    test = load_dataset(f"folder:{tmp_path / 'c10'}", resolution=32, split="test", progress=False)
    assert train.classes == test.classes == ["airplane", "cat", "truck"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [0, 1, 2]
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    red = test.images[1].float().mean((1, 2))  # the "cat" image: red survives JPEG within a few levels
    assert red[0] > 245 and red[1] < 10 and red[2] < 10


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_JPEG.is_file() or shutil.which("tar") is None, reason="needs the shared CIFAR-10 JPEG tree and tar")
def test_shared_jpeg_tree_through_folder(tmp_path: Path) -> None:
    subprocess.run(["tar", "xzf", str(SHARED_JPEG), "-C", str(tmp_path)], check=True)  # 60,000 files: tar is quicker
    try:
        test = load_dataset(f"folder:{tmp_path / 'cifar10'}", resolution=32, split="test", progress=False)
    finally:
        shutil.rmtree(tmp_path / "cifar10")  # not left for pytest's clean-up of old temporary folders
    assert test.images.shape == (10_000, 3, 32, 32) and test.classes == list(c10.CLASSES)
    assert test.labels.bincount().tolist() == [1000] * 10


def test_cifar10_spec_reads_a_tree_of_its_ten_classes(tmp_path: Path) -> None:
    """``cifar10 --data-dir TREE`` (the shared JPEG re-encoding's layout): labels in the official order, marked
    unverified; a tree of other classes is refused, naming folder: as the way to use it."""
    for split in ("train", "test"):
        for label, name in enumerate(c10.CLASSES):
            (tmp_path / "c10" / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), (25 * label, 0, 0)).save(tmp_path / "c10" / split / name / "0000.png")
    data = load_dataset("cifar10", data_dir=tmp_path / "c10", resolution=32, split="all", progress=False)
    assert data.images.shape == (20, 3, 32, 32) and data.labels.tolist() == list(range(10)) * 2
    assert data.images[:10, 0, 0, 0].tolist() == [25 * i for i in range(10)]  # label i is the folder of class i
    assert data.classes == list(c10.CLASSES) and data.meta["verified"] is False
    assert data.meta["format"] == "image folder" and data.name == "cifar10:all"
    for split in ("train", "test"):
        (tmp_path / "c10" / split / "truck").rename(tmp_path / "c10" / split / "lorry")
    with pytest.raises(DataError, match="not CIFAR-10's.*folder:"):
        load_dataset("cifar10", data_dir=tmp_path / "c10", resolution=32, split="test", progress=False)
