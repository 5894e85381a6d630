"""``atelier stylize`` / ``atelier style`` and the ``atelier.style.stylize`` entry point (offline: random features)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.models.pretrained import latest_checkpoint
from atelier.style import stylize


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    content = tmp_path / "content.png"
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(content)  # landscape
    style = tmp_path / "style.jpg"
    yy, xx = np.mgrid[0:40, 0:40]
    stripes = ((np.sin(xx / 2.0) > 0) * 200 + 30).astype(np.uint8)
    Image.fromarray(np.stack([stripes, stripes[::-1], 255 - stripes], -1)).save(style)
    mask = tmp_path / "mask.png"
    m = np.zeros((30, 50), np.uint8)
    m[:, 25:] = 255
    Image.fromarray(m).save(mask)
    return content, style, mask


TINY = ["--size", "32", "--steps", "3", "--scales", "1", "--offline", "--quiet", "--precision", "fp32"]


def test_stylize_cli_writes_image_record_and_gif(photos, tmp_path, atelier_home, capsys):
    content, style, mask = photos
    out = tmp_path / "out" / "result.png"
    gif = tmp_path / "out" / "steps.gif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["stylize", str(content), str(style), str(style), "-o", str(out), *TINY, "--style-blend", "1,3",
                   "--preserve-colors", "histogram", "--mask", str(mask), "--gif", str(gif), "--frame-every", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "random" in printed.lower()  # the fallback is announced
    with Image.open(out) as im:
        assert im.size == (32, 19)  # 50x30 content, longer side 32, aspect kept
    record = json.loads(out.with_suffix(".png.json").read_text())
    assert record["config"]["style_blend"] == [1.0, 3.0]
    assert record["config"]["preserve_colors"] == "histogram"
    assert "random" in record["feature_network"].lower()
    assert len(record["styles"]) == 2 and record["final"]["step"] == 3
    with Image.open(gif) as im:
        assert im.n_frames == 4  # three iterations plus the final image


def test_stylize_cli_errors_are_clear(photos, tmp_path, atelier_home, capsys):
    content, style, _ = photos
    assert main(["stylize", str(content), "-o", str(tmp_path / "x.png"), *TINY]) == 2
    assert "CONTENT STYLE" in capsys.readouterr().err
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "x.tiff"), *TINY]) == 2
    assert ".png" in capsys.readouterr().err
    # no weights, offline, fallback refused: the error says where the weights come from
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "x.png"), *TINY, "--no-fallback"]) == 2
    err = capsys.readouterr().err
    assert "vgg19-dcbb9e9d" in err
    assert main(["stylize", str(tmp_path / "missing.png"), str(style), "-o", str(tmp_path / "x.png"), *TINY]) == 2
    assert "missing.png" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert main(["stylize", str(broken), str(style), "-o", str(tmp_path / "x.png"), *TINY]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["style", "weights", "--offline"]) == 2
    assert "vgg19-dcbb9e9d" in capsys.readouterr().err


def test_stylize_python_entry_point(photos, atelier_home):
    content, style, _ = photos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = stylize(content, style, size=40, steps=2, scales=1, download=False, progress=False, precision="fp32")
    assert image.shape == (3, 24, 40) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    with pytest.raises(ValueError, match="style image"):
        stylize(content)
    with pytest.raises(ValueError, match="not both"):
        stylize(content, style, model="somewhere")


def test_fast_style_train_and_stylize_cli(photos, tmp_path, atelier_home, capsys):
    content, style, _ = photos
    photos_dir = tmp_path / "photos"
    (photos_dir / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, where in enumerate([photos_dir, photos_dir, photos_dir / "sub"]):
        Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 36, 3), dtype=np.uint8)).save(where / f"p{i}.png")
    model_dir = tmp_path / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["style", "train", "--style", str(style), "--content-dir", str(photos_dir), "-o", str(model_dir),
                   "--steps", "3", "--size", "32", "--batch-size", "2", "--width", "4", "--res-blocks", "1",
                   "--offline", "--quiet", "--precision", "fp32"])
    assert rc == 0
    assert latest_checkpoint(model_dir) is not None and (model_dir / "config.json").is_file()
    assert "3 steps in" in capsys.readouterr().out
    out_dir = tmp_path / "styled"
    (photos_dir / "broken.jpg").write_bytes(b"not a jpeg")
    rc = main(["stylize", "--model", str(model_dir), str(content), str(photos_dir), "-o", str(out_dir),
               "--strength", "0.5"])
    assert rc == 0
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert len(written) == 4 and any(w.startswith("photos/sub/") or w.startswith("sub/") for w in written)
    with Image.open(out_dir / "content.png") as im:
        assert im.size == (50, 30)  # the input's size is kept
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err + captured.out
    # strength 0 gives back the content exactly (up to 8-bit rounding)
    rc = main(["stylize", "--model", str(model_dir), str(content), "-o", str(tmp_path / "zero"), "--strength", "0"])
    assert rc == 0
    a = np.asarray(Image.open(tmp_path / "zero" / "content.png")).astype(int)
    b = np.asarray(Image.open(content)).astype(int)
    assert np.abs(a - b).max() <= 1
    assert main(["stylize", "--model", str(model_dir), str(content), "-o", str(tmp_path / "x.png")]) == 2


# ------------------------------------------------------------------------- the user's own VGG weights

#: Gatys on the first two VGG blocks only, so a file holding their four convolutions is enough.
SHALLOW = ["--style-layers", "relu1_1,relu2_1", "--content-layers", "relu2_2"]


@pytest.fixture
def own_vgg(tmp_path):
    """The user's own VGG-19 weights: torchvision's ``features.N.weight/bias`` keys and shapes for the first
    two blocks (all the shallow layers need), random values, saved with torch.save."""
    import hashlib

    from atelier.models.vgg_weights import expected_shapes

    g = torch.Generator().manual_seed(7)
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in expected_shapes("vgg19").items()
             if int(k.split(".")[1]) <= 7}
    path = tmp_path / "my_vgg19.pth"
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _stylize(photos, out, *flags):
    content, style, _ = photos
    return main(["stylize", str(content), str(style), "-o", str(out), *TINY, *SHALLOW, *flags])


def test_own_weights_without_a_flag_are_refused_naming_the_flags(photos, own_vgg, tmp_path, atelier_home, capsys):
    from atelier.models.vgg_weights import VGG_FILES

    pth, sha = own_vgg
    out = tmp_path / "out.png"
    assert _stylize(photos, out, "--weights", str(pth)) == 2
    err = capsys.readouterr().err
    assert "--no-verify-weights" in err and "--weights-sha256 HEX" in err
    assert "verify=False" not in err and "sha256=" not in err  # no Python keywords on the command line
    assert sha in err and VGG_FILES["vgg19"][1] in err and str(pth) in err
    assert not out.exists()


@pytest.mark.parametrize("how", ["sha256", "no-verify"])
def test_own_weights_accepted_by_hash_or_unverified_and_recorded(how, photos, own_vgg, tmp_path, atelier_home,
                                                                  capsys):
    pth, sha = own_vgg
    out = tmp_path / "out.png"
    flags = ["--weights-sha256", sha] if how == "sha256" else ["--no-verify-weights"]
    assert _stylize(photos, out, "--weights", str(pth), *flags) == 0
    assert "warning" not in capsys.readouterr().out  # real (if home-made) weights: no fallback
    record = json.loads(out.with_suffix(".png.json").read_text())
    weights = record["weights"]
    assert weights["sha256"] == sha and weights["file"] == pth.name and weights["source"] == str(pth)
    assert weights["matches_pinned"] is False and weights["weights"] == "custom"
    if how == "sha256":
        assert weights["verified"] is True and weights["verified_against"] == "given"
        assert "verified against the given sha256" in record["feature_network"]
    else:
        assert weights["verified"] is False and weights["verified_against"] is None
        assert "not verified" in record["feature_network"]
    with Image.open(out) as im:
        assert im.size == (32, 19)


def test_a_wrong_weights_sha256_is_refused_naming_both_hashes(photos, own_vgg, tmp_path, atelier_home, capsys):
    pth, sha = own_vgg
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    assert _stylize(photos, tmp_path / "out.png", "--weights", str(pth), "--weights-sha256", wrong) == 2
    err = capsys.readouterr().err
    assert sha in err and wrong in err and "--no-verify-weights" in err and "verify=False" not in err
    with pytest.raises(SystemExit):  # not a hash at all: argparse says so
        _stylize(photos, tmp_path / "out.png", "--weights", str(pth), "--weights-sha256", "xyz")
    assert "SHA-256" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        _stylize(photos, tmp_path / "out.png", "--weights", str(pth), "--weights-sha256", sha, "--no-verify-weights")


def test_keys_and_shapes_are_checked_even_unverified(photos, tmp_path, atelier_home, capsys):
    from atelier.models.vgg_weights import expected_shapes

    state = {k: torch.zeros(s) for k, s in expected_shapes("vgg19").items() if int(k.split(".")[1]) <= 7}
    state["features.5.weight"] = torch.zeros(128, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    assert _stylize(photos, tmp_path / "out.png", "--weights", str(tmp_path / "bad.pth"), "--no-verify-weights") == 2
    assert "wrong shapes [features.5.weight (128, 3, 3, 3) != (128, 64, 3, 3)]" in capsys.readouterr().err


def test_fallback_and_fast_style_records_say_which_weights(photos, own_vgg, tmp_path, atelier_home, capsys):
    content, style, _ = photos
    out = tmp_path / "fallback.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _stylize(photos, out) == 0  # offline, nothing cached: random features
    weights = json.loads(out.with_suffix(".png.json").read_text())["weights"]
    assert weights["weights"] == "random fallback" and weights["sha256"] is None and weights["verified"] is False

    pth, sha = own_vgg
    photos_dir = tmp_path / "photos"
    photos_dir.mkdir()
    Image.open(content).save(photos_dir / "a.png")
    model_dir = tmp_path / "model"
    assert main(["style", "train", "--style", str(style), "--content-dir", str(photos_dir), "-o", str(model_dir),
                 "--steps", "2", "--size", "32", "--batch-size", "1", "--width", "4", "--res-blocks", "1",
                 "--arch", "vgg19", *SHALLOW, "--weights", str(pth), "--weights-sha256", sha[:12],
                 "--offline", "--quiet", "--precision", "fp32"]) == 0
    config = json.loads((model_dir / "config.json").read_text())
    assert config["feature_weights"]["sha256"] == sha and config["feature_weights"]["verified_against"] == "given"
    assert sha[:16] in config["feature_network"]
    capsys.readouterr()
    # style train refuses them without a flag too, in CLI terms
    assert main(["style", "train", "--style", str(style), "--content-dir", str(photos_dir), "-o",
                 str(tmp_path / "m2"), "--steps", "1", "--arch", "vgg19", *SHALLOW, "--weights", str(pth),
                 "--offline", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--no-verify-weights" in err and "verify=False" not in err


def test_style_weights_imports_own_weights_for_later_runs(photos, own_vgg, tmp_path, atelier_home, capsys):
    pth, sha = own_vgg
    assert main(["style", "weights", "--weights", str(pth), "--offline"]) == 2
    assert "--weights-sha256 HEX" in capsys.readouterr().err
    assert main(["style", "weights", "--weights", str(pth), "--weights-sha256", sha]) == 0
    assert f"--weights-sha256 {sha}" in capsys.readouterr().out
    # converted into the cache: later runs need only the hash
    out = tmp_path / "out.png"
    assert _stylize(photos, out, "--weights-sha256", sha, "--no-fallback") == 0
    weights = json.loads(out.with_suffix(".png.json").read_text())["weights"]
    assert weights["sha256"] == sha and weights["verified"] is True and "cache" in weights["source"]


def test_cli_errors_spell_only_flags_the_command_has(own_vgg):
    """A library error names Python settings; the CLI puts in its own flags where the command has them."""
    from argparse import Namespace

    from atelier.cli.errors import error_text
    from atelier.data import DataError
    from atelier.models.vgg_weights import load_vgg

    pth, sha = own_vgg
    with pytest.raises(DataError) as err:
        load_vgg("vgg19", ["relu1_1"], weights=pth)
    python = str(err.value)
    assert "verify=False" in python and "sha256=HEX" in python and "--" not in python.replace(str(pth), "")
    assert [o.key for o in err.value.options] == ["no_verify_weights", "weights_sha256"]
    stylize_like = error_text(err.value, Namespace(verify_weights=True, weights_sha256=None))
    assert stylize_like == python.replace("verify=False", "--no-verify-weights").replace("sha256=HEX",
                                                                                         "--weights-sha256 HEX")
    evaluate_like = error_text(err.value, Namespace(verify_weights=True))  # has no --weights-sha256
    assert "--no-verify-weights" in evaluate_like and "sha256=HEX" in evaluate_like
    assert error_text(ValueError("plain"), Namespace()) == "plain"


def _sigterm_on_call(n: int, fn):
    """``fn`` that sends this process a real SIGTERM during its ``n``-th call (inside the CLI's protected
    block, as a scheduler's signal would arrive mid-work)."""
    import os
    import signal

    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return fn(*args, **kwargs)

    return wrapped


def test_stylize_sigterm_stops_at_an_iteration_and_writes_the_best_image_so_far(photos, tmp_path, atelier_home,
                                                                                 capsys, monkeypatch):
    import signal

    from atelier.style.gatys import StyleLoss

    content, style, _ = photos
    out = tmp_path / "out.png"
    monkeypatch.setattr(StyleLoss, "forward", _sigterm_on_call(3, StyleLoss.forward))  # one call per iteration
    before = signal.getsignal(signal.SIGTERM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["stylize", str(content), str(style), "-o", str(out), *TINY, "--steps", "50"])  # the last wins
    assert rc == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are taken down again
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after 3 of 50 iterations" in err and str(out) in err
    with Image.open(out) as im:  # complete, at the output size
        im.load()
        assert im.size == (32, 19)
    record = json.loads(out.with_suffix(".png.json").read_text())
    assert record["stopped_by"] == "SIGTERM" and record["iterations"] == 3 and record["final"]["step"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_stylize_with_a_model_stops_between_images_on_sigterm(photos, tmp_path, atelier_home, capsys, monkeypatch):
    import signal

    import atelier.style.fast as fast
    from atelier.models.transformer_net import TransformerNet, TransformerNetConfig

    content, _, _ = photos
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):
        Image.open(content).save(folder / f"p{i}.png")
    torch.manual_seed(0)
    TransformerNet(TransformerNetConfig(width=4, n_res_blocks=1)).save_pretrained(tmp_path / "model")
    monkeypatch.setattr(fast, "stylize_with_model", _sigterm_on_call(1, fast.stylize_with_model))
    out = tmp_path / "styled"
    rc = main(["stylize", "--model", str(tmp_path / "model"), str(folder), "-o", str(out), "--quiet"])
    assert rc == 128 + signal.SIGTERM
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["p0.png"]  # the image stylised when the signal came is finished; no others are started
    with Image.open(out / "p0.png") as im:
        im.load()
        assert im.size == (50, 30)
    captured = capsys.readouterr()
    assert "wrote 1 image(s)" in captured.out and "stopped by SIGTERM after 1 of 5 input images" in captured.err
