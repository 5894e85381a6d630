"""Dataset loaders on real files (digits, MNIST from ../shared, generated image folders) and broken inputs."""

from __future__ import annotations

import gzip
import re
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from atelier.data import DataError, ImageDataset, load_dataset
from atelier.data import mnist as mnist_mod
from atelier.data.digits import split_indices
from atelier.data.folder import load_folder

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST not found at {MNIST_DIR}")


# --------------------------------------------------------------------------------------------- digits


def test_digits_splits_are_deterministic_and_partition_the_data() -> None:
    train = load_dataset("digits", split="train", progress=False)
    test = load_dataset("digits", split="test", progress=False)
    everything = load_dataset("digits", split="all", progress=False)
    assert (len(train), len(test), len(everything)) == (1438, 359, 1797)
    assert train.images.shape == (1438, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.classes == [str(i) for i in range(10)]
    assert train.name == "digits:train" and test.meta["split"] == "test"
    assert torch.equal(everything.images, torch.cat([train.images, test.images]))
    assert torch.equal(everything.labels, torch.cat([train.labels, test.labels]))
    assert torch.equal(load_dataset("digits", split="train", progress=False).images, train.images)
    tr, te = split_indices(1797)
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 1797


def test_a_split_can_be_sliced_into_disjoint_parts() -> None:
    train = load_dataset("digits", split="train", progress=False)
    public = load_dataset("digits", split="train[:1000]", progress=False)
    private = load_dataset("digits", split="train[1000:]", progress=False)
    middle = load_dataset("digits", split="train[10:20]", progress=False)
    assert (len(public), len(private), len(middle)) == (1000, 438, 10)
    assert torch.equal(torch.cat([public.images, private.images]), train.images)
    assert torch.equal(torch.cat([public.labels, private.labels]), train.labels)
    assert torch.equal(middle.images, train.images[10:20]) and public.classes == train.classes
    assert private.name == "digits:train[1000:]"
    for bad, says in [("train[5:5]", "empty"), ("train[:5000]", "holds 1,438"), ("train[1438:]", "holds 1,438"),
                      ("valid", "unknown split"), ("train[-5:]", "unknown split"), ("train[1:2:3]", "unknown split")]:
        with pytest.raises(DataError, match=re.escape(says)):
            load_dataset("digits", split=bad, progress=False)


def test_digits_at_native_resolution_are_the_sklearn_values_scaled_to_255() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    tr, te = split_indices(1797)
    order = np.concatenate([tr, te])
    expected = np.rint(bunch.images[order] * 255.0 / 16.0).astype(np.uint8)
    ds = load_dataset("digits", split="all", resolution=8)
    assert np.array_equal(ds.images[:, 0].numpy(), expected)
    assert np.array_equal(ds.labels.numpy(), bunch.target[order])
    assert ds.images.max() == 255


def test_digits_upscaling_keeps_the_intensity_and_channels_convert() -> None:
    small = load_dataset("digits", split="test", resolution=8).images.float().mean()
    big = load_dataset("digits", split="test", resolution=32, channels=3)
    assert big.images.shape == (359, 3, 32, 32)
    assert torch.equal(big.images[:, 0], big.images[:, 1]) and torch.equal(big.images[:, 1], big.images[:, 2])
    assert abs(big.images.float().mean() - small) / small < 0.03


# ------------------------------------------------------------------------------------------ real MNIST


@pytest.fixture(scope="module")
def mnist_all() -> ImageDataset:
    return load_dataset("mnist", split="all", data_dir=MNIST_DIR, progress=False)


@needs_mnist
def test_mnist_train_matches_the_known_facts() -> None:
    ds = load_dataset("mnist", split="train", data_dir=MNIST_DIR, progress=False)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert round(ds.images.double().mean().item(), 2) == 33.32
    assert ds.classes == [str(i) for i in range(10)] and ds.name == "mnist:train"
    assert torch.bincount(ds.labels).tolist()[:2] == [5923, 6742]


@needs_mnist
def test_mnist_test_and_all_splits(mnist_all: ImageDataset) -> None:
    test = load_dataset("mnist", split="test", data_dir=MNIST_DIR, progress=False)
    assert len(test) == 10000 and len(mnist_all) == 70000
    assert torch.equal(mnist_all.images[60000:], test.images)
    assert torch.equal(mnist_all.labels[60000:], test.labels)
    assert mnist_all.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


@needs_mnist
def test_mnist_resized_and_uncompressed_files(tmp_path: Path) -> None:
    # The same files without .gz are accepted and verify against the same (decompressed) checksums.
    for name in mnist_mod.SPLIT_FILES["test"]:
        with gzip.open(MNIST_DIR / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    native = load_dataset("mnist", split="test", data_dir=tmp_path, progress=False)
    big = load_dataset("mnist", split="test", data_dir=tmp_path, resolution=32, progress=False)
    assert big.images.shape == (10000, 1, 32, 32)
    assert torch.equal(big.labels, native.labels)
    assert abs(big.images.double().mean() - native.images.double().mean()) < 1.0


# ------------------------------------------------------------------------------------------ broken IDX


def test_fake_idx_checksum_mismatch_and_verify_false(fake_mnist) -> None:
    folder, sums, arrays = fake_mnist
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=folder, progress=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and mnist_mod.MNIST_SHA256["train-images-idx3-ubyte"] in msg
    assert sums["train-images-idx3-ubyte"] in msg and "verify=False" in msg and "--no-verify" in msg

    ds = load_dataset("mnist", data_dir=folder, verify=False, progress=False)
    assert np.array_equal(ds.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    everything = load_dataset("mnist", data_dir=folder, verify=False, split="all", resolution=14)
    assert everything.images.shape == (17, 1, 14, 14)


def test_fake_idx_verifies_against_the_pinned_table(fake_mnist, monkeypatch) -> None:
    folder, sums, _ = fake_mnist
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", sums)
    assert len(load_dataset("mnist", data_dir=folder, split="test", progress=False)) == 5


def _write(folder: Path, name: str, data: bytes, gz: bool = True) -> Path:
    path = folder / (f"{name}.gz" if gz else name)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong_image_magic", "magic number 2049, expected 2051"),
        ("wrong_label_magic", "magic number 2051, expected 2049"),
        ("truncated", "truncated"),
        ("trailing", "trailing bytes"),
        ("short_header", "too short for an IDX header"),
        ("count_mismatch", "11 labels"),
        ("bad_gzip", "cannot read or decompress"),
    ],
)
def test_broken_idx_files_name_the_file(fake_mnist, idx_bytes, case: str, expected: str) -> None:
    folder, _, arrays = fake_mnist
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    bad = "train-images-idx3-ubyte"
    if case == "wrong_image_magic":
        _write(folder, bad, idx_bytes(images, 2049))
    elif case == "wrong_label_magic":
        bad = "train-labels-idx1-ubyte"
        _write(folder, bad, idx_bytes(labels, 2051))
    elif case == "truncated":
        _write(folder, bad, idx_bytes(images, 2051)[:-1])
    elif case == "trailing":
        _write(folder, bad, idx_bytes(images, 2051) + b"\0")
    elif case == "short_header":
        _write(folder, bad, b"\x00\x00\x08\x03\x00\x00")
    elif case == "count_mismatch":
        bad = "train-labels-idx1-ubyte"
        _write(folder, bad, idx_bytes(labels[:11], 2049))
    elif case == "bad_gzip":
        (folder / f"{bad}.gz").write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(DataError, match=expected) as err:
        load_dataset("mnist", data_dir=folder, verify=False, progress=False)
    assert bad in str(err.value)


def test_uncompressed_idx_is_read_too(fake_mnist, idx_bytes) -> None:
    folder, _, arrays = fake_mnist
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    _write(folder, "t10k-images-idx3-ubyte", idx_bytes(arrays["t10k-images-idx3-ubyte"], 2051), gz=False)
    ds = load_dataset("mnist", data_dir=folder, split="test", verify=False)
    assert np.array_equal(ds.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_missing_mnist_files_and_folders(fake_mnist, atelier_home, tmp_path) -> None:
    folder, _, _ = fake_mnist
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=folder, split="test", verify=False)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    # No data_dir, empty cache, download=False: says where to put which files.
    with pytest.raises(DataError) as err:
        load_dataset("mnist", download=False)
    msg = str(err.value)
    assert str(atelier_home / "mnist") in msg and "train-images-idx3-ubyte.gz" in msg and "--data-dir" in msg


def test_damaged_file_in_the_cache_is_reported_not_trusted(fake_mnist, atelier_home) -> None:
    folder, _, _ = fake_mnist
    shutil.copytree(folder, atelier_home / "mnist")
    with pytest.raises(DataError, match="checksum mismatch.*delete it") as err:
        load_dataset("mnist", download=False)
    assert str(atelier_home / "mnist") in str(err.value)


# ------------------------------------------------------------------------------------------- folders


def _solid(size: tuple[int, int], colour, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost no data (a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    root = tmp_path / "pics"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "nested").mkdir(parents=True)
    _solid((40, 30), (200, 100, 50)).save(root / "cats" / "a.png")
    _solid((30, 50), 90, "L").save(root / "cats" / "b.jpg", quality=95)
    _solid((33, 33), (10, 200, 30)).save(root / "dogs" / "c.webp", lossless=True)
    _solid((50, 20), 160, "L").save(root / "dogs" / "d.bmp")
    _solid((21, 64), (0, 0, 255)).save(root / "dogs" / "nested" / "E.PNG")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / ".hidden.png").write_bytes(b"junk that must be ignored")
    return root


def test_labelled_folder_of_mixed_formats(labelled_folder: Path) -> None:
    ds = load_dataset(f"folder:{labelled_folder}", resolution=16, progress=False)
    assert ds.images.shape == (5, 3, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.classes == ["cats", "dogs"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert ds.name == "folder:pics:train" and ds.meta["skipped"] == 0
    img = ds.images.int()
    # Solid images stay solid through resize + crop; grey ones are replicated over the three channels.
    assert (img[0] - torch.tensor([200, 100, 50]).view(3, 1, 1)).abs().max() <= 1
    assert (img[1] - 90).abs().max() <= 2  # JPEG
    assert (img[3] - 160).abs().max() <= 1
    assert (img[4] - torch.tensor([0, 0, 255]).view(3, 1, 1)).abs().max() <= 1
    grey = load_dataset(str(labelled_folder), resolution=16, channels=1, progress=False)  # bare path spec
    assert grey.images.shape == (5, 1, 16, 16)
    assert abs(int(grey.images[0, 0, 0, 0]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1
    assert torch.equal(load_dataset(str(labelled_folder), resolution=16, split="all", progress=False).images, ds.images)


def test_image_in_root_means_unlabelled_and_grey_stays_one_channel(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _solid((8, 12), 30, "L").save(tmp_path / "root.png")
    _solid((12, 8), 220, "L").save(tmp_path / "sub" / "x.png")
    ds = load_folder(tmp_path, resolution=10, progress=False)
    assert ds.labels is None and ds.classes is None and ds.images.shape == (2, 1, 10, 10)
    assert ds.images[0].unique().tolist() == [30] and ds.images[1].unique().tolist() == [220]
    rgb = load_dataset(f"folder:{tmp_path}", resolution=10, channels=3, progress=False)
    assert rgb.images.shape == (2, 3, 10, 10) and torch.equal(rgb.images, ds.images.expand(-1, 3, -1, -1))


def test_resize_is_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    wide = np.zeros((20, 60), np.uint8)
    wide[:, 20:40] = 255  # only the centre square is white
    Image.fromarray(wide).save(tmp_path / "wide.png")
    ds = load_folder(tmp_path, resolution=10, progress=False)
    # Squashing the whole image would make the outer columns black; the crop keeps only the white
    # centre (LANCZOS blends in a little of the black just outside it at the edges).
    assert ds.images.shape == (1, 1, 10, 10) and int(ds.images.min()) >= 200
    assert int(ds.images[..., 2:8].min()) >= 250


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40), np.uint8)  # 40 wide, 20 high: left half black, right half white
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": left half ends up on top
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    img = load_folder(tmp_path, resolution=16, progress=False).images[0, 0]
    assert int(img[0].max()) < 60 and int(img[-1].min()) > 200


def test_alpha_palette_and_16_bit_modes(tmp_path: Path) -> None:
    _solid((9, 9), (255, 0, 0, 0), "RGBA").save(tmp_path / "a_transparent.png")  # invisible red -> white
    _solid((9, 9), (0, 128), "LA").save(tmp_path / "b_half_black.png")  # 50% black over white -> ~127
    Image.fromarray(np.full((9, 9), 32896, np.uint16)).save(tmp_path / "c_16bit.png")  # 32896 / 257 = 128
    pal = Image.new("P", (9, 9), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    pal.save(tmp_path / "d_palette.png", transparency=0)  # index 1 is opaque green
    img = load_folder(tmp_path, resolution=4, progress=False).images.int()
    assert img.shape == (4, 3, 4, 4)
    assert img[0].min() >= 254
    assert (img[1] - 127).abs().max() <= 1
    assert (img[2] - 128).abs().max() <= 1
    assert (img[3] - torch.tensor([0, 255, 0]).view(3, 1, 1)).abs().max() <= 1


def test_grey_palette_counts_as_grey(tmp_path: Path) -> None:
    pal = Image.new("P", (6, 6), 2)
    pal.putpalette([v for i in range(256) for v in (i, i, i)])
    pal.save(tmp_path / "g.png")
    ds = load_folder(tmp_path, resolution=6, progress=False)
    assert ds.images.shape == (1, 1, 6, 6) and ds.images.unique().tolist() == [2]


def test_train_test_layout_shares_class_indices(tmp_path: Path) -> None:
    for split, cls, n in [("train", "ant", 2), ("train", "bee", 1), ("test", "bee", 2)]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _solid((7, 7), 50 * i, "L").save(tmp_path / split / cls / f"{i}.png")
    train = load_dataset(f"folder:{tmp_path}", split="train", resolution=7)
    test = load_dataset(f"folder:{tmp_path}", split="test", resolution=7)
    both = load_dataset(f"folder:{tmp_path}", split="all", resolution=7)
    assert train.classes == test.classes == ["ant", "bee"]
    assert train.labels.tolist() == [0, 0, 1] and test.labels.tolist() == [1, 1]
    assert len(both) == 5 and both.labels.tolist() == [0, 0, 1, 1, 1]


def test_plain_folder_has_no_test_split(labelled_folder: Path) -> None:
    with pytest.raises(DataError, match="no test split.*train/ and test/"):
        load_dataset(f"folder:{labelled_folder}", split="test")


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text_only").mkdir()
    (tmp_path / "text_only" / "readme.txt").write_text("hi")
    for name in ("empty", "text_only"):
        with pytest.raises(DataError, match=r"no images found in .*" + name + r".*\.png.*\.webp"):
            load_dataset(f"folder:{tmp_path / name}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"folder:{tmp_path / 'file.png'}")


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> Path:
    _solid((12, 12), (1, 2, 3)).save(tmp_path / "good.png")
    _solid((12, 12), 7, "L").save(tmp_path / "good2.jpg")
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image at all")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "full.jpg").unlink()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path


def test_bad_images_are_skipped_with_one_warning(folder_with_bad_files: Path) -> None:
    with pytest.warns(UserWarning) as record:
        ds = load_folder(folder_with_bad_files, resolution=8, progress=False)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "skipped 2 of 4" in msg and "corrupt.png" in msg and "truncated.jpg" in msg
    assert len(ds) == 2 and ds.meta["skipped"] == 2


def test_bad_images_raise_when_strict(folder_with_bad_files: Path) -> None:
    with pytest.raises(DataError, match="corrupt.png"):
        load_dataset(f"folder:{folder_with_bad_files}", strict=True, progress=False)
    (folder_with_bad_files / "corrupt.png").unlink()
    with pytest.raises(DataError, match="truncated.jpg.*(truncated|broken)"):
        load_dataset(f"folder:{folder_with_bad_files}", strict=True, progress=False)


def test_truncated_images_fail_even_if_pil_was_told_to_load_them(folder_with_bad_files, monkeypatch) -> None:
    (folder_with_bad_files / "corrupt.png").unlink()
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="truncated.jpg"):
        load_folder(folder_with_bad_files, strict=True, progress=False)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


def test_no_readable_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"nope")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either: the error says it all
        with pytest.raises(DataError, match="no readable images.*x.png"):
            load_folder(tmp_path, progress=False)


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header_only(8000, 8000))  # 64 MP > 50 MP, under PIL's own limit
    with pytest.raises(DataError, match=r"bomb.png.*8000x8000 = 64,000,000 pixels.*decompression bomb"):
        load_folder(tmp_path, strict=True, progress=False)
    _solid((10, 10), 5, "L").save(tmp_path / "ok.png")
    with pytest.warns(UserWarning, match="bomb.png"):
        assert len(load_folder(tmp_path, progress=False)) == 1
    (tmp_path / "bomb.png").unlink()
    with pytest.raises(DataError, match="ok.png.*10x10 = 100 pixels.*limit of 99"):  # a real image, tiny limit
        load_folder(tmp_path, strict=True, progress=False, max_pixels=99)


def test_pil_decompression_bomb_warning_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header_only(10000, 10000))  # over PIL's warning limit
    with pytest.raises(DataError, match="bomb.png.*DecompressionBomb"):
        load_folder(tmp_path, strict=True, progress=False, max_pixels=None)


# ------------------------------------------------------------------------------------- load_dataset


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"spec": "cifar"}, "unknown dataset 'cifar'.*digits.*mnist.*folder:PATH"),
        ({"spec": "digits", "split": "val"}, "unknown split 'val'"),
        ({"spec": "digits", "channels": 2}, "channels must be 1, 3 or None"),
        ({"spec": "digits", "resolution": 0}, "resolution must be a positive integer"),
        ({"spec": "folder:"}, "needs a path"),
        ({"spec": "folder"}, "needs a path"),
    ],
)
def test_load_dataset_rejects_bad_arguments(kwargs: dict, expected: str) -> None:
    spec = kwargs.pop("spec")
    with pytest.raises(DataError, match=expected):
        load_dataset(spec, **kwargs)


def test_folder_spec_with_data_dir(labelled_folder: Path) -> None:
    assert len(load_dataset("folder", data_dir=labelled_folder, resolution=8, progress=False)) == 5
