"""``atelier stylize`` / ``atelier style`` and the ``atelier.style.stylize`` entry point (offline: random features)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
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
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    assert "trained 3 steps" in capsys.readouterr().out
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
