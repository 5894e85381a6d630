"""Downloads against a local HTTP server on 127.0.0.1 only: success, checksum mismatch, HTTP errors, offline."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from atelier.data import DataError, DownloadError, cache_dir, download_file, load_dataset
from atelier.data import mnist as mnist_mod

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"

pytestmark = pytest.mark.network


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus ``/short``: promises 1000 bytes, sends 10 and hangs up."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """``serve(folder)`` -> base URL (with trailing slash) of a server for ``folder`` on 127.0.0.1."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


# ------------------------------------------------------------------------------------- download_file


def test_cache_dir_follows_atelier_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "a" / "b"))
    assert cache_dir() == tmp_path / "a" / "b" and cache_dir().is_dir()
    monkeypatch.delenv("ATELIER_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "atelier" and cache_dir().is_dir()


def test_download_file_verifies_raw_and_decompressed_checksums(tmp_path: Path, serve) -> None:
    site = tmp_path / "site"
    site.mkdir()
    payload = b"hello atelier\n" * 1000
    (site / "plain.txt").write_bytes(payload)
    (site / "packed.gz").write_bytes(gzip.compress(payload))
    url = serve(site)
    dest = tmp_path / "out" / "plain.txt"
    assert download_file(url + "plain.txt", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False) == dest
    assert dest.read_bytes() == payload
    packed = tmp_path / "out" / "packed.gz"
    download_file(url + "packed.gz", packed, sha256=hashlib.sha256(payload).hexdigest(), decompressed_sha256=True, progress=False)
    assert gzip.decompress(packed.read_bytes()) == payload
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["packed.gz", "plain.txt"]  # no temp files left


def test_download_file_mismatch_leaves_nothing_and_keeps_the_old_file(tmp_path: Path, serve) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "f.bin").write_bytes(b"tampered")
    url = serve(site) + "f.bin"
    out = tmp_path / "out"
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(DataError, match=f"checksum mismatch.*expected sha256 {expected}") as err:
        download_file(url, out / "f.bin", sha256=expected, progress=False)
    assert hashlib.sha256(b"tampered").hexdigest() in str(err.value) and url in str(err.value)
    assert list(out.iterdir()) == []
    (out / "f.bin").write_bytes(b"previous good copy")
    with pytest.raises(DataError):
        download_file(url, out / "f.bin", sha256=expected, progress=False)
    assert [p.name for p in out.iterdir()] == ["f.bin"] and (out / "f.bin").read_bytes() == b"previous good copy"


def test_download_file_http_errors_and_short_transfers(tmp_path: Path, serve, closed_port_url: str) -> None:
    url = serve(tmp_path)
    with pytest.raises(DownloadError, match="404") as err:
        download_file(url + "missing.gz", tmp_path / "out" / "x", sha256=None, progress=False)
    assert err.value.url == url + "missing.gz"
    with pytest.raises(DownloadError, match="connection closed after 10 of 1000 bytes"):
        download_file(url + "short", tmp_path / "out" / "y", sha256=None, progress=False)
    with pytest.raises(DownloadError, match="refused"):
        download_file(closed_port_url + "z", tmp_path / "out" / "z", sha256=None, progress=False, timeout=5)
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------------------------- MNIST download


def test_mnist_download_into_the_cache_then_offline_load(fake_mnist, atelier_home, serve, monkeypatch) -> None:
    folder, sums, arrays = fake_mnist
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", sums)
    monkeypatch.setenv("ATELIER_MNIST_URL", serve(folder))  # the environment variable picks the mirror
    ds = load_dataset("mnist", split="all", progress=False)
    assert len(ds) == 17 and ds.labels[:12].tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    cached = sorted(p.name for p in (atelier_home / "mnist").iterdir())
    assert cached == sorted(mnist_mod.ALL_FILES)
    monkeypatch.setenv("ATELIER_MNIST_URL", "http://127.0.0.1:9/unused/")
    again = load_dataset("mnist", split="all", download=False, progress=False)
    assert torch.equal(again.images, ds.images)


def test_mnist_download_checksum_mismatch_leaves_the_cache_empty(fake_mnist, atelier_home, serve) -> None:
    folder, sums, _ = fake_mnist  # the pinned (real) checksums do not match these fake files
    with pytest.raises(DataError, match="checksum mismatch.*train-images-idx3-ubyte") as err:
        load_dataset("mnist", base_url=serve(folder), progress=False)
    assert sums["train-images-idx3-ubyte"] in str(err.value)
    assert list((atelier_home / "mnist").iterdir()) == []
    ds = load_dataset("mnist", base_url=serve(folder), verify=False, split="test", progress=False)
    assert len(ds) == 5


def test_mnist_unreachable_server_says_how_to_supply_the_files(atelier_home, closed_port_url: str) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist", base_url=closed_port_url, progress=False)
    msg = str(err.value)
    assert closed_port_url + "train-images-idx3-ubyte.gz" in msg and "refused" in msg
    assert str(atelier_home / "mnist") in msg and "--data-dir" in msg
    assert all(name in msg for name in mnist_mod.ALL_FILES)
    assert list((atelier_home / "mnist").iterdir()) == []


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST not found at {MNIST_DIR}")
def test_real_mnist_download_verifies_against_the_pinned_checksums(atelier_home, serve, tmp_path) -> None:
    site = tmp_path / "mirror" / "mnist"
    site.mkdir(parents=True)
    for name in mnist_mod.SPLIT_FILES["test"]:  # the test split is enough: 1.6 MB
        shutil.copy(MNIST_DIR / f"{name}.gz", site)
    ds = load_dataset("mnist", split="test", base_url=serve(tmp_path / "mirror") + "mnist", progress=False)
    assert len(ds) == 10000 and ds.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert sorted(p.name for p in (atelier_home / "mnist").iterdir()) == sorted(
        f"{n}.gz" for n in mnist_mod.SPLIT_FILES["test"]
    )
