"""Sampling to PNG grids and .npz arrays, and the grid layout itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hypothesis import given, settings, strategies as st

from atelier.creative import iter_samples, sample_images, save_samples, write_samples
from atelier.creative.sampling import MAX_GRID_IMAGES, MAX_SAMPLES, NonFiniteSamplesError
from atelier.data.base import DataError
from atelier.models.sampling import NonFiniteSamplesWarning
from atelier.signals import Stopped
from atelier.models.registry import create_model
from atelier.report.grid import make_grid, save_grid


def tiny(num_classes: int = 0, channels: int = 1, resolution: int = 28):
    torch.manual_seed(0)
    return create_model("dcgan", g_width=8, d_width=8, latent_dim=16, num_classes=num_classes,
                        channels=channels, resolution=resolution)


@pytest.fixture(scope="module")
def uncond():
    return tiny()


@pytest.fixture(scope="module")
def cond():
    model = tiny(num_classes=10)
    with torch.no_grad():  # a class embedding that visibly changes the output
        model.generator_ema.embed.weight.normal_(0, 1)
    return model


# -------------------------------------------------------------------------------------- sample_images


def test_sample_images_are_uint8_and_match_the_model(uncond) -> None:
    samples = sample_images(uncond, 7, seed=3)
    assert samples.images.dtype == torch.uint8 and samples.images.shape == (7, 1, 28, 28)
    assert samples.labels is None
    floats = uncond.sample(7, generator=torch.Generator().manual_seed(3))
    expected = ((floats + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(samples.images, expected)


def test_sample_images_reproducible_by_seed(uncond, cond) -> None:
    for model in (uncond, cond):
        a, b, c = (sample_images(model, 9, seed=s) for s in (1, 1, 2))
        assert torch.equal(a.images, b.images)
        assert not torch.equal(a.images, c.images)


def test_sample_images_in_batches_cover_every_sample(cond) -> None:
    samples = sample_images(cond, 23, seed=0, batch_size=5)
    assert samples.images.shape == (23, 1, 28, 28)
    assert samples.labels.tolist() == [i % 10 for i in range(23)]
    # batching splits the draws but every image is still a real, distinct sample
    flat = samples.images.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 23


def test_sample_images_labels(cond, uncond) -> None:
    fixed = sample_images(cond, 6, seed=0, label=7)
    assert fixed.labels.tolist() == [7] * 6
    assert not torch.equal(fixed.images, sample_images(cond, 6, seed=0, label=2).images)
    with pytest.raises(ValueError, match="0..9"):
        sample_images(cond, 3, label=10)
    with pytest.raises(ValueError, match="unconditional"):
        sample_images(uncond, 3, label=1)
    with pytest.raises(ValueError, match="between 1 and"):
        sample_images(uncond, 0)


def test_sample_images_with_truncation(uncond) -> None:
    a = sample_images(uncond, 8, seed=0, truncation=0.5)
    assert torch.equal(a.images, sample_images(uncond, 8, seed=0, truncation=0.5).images)
    assert not torch.equal(a.images, sample_images(uncond, 8, seed=0).images)


# --------------------------------------------------------------------------------------- save_samples


def test_save_png_grid_dimensions(uncond, tmp_path: Path) -> None:
    samples = sample_images(uncond, 10, seed=0)
    path = save_samples(samples, tmp_path / "grid.png")
    assert path == tmp_path / "grid.png"
    with Image.open(path) as im:
        im.load()
        array = np.asarray(im)
    # ceil(sqrt(10)) = 4 columns x 3 rows of 28 px with 2 px padding, enlarged 2x (64 // 28)
    assert array.shape == ((3 * 30 + 2) * 2, (4 * 30 + 2) * 2)
    # the first image sits at (2, 2) in grid pixels, i.e. (4, 4) once enlarged
    first = array[4 : 4 + 56 : 2, 4 : 4 + 56 : 2]
    assert np.array_equal(first, samples.images[0, 0].numpy())
    path = save_samples(samples, tmp_path / "grid3.png", nrow=3)
    with Image.open(path) as im:
        assert im.size == ((3 * 30 + 2) * 2, (4 * 30 + 2) * 2)


def test_save_png_conditional_uses_one_column_per_class(cond, tmp_path: Path) -> None:
    path = save_samples(sample_images(cond, 30, seed=0), tmp_path / "c.png")
    with Image.open(path) as im:
        assert im.size == ((10 * 30 + 2) * 2, (3 * 30 + 2) * 2)
    # a single repeated label is not a class layout: back to a square-ish grid
    path = save_samples(sample_images(cond, 9, seed=0, label=4), tmp_path / "one.png")
    with Image.open(path) as im:
        assert im.size == ((3 * 30 + 2) * 2, (3 * 30 + 2) * 2)


def test_save_png_rgb(tmp_path: Path) -> None:
    model = tiny(channels=3, resolution=32)
    path = save_samples(sample_images(model, 4, seed=0), tmp_path / "rgb.png")
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == ((2 * 34 + 2) * 2, (2 * 34 + 2) * 2)


def test_save_npz_contents(cond, uncond, tmp_path: Path) -> None:
    samples = sample_images(cond, 12, seed=5)
    path = save_samples(samples, tmp_path / "s.npz")
    with np.load(path) as data:
        assert set(data.files) == {"images", "labels"}
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 1)
    assert np.array_equal(images, samples.images.permute(0, 2, 3, 1).numpy())
    assert labels.dtype == np.int64 and np.array_equal(labels, samples.labels.numpy())
    plain = sample_images(uncond, 3, seed=0)
    with np.load(save_samples(plain, tmp_path / "u.NPZ")) as data:  # suffix is case-insensitive
        assert set(data.files) == {"images"}
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("name", ["s.jpg", "s.gif", "s.npy"])
def test_save_unsupported_suffix_raises(uncond, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        save_samples(sample_images(uncond, 2), tmp_path / name)
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------------------------- write_samples


class Untouched:
    """Batches that fail the test if one is taken: limits must be checked before anything is drawn."""

    def __iter__(self):
        raise AssertionError("a batch was drawn before the output was checked")


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 25), batch_size=st.integers(1, 8), seed=st.integers(0, 100))
def test_streamed_npz_equals_the_samples_in_memory(cond, tmp_path_factory, n, batch_size, seed) -> None:
    out = tmp_path_factory.mktemp("npz") / "s.npz"
    batches = iter_samples(cond, n, seed=seed, batch_size=batch_size)
    assert write_samples(batches, out, n) == out
    whole = sample_images(cond, n, seed=seed, batch_size=batch_size)
    with np.load(out) as data:
        assert np.array_equal(data["images"], whole.images.permute(0, 2, 3, 1).numpy())
        assert np.array_equal(data["labels"], whole.labels.numpy())
    assert [p.name for p in out.parent.iterdir()] == ["s.npz"]


def test_folder_output_one_png_per_sample_in_class_folders(cond, uncond, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    names = [f"digit {i}" for i in range(10)]
    write_samples(iter_samples(cond, 13, seed=2, batch_size=4), out, 13, class_names=names)
    files = sorted(out.rglob("*.png"))
    assert len(files) == 13 and sorted(p.name for p in out.iterdir()) == sorted(names)
    whole = sample_images(cond, 13, seed=2, batch_size=4)
    for i in (0, 9, 12):
        path = out / names[i % 10] / f"{i:06d}.png"
        with Image.open(path) as im:
            assert np.array_equal(np.asarray(im), whole.images[i, 0].numpy())
    flat = tmp_path / "flat"
    write_samples(iter_samples(uncond, 3), flat, 3)
    assert sorted(p.name for p in flat.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    # a non-empty folder is replaced only when asked, and then as a whole
    with pytest.raises(DataError, match="not empty.*overwrite=True"):
        write_samples(Untouched(), flat, 2)
    write_samples(iter_samples(uncond, 2), flat, 2, overwrite=True)
    assert sorted(p.name for p in flat.iterdir()) == ["000000.png", "000001.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@settings(max_examples=10, deadline=None)
@given(n=st.integers(MAX_GRID_IMAGES + 1, MAX_SAMPLES))
def test_a_grid_beyond_the_limit_is_refused_before_drawing(tmp_path_factory, n: int) -> None:
    out = tmp_path_factory.mktemp("grid") / "g.png"
    with pytest.raises(ValueError, match=f"at most {MAX_GRID_IMAGES} images.*folder.*npz"):
        write_samples(Untouched(), out, n)
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.parametrize("n", [0, -5, MAX_SAMPLES + 1, 10**12])
def test_sample_counts_beyond_the_hard_limit_are_refused(tmp_path: Path, n: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 1,000,000"):
        write_samples(Untouched(), tmp_path / "s.npz", n)


@pytest.mark.parametrize("name", ["s.npz", "s.png", "s"])
def test_nan_samples_are_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    model = tiny()
    with torch.no_grad():
        next(model.generator_ema.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteSamplesError, match="held NaN.*allow_nonfinite=True"):
        write_samples(iter_samples(model, 5, batch_size=2), tmp_path / name, 5)
    assert not list(tmp_path.iterdir())
    with pytest.warns(NonFiniteSamplesWarning, match="5 of 5"):
        write_samples(iter_samples(model, 5, batch_size=2), tmp_path / name, 5, allow_nonfinite=True)
    assert (tmp_path / name).exists()


@pytest.mark.parametrize("name", ["s.npz", "s"])
def test_a_stop_request_between_batches_writes_nothing(uncond, tmp_path: Path, name: str) -> None:
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 2  # after two batches

    with pytest.raises(Stopped, match="after 4 of 9 samples"):
        write_samples(iter_samples(uncond, 9, batch_size=2), tmp_path / name, 9, should_stop=should_stop)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ make_grid


def test_make_grid_layout_and_padding() -> None:
    n, c, h, w = 10, 3, 5, 6
    images = torch.arange(1, n + 1, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, c, h, w).contiguous()
    grid = make_grid(images, nrow=4, padding=2, pad_value=255)
    assert grid.dtype == torch.uint8
    assert grid.shape == (c, 3 * (h + 2) + 2, 4 * (w + 2) + 2)
    covered = torch.zeros(grid.shape[1:], dtype=torch.bool)
    for i in range(n):
        r, col = divmod(i, 4)
        y, x = 2 + r * (h + 2), 2 + col * (w + 2)
        assert (grid[:, y : y + h, x : x + w] == i + 1).all(), i
        covered[y : y + h, x : x + w] = True
    assert (grid[:, ~covered] == 255).all()  # padding and the two empty cells of the last row
    assert int(covered.sum()) == n * h * w


def test_make_grid_clamps_nrow_and_honours_padding() -> None:
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    assert make_grid(images, nrow=8).shape == (1, 4 + 2 * 2, 3 * 6 + 2)  # one row of three
    assert make_grid(images, nrow=1, padding=0).shape == (1, 12, 4)
    assert (make_grid(images, nrow=3, padding=1, pad_value=9)[0, 0] == 9).all()


def test_make_grid_maps_float_range_to_bytes() -> None:
    images = torch.tensor([-1.0, 1.0, 0.0, -2.0, 3.0]).view(5, 1, 1, 1)
    grid = make_grid(images, nrow=5, padding=0)
    assert grid.dtype == torch.uint8
    values = grid[0, 0].tolist()
    assert values[0] == 0 and values[1] == 255
    assert values[2] in (127, 128)
    assert values[3] == 0 and values[4] == 255  # out-of-range values are clamped


def test_save_grid_enlarges_small_images(tmp_path: Path) -> None:
    images = torch.zeros(4, 1, 16, 16)
    with Image.open(save_grid(images, tmp_path / "g.png", nrow=2)) as im:
        assert im.size == ((2 * 18 + 2) * 4, (2 * 18 + 2) * 4)
    with Image.open(save_grid(torch.zeros(1, 1, 64, 64), tmp_path / "h.png")) as im:
        assert im.size == (68, 68)
