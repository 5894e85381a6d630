"""Output written in pieces (a streamed .npz, a folder) appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from atelier.io import atomic_directory, atomic_npz, atomic_open


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), cut=st.lists(st.integers(1, 9), min_size=1, max_size=12),
       shape=st.tuples(st.integers(1, 4), st.integers(1, 4)), compress=st.booleans(),
       seed=st.integers(0, 2**31))
def test_npz_written_in_chunks_is_what_np_load_reads(tmp_path_factory, n, cut, shape, compress, seed) -> None:
    folder = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    with atomic_npz(folder / "x.npz", compress=compress) as npz:
        with npz.array("images", images.shape, np.uint8) as write:
            i, sizes = 0, iter(cut * (n + 1))
            while i < n:
                step = next(sizes)
                write(images[i : i + step])
                i += step
        with npz.array("labels", labels.shape, np.int64) as write:
            write(labels)
    with np.load(folder / "x.npz") as data:
        assert set(data.files) == {"images", "labels"}
        assert np.array_equal(data["images"], images) and data["images"].dtype == np.uint8
        assert np.array_equal(data["labels"], labels)
    assert not _leftovers(folder)


@pytest.mark.parametrize("written", [3, 5])
def test_npz_with_the_wrong_number_of_values_is_not_written(tmp_path: Path, written: int) -> None:
    with pytest.raises(ValueError, match="images"):
        with atomic_npz(tmp_path / "x.npz") as npz, npz.array("images", (4, 2), np.uint8) as write:
            write(np.zeros((written, 2), np.uint8))
    assert not list(tmp_path.iterdir())


def test_an_interrupted_stream_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_npz(tmp_path / "x.npz") as npz, npz.array("images", (4, 2), np.uint8) as write:
            write(np.zeros((2, 2), np.uint8))
            raise KeyboardInterrupt
    assert (tmp_path / "x.npz").read_bytes() == b"old" and not _leftovers(tmp_path)
    with atomic_open(tmp_path / "y.bin") as f:
        f.write(b"new")
    assert (tmp_path / "y.bin").read_bytes() == b"new"


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "a.png").write_bytes(b"1")
            raise RuntimeError("failed half-way")
    assert not out.exists() and not _leftovers(tmp_path)
    with atomic_directory(out) as tmp:
        (tmp / "a.png").write_bytes(b"1")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["a.png"]
    with atomic_directory(out) as tmp:  # replaced as a whole: nothing of the old folder stays
        (tmp / "b.png").write_bytes(b"2")
    assert [p.name for p in out.iterdir()] == ["b.png"] and not _leftovers(tmp_path)


def test_display_path_escapes_control_characters_only() -> None:
    from atelier.io import display_path

    assert display_path("runs/model a/é.json") == "runs/model a/é.json"
    assert display_path("\n") == "'\\n'" and "\x1b" not in display_path("a\x1b[2Jb")
