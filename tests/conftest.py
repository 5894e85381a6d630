"""Shared fixtures. Data: tiny fake IDX files in MNIST's layout, and an isolated ATELIER_HOME."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Unsigned-byte IDX encoding: big-endian magic, dimensions, then the raw bytes."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def idx_bytes() -> Callable[[np.ndarray, int], bytes]:
    """``idx_bytes(array, magic)`` -> the bytes of an IDX file holding ``array``."""
    return _idx_bytes


@pytest.fixture
def fake_mnist(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    """A folder with the four MNIST file names (gzip'd) holding 12 train / 5 test random 28x28 images.

    Returns (folder, sha256 of each decompressed file by name without .gz, arrays by name).
    """
    rng = np.random.default_rng(1)
    folder = tmp_path / "fake_mnist"
    folder.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    sums = {}
    for name, array in arrays.items():
        raw = _idx_bytes(array, 2051 if array.ndim == 3 else 2049)
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        sums[name] = hashlib.sha256(raw).hexdigest()
    return folder, sums, arrays


@pytest.fixture
def atelier_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ATELIER_HOME for this test, and no ATELIER_MNIST_URL from the environment."""
    home = tmp_path / "atelier_home"
    monkeypatch.setenv("ATELIER_HOME", str(home))
    monkeypatch.delenv("ATELIER_MNIST_URL", raising=False)
    return home


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared cores: one intra-op thread avoids oversubscription stalls when others are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], tuple[str, list[str]]]]:
    """``serve(folder)`` -> (base URL with trailing slash, list of requested paths), on 127.0.0.1 only."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> tuple[str, list[str]]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_CountingHandler, directory=str(folder)))
        server.hits = []
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", server.hits

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- the smallest training run of every family -----------------------------------------------------------


def _blobs(folder: Path, n: int, *, colour: bool, seed: int, size: int = 24) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cy, cx, r = rng.uniform(6, size - 6), rng.uniform(6, size - 6), rng.uniform(2, 6)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 200 + 30
        image = np.stack([blob, 255 - blob, blob // 2], -1) if colour else blob
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def family_args(tmp_path_factory) -> Callable[[str], "list[str] | None"]:
    """``family_args(name)``: the CLI arguments (data and model) of the smallest training run of each
    registered family, for the registry-wide and torchrun tests; None for a family not listed here.

    A new family adds its line here (``test_every_family_has_cli_example`` fails until it does)."""
    root = tmp_path_factory.mktemp("families")
    a, b = _blobs(root / "a", 8, colour=False, seed=0), _blobs(root / "b", 8, colour=True, seed=1)
    photos = _blobs(root / "photos", 4, colour=True, seed=2, size=48)
    style = _blobs(root / "style", 1, colour=True, seed=3, size=48) / "000.png"
    examples = {
        "gan": ["--data", "digits", "--batch-size", "8", "--g-width", "8", "--d-width", "8", "--latent-dim", "8"],
        "resnet-gan": ["--data", "digits", "--resolution", "28", "--batch-size", "8", "--g-width", "8",
                       "--d-width", "8", "--latent-dim", "8", "--n-dis", "2"],
        "vae": ["--data", "digits", "--batch-size", "8", "--width", "8", "--hidden", "0", "--latent-dim", "4",
                "--iw-samples", "2", "--iw-images", "8"],
        "flow": ["--data", "digits", "--batch-size", "8", "--width", "8", "--blocks-per-level", "1", "--levels", "2",
                 "--sample-steps", "2"],
        "cyclegan": ["--domain-a", str(a), "--domain-b", str(b), "--resolution", "16", "--batch-size", "2",
                     "--g-width", "4", "--d-width", "4", "--n-blocks", "1"],
        "fast-style": ["--style", str(style), "--content-dir", str(photos), "--size", "32", "--batch-size", "2",
                       "--width", "4", "--n-res-blocks", "1", "--no-download"],
    }
    return examples.get
