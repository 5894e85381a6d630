"""The FID InceptionV3: architecture vs the reference weight layout, TF-style resizing, weight loading,
hash checks and the cached download (against a local HTTP server on 127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import math
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from atelier.data import DataError
from atelier.metrics import inception as inc
from atelier.metrics.inception import (
    INCEPTION_FILENAME,
    INCEPTION_SHA256,
    INCEPTION_URL,
    RESIZE_MODES,
    FIDInceptionV3,
    inception_weights_path,
    load_inception,
    resize_for_inception,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # forward passes on shared cores

# --------------------------------------------------------------------- reference layout (pytorch-fid)


def _reference_convs() -> list[tuple[str, int, int, int, int]]:
    """(name, cin, cout, kh, kw) of every conv in pytorch-fid's FID Inception (torchvision naming)."""
    convs = [
        ("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
        ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3),
    ]

    def add(block: str, table: dict[str, tuple[int, int, int, int]]) -> None:
        convs.extend((f"{block}.{name}", *shape) for name, shape in table.items())

    for block, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        add(block, {
            "branch1x1": (cin, 64, 1, 1), "branch5x5_1": (cin, 48, 1, 1), "branch5x5_2": (48, 64, 5, 5),
            "branch3x3dbl_1": (cin, 64, 1, 1), "branch3x3dbl_2": (64, 96, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3),
            "branch_pool": (cin, pool, 1, 1),
        })
    add("Mixed_6a", {
        "branch3x3": (288, 384, 3, 3), "branch3x3dbl_1": (288, 64, 1, 1), "branch3x3dbl_2": (64, 96, 3, 3),
        "branch3x3dbl_3": (96, 96, 3, 3),
    })
    for block, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        add(block, {
            "branch1x1": (768, 192, 1, 1), "branch7x7_1": (768, c7, 1, 1), "branch7x7_2": (c7, c7, 1, 7),
            "branch7x7_3": (c7, 192, 7, 1), "branch7x7dbl_1": (768, c7, 1, 1), "branch7x7dbl_2": (c7, c7, 7, 1),
            "branch7x7dbl_3": (c7, c7, 1, 7), "branch7x7dbl_4": (c7, c7, 7, 1), "branch7x7dbl_5": (c7, 192, 1, 7),
            "branch_pool": (768, 192, 1, 1),
        })
    add("Mixed_7a", {
        "branch3x3_1": (768, 192, 1, 1), "branch3x3_2": (192, 320, 3, 3), "branch7x7x3_1": (768, 192, 1, 1),
        "branch7x7x3_2": (192, 192, 1, 7), "branch7x7x3_3": (192, 192, 7, 1), "branch7x7x3_4": (192, 192, 3, 3),
    })
    for block, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        add(block, {
            "branch1x1": (cin, 320, 1, 1), "branch3x3_1": (cin, 384, 1, 1), "branch3x3_2a": (384, 384, 1, 3),
            "branch3x3_2b": (384, 384, 3, 1), "branch3x3dbl_1": (cin, 448, 1, 1), "branch3x3dbl_2": (448, 384, 3, 3),
            "branch3x3dbl_3a": (384, 384, 1, 3), "branch3x3dbl_3b": (384, 384, 3, 1), "branch_pool": (cin, 192, 1, 1),
        })
    return convs


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in _reference_convs():
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{buf}"] = (cout,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


def test_state_dict_matches_the_reference_layout_and_parameter_count() -> None:
    model = FIDInceptionV3()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _reference_shapes()
    assert len(model.state_dict()) == 566  # 94 conv+bn layers x 6 entries + fc weight and bias
    # Learnable parameters: conv weights, BN gamma/beta, fc (the running stats are buffers).
    expected = sum(cout * cin * kh * kw + 2 * cout for _, cin, cout, kh, kw in _reference_convs()) + 1008 * 2048 + 1008
    assert sum(p.numel() for p in model.parameters()) == expected == 23_850_960
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_fid_specific_pooling() -> None:
    model = FIDInceptionV3()
    x = torch.randn(1, 4, 5, 5)
    # Average pools exclude the padding (a constant map stays constant at the border) ...
    assert torch.allclose(inc._avg3x3(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))
    assert model.Mixed_7b.pool is inc._avg3x3
    # ... and the last block pools with a 3x3 max.
    assert model.Mixed_7c.pool is inc._max3x3
    assert torch.equal(model.Mixed_7c.pool(x), F.max_pool2d(x, 3, stride=1, padding=1))


def test_constants() -> None:
    prefix = re.search(r"-([0-9a-f]{8,})\.pth$", INCEPTION_FILENAME).group(1)
    assert re.fullmatch(r"[0-9a-f]{64}", INCEPTION_SHA256) and INCEPTION_SHA256.startswith(prefix)
    assert INCEPTION_URL.startswith("https://github.com/mseitzer/pytorch-fid/releases/")
    assert INCEPTION_URL.endswith("/" + INCEPTION_FILENAME)
    assert RESIZE_MODES == ("tf-bilinear", "bilinear", "bicubic-antialias")


# ------------------------------------------------------------------------------- forward and loading


def _random_model(seed: int = 0) -> FIDInceptionV3:
    """Random weights scaled so activations survive 47 layers, with non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = FIDInceptionV3()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One random model saved as .pth (under the real file name) and .safetensors, and its outputs on a
    small input (the network is fully convolutional up to the global pool, so 107x107 runs and is cheap)."""
    folder = tmp_path_factory.mktemp("inception_weights")
    model = _random_model()
    state = model.state_dict()
    pth = folder / INCEPTION_FILENAME
    torch.save(state, pth)
    st = folder / "inception.safetensors"
    save_file(state, str(st))
    x = torch.rand(2, 3, 107, 107, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        pool, logits = model(x)
    sha = hashlib.sha256(pth.read_bytes()).hexdigest()
    return SimpleNamespace(folder=folder, pth=pth, st=st, sha=sha, model=model, x=x, pool=pool, logits=logits)


def _assert_same_outputs(model: FIDInceptionV3, w: SimpleNamespace) -> None:
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        pool, logits = model(w.x)
    assert torch.equal(pool, w.pool) and torch.equal(logits, w.logits)


def test_forward_shapes_and_values(weights: SimpleNamespace) -> None:
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        pool, logits = weights.model(x)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert (pool >= 0).all() and pool.mean() > 0  # an average of ReLU outputs
    assert torch.isfinite(logits).all() and torch.allclose(logits, weights.model.fc(pool))
    assert not torch.allclose(pool[0], pool[1])
    with pytest.raises(ValueError, match="299"):
        weights.model(torch.zeros(1, 1, 299, 299))


def test_load_pth_and_safetensors(weights: SimpleNamespace) -> None:
    _assert_same_outputs(load_inception(weights.pth, verify=False), weights)
    _assert_same_outputs(load_inception(str(weights.st), verify=False), weights)
    _assert_same_outputs(load_inception(weights.pth, sha256=weights.sha), weights)  # pinned own hash
    with pytest.raises(DataError, match="sha256= of your converted file"):
        load_inception(weights.st)


def test_hash_mismatch_is_an_error(weights: SimpleNamespace) -> None:
    with pytest.raises(DataError, match=INCEPTION_SHA256) as err:
        load_inception(weights.pth)
    assert weights.sha in str(err.value) and "verify=False" in str(err.value) and str(weights.pth) in str(err.value)


def test_wrong_contents_are_data_errors(tmp_path: Path) -> None:
    torch.save({"foo": torch.zeros(1), "fc.weight": torch.zeros(1008, 2048)}, tmp_path / "keys.pth")
    with pytest.raises(DataError, match=r"missing keys \[Conv2d_1a_3x3\.conv\.weight.*more\)\], unexpected keys \[foo\]"):
        load_inception(tmp_path / "keys.pth", verify=False)
    state = FIDInceptionV3().state_dict()
    lean = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(lean, str(tmp_path / "lean.safetensors"))  # some converters drop the BN counters
    assert isinstance(load_inception(tmp_path / "lean.safetensors", verify=False), FIDInceptionV3)
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(DataError, match=r"fc\.weight \(1000, 2048\) != \(1008, 2048\)"):
        load_inception(tmp_path / "shape.pth", verify=False)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read"):
        load_inception(tmp_path / "junk.pth", verify=False)


def test_missing_files(tmp_path: Path, atelier_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(inc.URL_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILENAME) as err:
        inception_weights_path(tmp_path / "nope.pth")
    assert INCEPTION_URL in str(err.value)
    with pytest.raises(DataError, match=INCEPTION_FILENAME) as err:
        load_inception(download=False)
    message = str(err.value)
    assert str(atelier_home / "weights" / INCEPTION_FILENAME) in message and "--inception-weights" in message


# ---------------------------------------------------------------------------------------- download


@pytest.mark.network
def test_download_into_cache_once(
    weights, tmp_path: Path, atelier_home: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(inc.URL_ENV, raising=False)
    base, hits = serve(weights.folder)
    url = base + INCEPTION_FILENAME
    cached = atelier_home / "weights" / INCEPTION_FILENAME
    assert inception_weights_path(url=url, sha256=weights.sha) == cached and cached.is_file()
    assert hits == ["/" + INCEPTION_FILENAME]
    _assert_same_outputs(load_inception(url=url, sha256=weights.sha), weights)
    assert len(hits) == 1  # the second call used the cache
    with pytest.raises(DataError, match="verify=False"):  # a cached file is checked too
        load_inception(url=url)
    # The rest only moves bytes, so a small stand-in file will do.
    site = tmp_path / "site"
    site.mkdir()
    (site / INCEPTION_FILENAME).write_bytes(b"stand-in weights")
    small_base, small_hits = serve(site)
    cached.unlink()
    monkeypatch.setenv(inc.URL_ENV, small_base + INCEPTION_FILENAME)  # overrides the default URL
    assert inception_weights_path(sha256=hashlib.sha256(b"stand-in weights").hexdigest()) == cached
    assert small_hits == ["/" + INCEPTION_FILENAME] and cached.read_bytes() == b"stand-in weights"
    # A download whose hash does not match leaves nothing behind; verify=False accepts it.
    cached.unlink()
    with pytest.raises(DataError, match="checksum mismatch"):
        inception_weights_path()
    assert list(cached.parent.iterdir()) == []
    assert inception_weights_path(verify=False) == cached and len(small_hits) == 3


@pytest.mark.network
def test_unreachable_server_gives_advice(atelier_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(inc.URL_ENV, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/{INCEPTION_FILENAME}"
    with pytest.raises(DataError) as err:
        load_inception(url=url)
    message = str(err.value)
    for part in (INCEPTION_FILENAME, url, str(atelier_home / "weights" / INCEPTION_FILENAME), "--inception-weights", "offline"):
        assert part in message
    assert not (atelier_home / "weights" / INCEPTION_FILENAME).exists()


# ------------------------------------------------------------------------------------------ resizing


def _naive_tf_bilinear(img: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """TF1 resize_bilinear(align_corners=False), legacy coordinates, one pixel at a time."""
    in_h, in_w = img.shape
    out = torch.empty(out_h, out_w, dtype=torch.float64)
    for i in range(out_h):
        sy = i * in_h / out_h
        y0 = math.floor(sy)
        y1, dy = min(y0 + 1, in_h - 1), sy - y0
        for j in range(out_w):
            sx = j * in_w / out_w
            x0 = math.floor(sx)
            x1, dx = min(x0 + 1, in_w - 1), sx - x0
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * dx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * dx
            out[i, j] = top + (bottom - top) * dy
    return out


@pytest.mark.parametrize("shape, size", [((5, 7), (13, 11)), ((9, 9), 4), ((6, 9), (4, 14))])
def test_tf_bilinear_matches_the_per_pixel_formula(shape, size) -> None:
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = resize_for_inception(x, size)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, 3, out_h, out_w) and out.dtype == torch.float64
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(out[b, c], _naive_tf_bilinear(x[b, c], out_h, out_w), rtol=0, atol=1e-6)


def test_tf_bilinear_has_no_half_pixel_offset() -> None:
    x = torch.tensor([[[[0.0, 1.0]]]])
    assert resize_for_inception(x, (1, 4)).flatten().tolist() == [0.0, 0.5, 1.0, 1.0]
    assert F.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False).flatten().tolist() == [0.0, 0.25, 0.75, 1.0]


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_constant_images_stay_constant(mode: str) -> None:
    x = torch.full((2, 3, 5, 7), 0.3)
    out = resize_for_inception(x, mode=mode)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=1e-6)


def test_other_modes_and_errors() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(resize_for_inception(x, mode="bilinear"), F.interpolate(x, size=(299, 299), mode="bilinear"))
    expected = F.interpolate(x, size=(299, 299), mode="bicubic", antialias=True, align_corners=False)
    assert torch.equal(resize_for_inception(x, mode="bicubic-antialias"), expected)
    assert resize_for_inception(x.half()).dtype == torch.float16
    with pytest.raises(ValueError, match="tf-bilinear, bilinear, bicubic-antialias"):
        resize_for_inception(x, mode="nearest")
    with pytest.raises(ValueError, match="float"):
        resize_for_inception(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
