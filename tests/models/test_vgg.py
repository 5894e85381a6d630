"""VGG features for style losses: layer layout vs torchvision, loading weights (file, cache, download on
127.0.0.1 only, hash checks, bad files), and the random multi-scale fallback (announced, deterministic,
able to synthesise a texture)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atelier.data import DataError
from atelier.models.random_features import RandomFeatures
from atelier.models.vgg import VGGFeatures, conv_indices, layer_names
from atelier.models.vgg_weights import (
    URL_ENV,
    VGG_FILES,
    RandomFallbackWarning,
    describe,
    expected_shapes,
    load_vgg,
)
from atelier.objectives.style import gram_matrix, style_loss
from atelier.weights import WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VGG19_FILE = VGG_FILES["vgg19"][0]

# ------------------------------------------------------------------------------------ layer layout

# torchvision's vgg19().features / vgg16().features, written out from the architecture
# (conv3x3 + ReLU pairs, a 2x2 max pool closing each block).
TORCHVISION_INDEX = {
    "vgg19": {
        "conv1_1": 0, "relu1_1": 1, "conv1_2": 2, "relu1_2": 3, "pool1": 4,
        "conv2_1": 5, "relu2_1": 6, "conv2_2": 7, "relu2_2": 8, "pool2": 9,
        "conv3_1": 10, "relu3_1": 11, "conv3_2": 12, "relu3_2": 13, "conv3_3": 14, "relu3_3": 15,
        "conv3_4": 16, "relu3_4": 17, "pool3": 18,
        "conv4_1": 19, "relu4_1": 20, "conv4_2": 21, "relu4_2": 22, "conv4_3": 23, "relu4_3": 24,
        "conv4_4": 25, "relu4_4": 26, "pool4": 27,
        "conv5_1": 28, "relu5_1": 29, "conv5_2": 30, "relu5_2": 31, "conv5_3": 32, "relu5_3": 33,
        "conv5_4": 34, "relu5_4": 35, "pool5": 36,
    },
    "vgg16": {
        "conv1_1": 0, "relu1_1": 1, "conv1_2": 2, "relu1_2": 3, "pool1": 4,
        "conv2_1": 5, "relu2_1": 6, "conv2_2": 7, "relu2_2": 8, "pool2": 9,
        "conv3_1": 10, "relu3_1": 11, "conv3_2": 12, "relu3_2": 13, "conv3_3": 14, "relu3_3": 15, "pool3": 16,
        "conv4_1": 17, "relu4_1": 18, "conv4_2": 19, "relu4_2": 20, "conv4_3": 21, "relu4_3": 22, "pool4": 23,
        "conv5_1": 24, "relu5_1": 25, "conv5_2": 26, "relu5_2": 27, "conv5_3": 28, "relu5_3": 29, "pool5": 30,
    },
}
CONV_INDICES = {
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
}


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_layer_names_and_indices_match_torchvision(arch: str) -> None:
    names = layer_names(arch)
    assert {n: i for i, n in enumerate(names)} == TORCHVISION_INDEX[arch]
    assert conv_indices(arch) == CONV_INDICES[arch]
    shapes = expected_shapes(arch)
    assert sorted(shapes) == sorted(f"features.{i}.{p}" for i in CONV_INDICES[arch] for p in ("weight", "bias"))
    assert shapes["features.0.weight"] == (64, 3, 3, 3) and shapes["features.5.weight"] == (128, 64, 3, 3)
    last = CONV_INDICES[arch][-1]
    assert shapes[f"features.{last}.weight"] == (512, 512, 3, 3) and shapes[f"features.{last}.bias"] == (512,)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    assert n_params == {"vgg19": 20_024_384, "vgg16": 14_714_688}[arch]  # torchvision's features


def test_the_network_is_cut_after_the_deepest_layer() -> None:
    assert VGGFeatures("vgg19", ["relu4_2"]).depth == 23
    assert VGGFeatures("vgg19", ["relu1_1", "conv5_1"]).depth == 29
    assert VGGFeatures("vgg16", ["relu3_3"]).depth == 16 and VGGFeatures("vgg16", ["relu4_3"]).depth == 23
    keys = set(VGGFeatures("vgg19", ["relu2_1", "relu4_2"]).state_dict())
    assert keys == {f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21) for p in ("weight", "bias")}


# ---------------------------------------------------------------------------------- weight files


@pytest.fixture
def home(atelier_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ATELIER_HOME and torch.hub cache; no URL override from the environment."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(URL_ENV, raising=False)
    return atelier_home


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A stand-in for torchvision's VGG-19 file: every ``features`` tensor at its real shape (random
    values) plus ``classifier`` keys (tiny: they are ignored), saved under the real name."""
    folder = tmp_path_factory.mktemp("vgg_weights")
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) for k, shape in expected_shapes("vgg19").items()}
    for i in (0, 3, 6):
        state[f"classifier.{i}.weight"] = torch.randn(4, 4, generator=g)
        state[f"classifier.{i}.bias"] = torch.randn(4, generator=g)
    pth = folder / VGG19_FILE
    torch.save(state, pth)
    return SimpleNamespace(folder=folder, pth=pth, state=state, sha=hashlib.sha256(pth.read_bytes()).hexdigest())


def _assert_loaded(model, state: dict[str, torch.Tensor]) -> None:
    assert isinstance(model, VGGFeatures) and model.pretrained and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[key]), key


def test_load_a_pth_then_from_the_cache(vgg19_file: SimpleNamespace, home: Path) -> None:
    model = load_vgg("vgg19", ["relu1_1", "conv5_1"], weights=vgg19_file.pth, sha256=vgg19_file.sha)
    _assert_loaded(model, vgg19_file.state)
    assert len(model.state_dict()) == 2 * 13  # conv1_1 .. conv5_1
    assert vgg19_file.sha in model.provenance["sha256"] and model.provenance["file"] == VGG19_FILE
    assert VGG19_FILE in describe(model) and "verified" in describe(model)

    # Converted into the cache: features only (all 16 convolutions, not just those up to the cut).
    cached = home / "weights" / f"vgg19-{vgg19_file.sha[:8]}.safetensors"
    assert sorted(p.name for p in (home / "weights").iterdir()) == [cached.name]
    from safetensors import safe_open

    with safe_open(str(cached), framework="pt") as f:
        assert sorted(f.keys()) == sorted(expected_shapes("vgg19"))
        assert f.metadata()["source_sha256"] == vgg19_file.sha and f.metadata()["source_file"] == VGG19_FILE

    again = load_vgg("vgg19", ["relu4_2", "pool5"], sha256=vgg19_file.sha, download=False, fallback=False, pool="avg")
    _assert_loaded(again, vgg19_file.state)
    assert "cache" in again.provenance["source"] and again.depth == 37
    direct = load_vgg("vgg19", ["relu3_1"], weights=cached, sha256=vgg19_file.sha)  # a .safetensors path
    _assert_loaded(direct, vgg19_file.state)
    assert direct.provenance["sha256"] == vgg19_file.sha  # the source's hash, read from the metadata
    x = torch.rand(1, 3, 40, 40)  # pool5 still 1x1
    same = load_vgg("vgg19", ["relu4_2"], weights=vgg19_file.pth, sha256=vgg19_file.sha, pool="avg")
    assert torch.equal(again(x)["relu4_2"], same(x)["relu4_2"])


def test_hash_checks(vgg19_file: SimpleNamespace, home: Path) -> None:
    real = VGG_FILES["vgg19"][1]
    with pytest.raises(DataError, match=real) as err:
        load_vgg(weights=vgg19_file.pth)
    assert vgg19_file.sha in str(err.value) and "verify=False" in str(err.value)
    assert not (home / "weights").exists() or not any((home / "weights").iterdir())  # nothing cached

    model = load_vgg("vgg19", ["relu2_1"], weights=vgg19_file.pth, verify=False)
    _assert_loaded(model, vgg19_file.state)
    assert model.provenance["verified"] is False and "not verified" in describe(model)
    # Pretend that conversion is the standard one: a stale or foreign cache file is refused.
    own = home / "weights" / f"vgg19-{vgg19_file.sha[:8]}.safetensors"
    own.rename(home / "weights" / "vgg19-dcbb9e9d.safetensors")
    with pytest.raises(DataError, match="not converted from the expected VGG-19 weights"):
        load_vgg(download=False, fallback=False)
    _assert_loaded(load_vgg("vgg19", ["relu1_2"], download=False, verify=False), vgg19_file.state)
    with pytest.raises(ValueError, match="at least 8 hex digits"):
        load_vgg(weights=vgg19_file.pth, sha256="abc")
    prefix = load_vgg("vgg19", ["relu1_1"], weights=vgg19_file.pth, sha256=vgg19_file.sha[:8])
    assert prefix.provenance["sha256"] == vgg19_file.sha


def _small_state(arch: str = "vgg19", upto: int = 5) -> dict[str, torch.Tensor]:
    """Real-shaped tensors of the convolutions up to features index ``upto``."""
    return {k: torch.zeros(s) for k, s in expected_shapes(arch).items() if int(k.split(".")[1]) <= upto}


def test_bad_state_dicts_are_explained(tmp_path: Path, home: Path) -> None:
    def load(state: dict, layers=("relu2_1",)):
        path = tmp_path / "w.pth"
        torch.save(state, path)
        return load_vgg("vgg19", layers, weights=path, verify=False)

    # Keys past the cut may be absent; classifier keys are ignored.
    assert load({**_small_state(), "classifier.6.bias": torch.zeros(1000)}).pretrained
    state = _small_state()
    del state["features.2.bias"]
    with pytest.raises(DataError, match=r"missing keys \[features\.2\.bias\]"):
        load(state)
    with pytest.raises(DataError, match=r"missing keys \[features\.7\.weight, features\.7\.bias\]"):
        load(_small_state(), layers=("conv2_2",))
    state = {**_small_state(), "features.5.weight": torch.zeros(128, 3, 3, 3)}
    with pytest.raises(DataError, match=r"wrong shapes \[features\.5\.weight \(128, 3, 3, 3\) != \(128, 64, 3, 3\)\]"):
        load(state)
    with pytest.raises(DataError, match=r"unexpected keys \[features\.1\.weight, foo\]"):
        load({**_small_state(), "features.1.weight": torch.zeros(1), "foo": torch.zeros(1)})
    # VGG-16's file read as VGG-19: its conv4_1 sits at index 17, where VGG-19 has a ReLU.
    with pytest.raises(DataError, match=r"missing keys \[features\.16\.weight.*unexpected keys \[features\.17\.weight"):
        load(_small_state("vgg16", upto=17), layers=("relu4_1",))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read"):
        load_vgg(weights=tmp_path / "junk.pth", verify=False)
    with pytest.raises(FileNotFoundError, match=VGG19_FILE):
        load_vgg(weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no layer"):
        load_vgg("vgg16", ["relu3_4"])


def test_a_file_left_by_torchvision_is_found_offline(vgg19_file: SimpleNamespace, home: Path, tmp_path: Path) -> None:
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / VGG19_FILE).write_bytes(vgg19_file.pth.read_bytes())
    model = load_vgg("vgg19", ["relu2_2"], download=False, fallback=False, sha256=vgg19_file.sha)
    _assert_loaded(model, vgg19_file.state)
    assert (home / "weights" / f"vgg19-{vgg19_file.sha[:8]}.safetensors").is_file()
    assert (hub / VGG19_FILE).is_file()  # someone else's file is left alone


# ---------------------------------------------------------------------------------------- download


@pytest.mark.network
def test_download_converts_into_the_cache(
    vgg19_file: SimpleNamespace, home: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = serve(vgg19_file.folder)
    model = load_vgg("vgg19", ["relu3_1"], url=base + VGG19_FILE, sha256=vgg19_file.sha, progress=False)
    _assert_loaded(model, vgg19_file.state)
    assert hits == ["/" + VGG19_FILE] and model.provenance["source"] == base + VGG19_FILE
    cached = home / "weights" / f"vgg19-{vgg19_file.sha[:8]}.safetensors"
    assert [p.name for p in (home / "weights").iterdir()] == [cached.name]  # the .pth was not kept
    _assert_loaded(load_vgg("vgg19", ["relu5_1"], url=base + VGG19_FILE, sha256=vgg19_file.sha), vgg19_file.state)
    assert len(hits) == 1  # the second call used the cache

    cached.unlink()
    monkeypatch.setenv(URL_ENV, base)  # a folder: the standard file name is appended
    _assert_loaded(load_vgg("vgg19", ["relu1_1"], sha256=vgg19_file.sha, progress=False), vgg19_file.state)
    assert hits == ["/" + VGG19_FILE] * 2

    # The real hash does not match the stand-in: an error even with fallback=True, and nothing left.
    cached.unlink()
    with pytest.raises(DataError, match="checksum mismatch"):
        load_vgg("vgg19", ["relu1_1"], fallback=True, progress=False)
    assert list((home / "weights").iterdir()) == []


@pytest.mark.network
def test_unreachable_server_falls_back_or_explains(home: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/{VGG19_FILE}"
    with pytest.raises(WeightsUnavailableError) as err:
        load_vgg(url=url, fallback=False, progress=False)
    for part in (VGG19_FILE, url, str(home / "weights" / VGG19_FILE), "weights=PATH"):
        assert part in str(err.value)
    with pytest.warns(RandomFallbackWarning, match="could not download"):
        model = load_vgg("vgg19", ["relu2_1"], url=url, progress=False)
    assert isinstance(model, RandomFeatures) and "could not download" in describe(model)
    assert list((home / "weights").iterdir()) == []


# ----------------------------------------------------------------------------- random fallback


def test_offline_fallback_announces_itself_and_keeps_the_shapes(home: Path) -> None:
    layers = ["conv1_1", "relu1_2", "pool1", "relu2_1", "relu3_4", "relu4_2", "pool4", "relu5_1", "pool5"]
    with pytest.warns(RandomFallbackWarning, match=r"RANDOM multi-scale feature network \(seed 3\)"):
        model = load_vgg("vgg19", layers, download=False, seed=3)
    assert isinstance(model, RandomFeatures) and not model.pretrained and not model.training
    assert "RANDOM" in describe(model) and "seed 3" in describe(model)
    assert model.provenance == {"weights": "random", "arch": "vgg19", "seed": 3, "reason": model.provenance["reason"]}
    x = torch.rand(2, 3, 45, 62)  # odd sizes: pools floor like VGG's
    with torch.no_grad():
        got, want = model(x), VGGFeatures("vgg19", layers)(x)
    assert list(got) == layers
    for name in layers:
        assert got[name].shape[:1] + got[name].shape[2:] == want[name].shape[:1] + want[name].shape[2:], name
        assert torch.isfinite(got[name]).all()
    assert (got["relu5_1"] >= 0).all() and got["conv1_1"].min() < 0
    rms = {name: got[name].pow(2).mean().sqrt().item() for name in layers}
    assert all(0.05 < v < 5 for v in rms.values()), rms  # activations O(1) at every scale
    with pytest.raises(WeightsUnavailableError, match="download=False"):
        load_vgg(download=False, fallback=False)


def test_random_features_are_deterministic() -> None:
    x = torch.rand(1, 3, 32, 32)
    torch.manual_seed(1)
    a = RandomFeatures("vgg16", ["relu1_1", "relu3_3", "pool5"], seed=7)
    torch.manual_seed(2)  # the global RNG plays no part
    b = RandomFeatures("vgg16", ["relu1_1", "relu3_3", "pool5"], seed=7)
    c = RandomFeatures("vgg16", ["relu3_3"], seed=7)  # fewer layers: the same filters
    d = RandomFeatures("vgg16", ["relu1_1", "relu3_3", "pool5"], seed=8)
    fa, fb, fc, fd = a(x), b(x), c(x), d(x)
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert torch.equal(fa["relu3_3"], fc["relu3_3"])
    assert not torch.allclose(fa["relu1_1"], fd["relu1_1"])
    with pytest.raises(ValueError, match="no layer"):
        RandomFeatures("vgg16", ["relu3_4"])
    with pytest.raises(ValueError, match="pool"):
        RandomFeatures("vgg19", ["relu1_1"], pool="min")
    assert "untrained" in describe(VGGFeatures("vgg19", ["relu1_1"]))


def test_random_features_synthesise_a_texture() -> None:
    """Gram matching with the random network: the style loss falls far below its starting value."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    stripes = 0.5 + 0.4 * torch.sin((xx + 0.5 * yy) * 0.8)  # diagonal stripes, two colours
    target = torch.stack([stripes, 1 - stripes, 0.3 * stripes + 0.2])[None]
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    net = RandomFeatures("vgg19", layers, seed=0)
    with torch.no_grad():
        grams = {k: gram_matrix(v) for k, v in net(target).items()}
    weights = dict.fromkeys(layers, 1.0)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = style_loss(net(x), grams, weights)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::8]


# ------------------------------------------------------------------ the user's own weights (Python API)


def test_own_weights_by_hash_or_unverified_with_provenance(vgg19_file: SimpleNamespace, home: Path) -> None:
    from atelier.models.vgg_weights import weights_provenance

    pinned = VGG_FILES["vgg19"][1]
    given = load_vgg("vgg19", ["relu1_1"], weights=vgg19_file.pth, sha256=vgg19_file.sha.upper())
    _assert_loaded(given, vgg19_file.state)
    prov = weights_provenance(given)
    assert prov["sha256"] == vgg19_file.sha and prov["verified"] is True and prov["verified_against"] == "given"
    assert prov["matches_pinned"] is False and prov["pinned_sha256"] == pinned and prov["weights"] == "custom"
    assert "verified against the given sha256" in describe(given) and "not the official file" in describe(given)
    loose = weights_provenance(load_vgg("vgg19", ["relu1_1"], weights=vgg19_file.pth, verify=False))
    assert loose["sha256"] == vgg19_file.sha and loose["verified"] is False and loose["verified_against"] is None

    wrong = ("0" if vgg19_file.sha[0] != "0" else "1") + vgg19_file.sha[1:]
    with pytest.raises(DataError) as err:
        load_vgg("vgg19", ["relu1_1"], weights=vgg19_file.pth, sha256=wrong)
    message = str(err.value)  # the Python API names its own arguments
    assert vgg19_file.sha in message and wrong in message and pinned not in message
    assert "verify=False" in message and [o.key for o in err.value.options] == ["no_verify_weights"]
    with pytest.raises(DataError) as err:
        load_vgg("vgg19", ["relu1_1"], weights=vgg19_file.pth)  # the pinned hash: both ways out are named
    assert [o.text for o in err.value.options] == ["verify=False", "sha256=HEX"]
    with pytest.raises(ValueError, match="at least 8 hex digits"):
        load_vgg(weights=vgg19_file.pth, sha256="not-a-hash")


def test_fallback_provenance_says_random_fallback(home: Path) -> None:
    from atelier.models.vgg_weights import weights_provenance

    with pytest.warns(RandomFallbackWarning):
        model = load_vgg("vgg19", ["relu1_1"], download=False, seed=2)
    prov = weights_provenance(model)
    assert prov["weights"] == "random fallback" and prov["sha256"] is None and prov["verified"] is False
    assert prov["seed"] == 2 and "downloading is off" in prov["reason"]
    with pytest.raises(WeightsUnavailableError) as err:
        load_vgg(download=False, fallback=False)
    assert [o.key for o in err.value.options] == ["downloads_off", "weights_path"]
    assert "download=False" in str(err.value) and "weights=PATH" in str(err.value)
