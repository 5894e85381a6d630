"""atelier.augment: ops, pipelines (config files, seeds, replay, masks), mixup/cutmix, the folder CLI and
generative augmentation from a tiny conditional GAN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.augment.folder import augment_folder, default_sheet_path
from atelier.creative.generative import generate_labelled
from atelier.augment.mix import cutmix, mixup
from atelier.augment.ops import AugmentOp, get_op, list_ops
from atelier.augment.pipeline import AugmentConfig, OpConfig, Pipeline, default_pipeline
from atelier.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_GAN = ["--data", "digits", "--resolution", "28", "--batch-size", "16", "--g-width", "8", "--d-width", "8",
            "--latent-dim", "16", "--no-tensorboard", "--no-progress"]
GEOMETRIC = [n for n in list_ops() if get_op(n).kind == "geometric"]


def batch(channels: int, dtype: torch.dtype = torch.float32, b: int = 6, side: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, channels, side, side, generator=g)
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


def all_ops(p: float) -> Pipeline:
    return Pipeline([AugmentOp(name, p=p) for name in list_ops()])


# -- ops -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_ops())
def test_every_op_keeps_shape_dtype_and_range(name: str) -> None:
    pipe = Pipeline([AugmentOp(name, p=1.0)])
    for channels in (1, 3):
        for dtype in (torch.float32, torch.float64, torch.uint8):
            x = batch(channels, dtype)
            y = pipe(x, seed=1)
            assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
            if dtype != torch.uint8:
                assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and torch.isfinite(y).all()
    x = batch(3) * 2 - 1  # the generators' [-1, 1] range
    y = pipe(x, seed=2, value_range=(-1.0, 1.0))
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize("name", list_ops())
def test_p0_returns_the_input_exactly(name: str) -> None:
    pipe = Pipeline([AugmentOp(name, p=0.0)])
    for x in (batch(1), batch(3), batch(3, torch.uint8), batch(1, torch.float64)):
        y = pipe(x, seed=0)
        assert torch.equal(y, x) and y.dtype == x.dtype


def test_whole_pipeline_at_p0_and_untouched_rows_are_exact() -> None:
    x = batch(3, b=8) * 2 - 1
    assert torch.equal(all_ops(0.0)(x, seed=0, value_range=(-1, 1)), x)
    pipe = Pipeline([AugmentOp("noise", p=0.5)])
    y = pipe(x, seed=3, value_range=(-1, 1))
    untouched = ~pipe.params[0].apply
    assert untouched.any() and (~untouched).any()
    assert torch.equal(y[untouched], x[untouched]) and not torch.equal(y[~untouched], x[~untouched])


def test_ops_do_something_and_validate_their_parameters() -> None:
    x = batch(3)
    for name in list_ops():
        assert not torch.equal(Pipeline([AugmentOp(name, p=1.0)])(x, seed=0), x), name
    assert AugmentOp("cutout").name == "erase"
    with pytest.raises(ValueError, match="unknown augmentation op 'twirl'"):
        AugmentOp("twirl")
    with pytest.raises(ValueError, match="unknown parameter.*strength.*allowed: degrees"):
        AugmentOp("rotate", strength=3)
    with pytest.raises(ValueError, match="p must lie in"):
        AugmentOp("blur", p=1.5)
    with pytest.raises(ValueError, match="low end"):
        AugmentOp("blur", sigma=[2.0, 1.0])
    with pytest.raises(ValueError, match="grey .* or RGB"):
        Pipeline([AugmentOp("color_jitter", p=1.0)])(torch.rand(2, 4, 8, 8))


def test_grey_images_stay_grey_through_colour_ops() -> None:
    x = batch(1)
    y = Pipeline([AugmentOp("color_jitter", p=1.0, brightness=0.5, contrast=0.5)])(x, seed=0)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(Pipeline([AugmentOp("grayscale", p=1.0)])(x, seed=0), x)
    rgb = Pipeline([AugmentOp("grayscale", p=1.0)])(batch(3), seed=0)
    assert torch.allclose(rgb[:, 0], rgb[:, 1]) and torch.allclose(rgb[:, 1], rgb[:, 2])


# -- seeds, replay, masks --------------------------------------------------------------------------
def test_seed_fixes_the_output_and_leaves_the_global_rng_alone() -> None:
    pipe, x = all_ops(0.7), batch(3, torch.uint8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = pipe(x, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(100)  # move the global state: a seeded call must not care
    assert torch.equal(pipe(x, seed=5), a)
    assert not torch.equal(pipe(x, seed=6), a)
    assert not torch.equal(pipe(x), pipe(x))  # unseeded: fresh draws every call


def test_replay_reproduces_images_and_masks() -> None:
    pipe, x = all_ops(0.7), batch(3)
    masks = (torch.rand(6, 20, 20) > 0.5).long() * 3
    y, m = pipe(x, masks=masks, seed=9)
    assert m.shape == masks.shape and m.dtype == masks.dtype and set(m.unique().tolist()) <= {0, 3}
    params = pipe.params
    y2, m2 = pipe.replay(x, params, masks=masks)
    assert torch.equal(y, y2) and torch.equal(m, m2)
    assert torch.equal(pipe.replay(None, params, masks=masks), m)  # the mask alone, later
    assert torch.equal(pipe.replay(x[0], pipe.sample_params((1, 3, 20, 20), seed=1)),
                       pipe(x[:1], seed=1)[0])  # a single (C, H, W) image
    with pytest.raises(ValueError, match="drawn for 6 images"):
        pipe.replay(batch(3, b=4), params)
    with pytest.raises(ValueError, match="this pipeline has"):
        default_pipeline(3, 20).replay(x, params)


def test_geometric_ops_move_masks_exactly_like_the_image() -> None:
    ops = []
    for name in GEOMETRIC:
        kw = {"resample": "nearest"} if "resample" in get_op(name).defaults else {}
        ops.append(AugmentOp(name, p=1.0, **kw))
    pipe = Pipeline(ops)
    x = batch(3, side=24)
    y, m = pipe(x, masks=x[:, :1].clone(), seed=4)
    assert not torch.equal(y, x)
    assert torch.equal(m, y[:, :1])
    # a different image replayed through the same draws moves the same way
    other = batch(2, side=24, seed=7)
    assert torch.equal(pipe.replay(other, pipe.params, masks=x[:, :1])[1], m)
    # photometric ops leave masks alone
    photometric = Pipeline([AugmentOp(n, p=1.0) for n in list_ops() if n not in GEOMETRIC])
    masks = torch.randint(0, 5, (6, 24, 24))
    assert torch.equal(photometric(x, masks=masks, seed=0)[1], masks)


# -- configs -----------------------------------------------------------------------------------------
YAML = """ops:
  - {name: rotate, p: 0.4, degrees: 20}
  - name: blur
    sigma: [0.2, 1.5]
  - noise
"""
TOML = """[[ops]]
name = "rotate"
p = 0.4
degrees = 20

[[ops]]
name = "blur"
sigma = [0.2, 1.5]

[[ops]]
name = "noise"
"""


def test_yaml_toml_json_and_python_configs_agree(tmp_path: Path) -> None:
    python = AugmentConfig([OpConfig("rotate", 0.4, {"degrees": 20}), OpConfig("blur", params={"sigma": (0.2, 1.5)}),
                            OpConfig("noise")])
    (tmp_path / "a.yaml").write_text(YAML)
    (tmp_path / "a.toml").write_text(TOML)
    (tmp_path / "a.json").write_text(json.dumps(python.to_dict()))
    x = batch(3, torch.uint8)
    expected = Pipeline(python)(x, seed=0)
    for name in ("a.yaml", "a.toml", "a.json"):
        assert AugmentConfig.from_file(tmp_path / name) == python
        assert torch.equal(Pipeline.from_file(tmp_path / name)(x, seed=0), expected)
    resolved = Pipeline.from_file(tmp_path / "a.yaml").config
    assert resolved.ops[2].p == get_op("noise").p and resolved.ops[1].params["kernel_size"] is None
    assert Pipeline.from_config(resolved.to_dict()).config == resolved  # the resolved config round-trips


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  - {name: rotate, degree: 3}\n")
    with pytest.raises(ValueError, match="bad.yaml: rotate: unknown parameter"):
        Pipeline.from_file(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[ops]\nname=")
    with pytest.raises(ValueError, match="broken.toml: not a valid TOML"):
        Pipeline.from_file(broken)
    with pytest.raises(ValueError, match="unknown augmentation config key"):
        AugmentConfig.from_dict({"ops": [], "seed": 1})


def test_default_pipeline_is_label_safe() -> None:
    pipe = default_pipeline(1, 28)
    names = [op.name for op in pipe.ops]
    assert len(names) == 6 and not {"hflip", "vflip"} & set(names)
    x = batch(1, torch.uint8, side=28)
    assert pipe(x, seed=0).shape == x.shape


# -- mixup / cutmix ----------------------------------------------------------------------------------
def test_mixup_soft_labels_match_the_blend() -> None:
    x, labels = batch(3, b=8), torch.arange(8) % 4
    out = mixup(x, labels, 4, alpha=0.4, seed=0)
    assert out.labels.shape == (8, 4) and torch.allclose(out.labels.sum(1), torch.ones(8))
    w = out.weight.view(-1, 1, 1, 1)
    assert torch.allclose(out.images, w * x + (1 - w) * x[out.partner], atol=1e-6)
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    assert torch.allclose(out.labels, out.weight[:, None] * onehot + (1 - out.weight[:, None]) * onehot[out.partner])
    again = mixup(x, labels, 4, alpha=0.4, seed=0)
    assert torch.equal(again.images, out.images) and torch.equal(again.labels, out.labels)
    assert mixup(batch(1, torch.uint8, b=8), labels, 4, seed=1).images.dtype == torch.uint8


def test_cutmix_soft_labels_are_the_pasted_area() -> None:
    b = 8
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 16, 16).clone()  # image i is all i
    labels = torch.arange(b)
    out = cutmix(x, labels, b, alpha=1.0, seed=3)
    assert torch.allclose(out.labels.sum(1), torch.ones(b))
    for i in range(b):
        own = (out.images[i, 0] == i).float().mean()
        j = int(out.partner[i])
        if j != i:
            assert torch.isclose(out.labels[i, i], own) and torch.isclose(out.labels[i, j], 1 - own)
    assert 0 < float(out.weight.min()) and float(out.weight.max()) <= 1
    with pytest.raises(ValueError, match="labels must lie in"):
        cutmix(x, labels + 1, b)


# -- the folder CLI ----------------------------------------------------------------------------------
def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "cats" / "a.png")
    Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / "cats" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "dogs" / "c.png")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("ignored")
    return root


def test_augment_cli_keeps_labels_counts_files_and_names_the_corrupt_one(tmp_path: Path, capsys) -> None:
    src, out = make_folder(tmp_path / "in"), tmp_path / "out"
    assert main(["augment", str(src), "-o", str(out), "--copies", "3", "--seed", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "skipped 1 unreadable" in captured.err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [f"cats/a_aug{k}.png" for k in range(3)] + [f"cats/b_aug{k}.png" for k in range(3)] + \
        [f"dogs/c_aug{k}.png" for k in range(3)]
    assert Image.open(out / "cats" / "b_aug0.png").mode == "L" and Image.open(out / "cats" / "a_aug2.png").size == (40, 30)
    sheet = default_sheet_path(out)
    assert sheet.is_file() and str(sheet) in captured.out
    assert Image.open(sheet).size[0] > Image.open(sheet).size[1]  # 3 rows of 1 + 3 tiles
    record = json.loads((out / "augment.json").read_text())
    assert record["written"] == 9 and record["failures"][0][0] == "dogs/broken.png" and len(record["pipeline"]["ops"]) == 6
    from atelier.data import load_dataset

    data = load_dataset(f"folder:{out}", resolution=16, progress=False)
    assert data.classes == ["cats", "dogs"] and data.labels.tolist() == [0] * 6 + [1] * 3


def test_augment_folder_is_reproducible_and_uses_a_config(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "in")
    cfg = tmp_path / "aug.toml"
    cfg.write_text('[[ops]]\nname = "hflip"\np = 1.0\n')
    for name in ("o1", "o2"):
        assert main(["augment", str(src), "-o", str(tmp_path / name), "--copies", "2", "--config", str(cfg),
                     "--with-originals", "--no-contact-sheet", "--no-progress"]) == 0
    files = sorted(p.relative_to(tmp_path / "o1") for p in (tmp_path / "o1").rglob("*.*"))
    assert [(tmp_path / "o1" / f).read_bytes() for f in files] == [(tmp_path / "o2" / f).read_bytes() for f in files]
    assert (tmp_path / "o1" / "cats" / "b.jpg").read_bytes() == (src / "cats" / "b.jpg").read_bytes()
    flipped = np.asarray(Image.open(tmp_path / "o1" / "dogs" / "c_aug0.png"))
    assert np.array_equal(flipped, np.asarray(Image.open(src / "dogs" / "c.png"))[:, ::-1])
    assert not default_sheet_path(tmp_path / "o1").exists()


def test_augment_cli_errors(tmp_path: Path, capsys) -> None:
    src = make_folder(tmp_path / "in")
    assert main(["augment", str(src), "-o", str(src / "aug")]) == 2
    assert "must not be the input folder or inside it" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"junk")
    assert main(["augment", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "no readable images" in capsys.readouterr().err and not (tmp_path / "o" / "augment.json").exists()
    assert main(["augment", "-o", str(tmp_path / "o")]) == 2
    assert "give INPUT_DIR" in capsys.readouterr().err
    with pytest.raises(ValueError, match="inside the output folder"):
        augment_folder(src, tmp_path / "o", copies=1, contact_sheet=tmp_path / "o" / "sheet.png")
    assert main(["augment", "--list-ops"]) == 0 and "elastic" in capsys.readouterr().out



def test_augment_sigterm_stops_between_images_and_says_what_was_written(tmp_path: Path, capsys, monkeypatch) -> None:
    import os
    import signal

    import atelier.data.images as images_module

    src, out = make_folder(tmp_path / "in"), tmp_path / "out"
    save, calls = images_module.save_image, []

    def save_then_signal(*args, **kwargs):  # a real SIGTERM while the first image's last copy is written
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return save(*args, **kwargs)

    monkeypatch.setattr(images_module, "save_image", save_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["augment", str(src), "-o", str(out), "--copies", "2", "--with-originals", "--no-progress"])
    assert rc == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) == before
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after 1 of 4 images: wrote 2 complete PNGs and copied 1 originals" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == [
        "augment.json", "cats/a.png", "cats/a_aug0.png", "cats/a_aug1.png"]  # the first image's outputs, whole
    for name in ("a_aug0.png", "a_aug1.png"):
        with Image.open(out / "cats" / name) as im:
            im.load()
    assert (out / "cats" / "a.png").read_bytes() == (src / "cats" / "a.png").read_bytes()
    assert not default_sheet_path(out).exists()
    record = json.loads((out / "augment.json").read_text())
    assert record["stopped"] is True and record["written"] == 2 and record["total"] == 4


def test_augment_folder_should_stop_before_the_first_image_writes_nothing(tmp_path: Path) -> None:
    src, out = make_folder(tmp_path / "in"), tmp_path / "out"
    result = augment_folder(src, out, copies=2, should_stop=lambda: True)
    assert result.stopped and result.images == result.written == 0 and result.total == 4
    assert result.manifest is None and result.contact_sheet is None and not out.exists()

# -- generative augmentation ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("augment_runs")
    out = {"cond": root / "cond", "uncond": root / "uncond"}
    assert main(["train", "gan", *TINY_GAN, "--out", str(out["cond"]), "--steps", "2", "--conditional"]) == 0
    assert main(["train", "gan", *TINY_GAN, "--out", str(out["uncond"]), "--steps", "1"]) == 0
    return out


class StubClassifier:
    """Deterministic 'classifier': class = pixel sum mod 10, confidence rising with (sum // 10) mod 5."""

    name = "stub"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        total = images.long().flatten(1).sum(1)
        logits = torch.zeros(images.shape[0], 10)
        logits[torch.arange(images.shape[0]), total % 10] = ((total // 10) % 5).float() * 2.0
        return logits


def test_generate_writes_k_per_class(runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen"
    assert main(["augment", "--generate", str(runs["cond"]), "--per-class", "3", "-o", str(out), "--seed", "2"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [str(i) for i in range(10)]
    assert all(sorted(q.name for q in (out / f).iterdir()) == ["gen_00000.png", "gen_00001.png", "gen_00002.png"]
               for f in folders)
    assert Image.open(out / "0" / "gen_00000.png").mode == "L"
    gen = generate_labelled(runs["cond"], 3, seed=2)  # in memory, same seed: the same pixels
    assert gen.images.shape == (30, 1, 28, 28) and gen.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert np.array_equal(np.asarray(Image.open(out / "4" / "gen_00001.png")), gen.images[13, 0].numpy())
    assert gen.dataset().num_classes == 10


def test_generate_refuses_an_unconditional_model(runs, tmp_path: Path, capsys) -> None:
    assert main(["augment", "--generate", str(runs["uncond"]), "--per-class", "2", "-o", str(tmp_path / "g")]) == 2
    assert "unconditional" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_confidence_filter_keeps_only_confident_samples(runs, tmp_path: Path) -> None:
    stub = StubClassifier()
    gen = generate_labelled(runs["cond"], 4, min_confidence=0.9, classifier=stub, seed=0, max_oversample=200,
                            out_dir=tmp_path / "kept")
    probs = stub(gen.images).softmax(1)
    assert (probs.argmax(1) == gen.labels).all()
    assert (probs[torch.arange(len(gen.labels)), gen.labels] >= 0.9).all()
    assert torch.allclose(gen.confidence, probs[torch.arange(len(gen.labels)), gen.labels])
    assert sum(gen.drawn) > 40  # it had to oversample
    assert len(list((tmp_path / "kept").rglob("*.png"))) == 40
    with pytest.raises(ValueError, match="kept too few samples.*Nothing was written"):
        generate_labelled(runs["cond"], 4, min_confidence=0.9, classifier=stub, max_oversample=1,
                          out_dir=tmp_path / "short")
    assert not (tmp_path / "short").exists()


def test_real_and_generated_images_combined(runs, tmp_path: Path) -> None:
    src = tmp_path / "digits"
    rng = np.random.default_rng(1)
    for c in range(10):
        (src / str(c)).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(src / str(c) / "real.png")
    out = tmp_path / "out"
    assert main(["augment", str(src), "--generate", str(runs["cond"]), "--per-class", "2", "--copies", "2",
                 "--with-originals", "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "7").iterdir()) == ["gen_00000.png", "gen_00001.png", "real.png",
                                                             "real_aug0.png", "real_aug1.png"]
    (src / "extra").mkdir()
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(src / "extra" / "x.png")
    assert main(["augment", str(src), "--generate", str(runs["cond"]), "--per-class", "1", "-o",
                 str(tmp_path / "o2")]) == 2
