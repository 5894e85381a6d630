"""The evaluator end to end on the bundled digits: reference caching, metrics.json, the report,
inputs (model, .npz, folder), the CLI and evaluation during training with a best checkpoint."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.data import DataError, load_dataset
from atelier.data.base import ConversionNote
from atelier.metrics import EvalConfig, Evaluator, load_extractor
from atelier.metrics.classifier import fit_classifier, load_classifier, save_classifier
from atelier.metrics.extractors import InceptionExtractor, default_extractor
from atelier.metrics.reference import compute_reference
from atelier.metrics.sources import images_from_array, load_generated

REQUIRED_KEYS = {"fid", "kid_mean", "kid_std", "is", "precision", "recall", "density", "coverage", "c2st_accuracy",
                 "near_copy_fraction", "provenance"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An ATELIER_HOME holding a quickly fitted digits classifier (the real one trains longer)."""
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(root))
        train = load_dataset("digits", split="train", progress=False)
        test = load_dataset("digits", split="test", progress=False)
        save_classifier(fit_classifier(train, test, epochs=3, batch_size=64, lr=3e-3, progress=False), "digits-cnn")
        yield root


@pytest.fixture
def digits_home(home, monkeypatch):
    monkeypatch.setenv("ATELIER_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def digits():
    return {s: load_dataset("digits", split=s, progress=False) for s in ("train", "test")}


def small_cfg(**kw) -> EvalConfig:
    return EvalConfig(**{"data": "digits", "kid_subset_size": 100, "kid_subsets": 20, **kw})


def test_default_extractors_and_unknown_names() -> None:
    assert default_extractor("mnist") == "mnist-cnn" and default_extractor("digits") == "digits-cnn"
    assert default_extractor("folder:/x") == "inception-v3"
    with pytest.raises(ValueError, match="unknown feature extractor"):
        load_extractor("vgg")
    with pytest.raises(ValueError, match="inception-v3 only"):
        load_extractor("digits-cnn", resize="bilinear")


def test_extractor_is_identified_by_its_weights(digits_home, digits) -> None:
    ex = load_extractor("digits-cnn")
    assert ex.sha256 == load_classifier("digits-cnn").sha256 and len(ex.sha256) == 64
    out = ex(digits["test"].images[:20])
    assert out.features.shape == (20, 128) and out.logits.shape == (20, 10)
    rgb64 = torch.nn.functional.interpolate(digits["test"].images[:20].float(), size=64).to(torch.uint8).expand(-1, 3, -1, -1)
    assert ex(rgb64).features.shape == (20, 128)  # any size and channel count
    with pytest.raises(ValueError, match="uint8"):
        ex(digits["test"].images[:2].float())


def test_missing_domain_classifier_is_an_error_when_fitting_is_off(atelier_home) -> None:
    with pytest.raises(DataError, match="fit-classifier --data digits"):
        load_extractor("digits-cnn", fit=False)


def test_reference_statistics_are_cached_and_keyed_by_the_images(digits_home, digits, recwarn) -> None:
    ex = load_extractor("digits-cnn")
    first = compute_reference(digits["test"], ex, split="test", n=200, seed=0)
    again = compute_reference(digits["test"], ex, split="test", n=200, seed=0)
    assert not first.cached and again.cached
    assert torch.equal(first.features, again.features) and torch.equal(first.stats.cov, again.stats.cov)
    assert first.stats.cov.dtype == torch.float64 and first.meta["n"] == 200
    other = compute_reference(digits["test"], ex, split="test", n=200, seed=1)  # another subset: another key
    assert not other.cached and other.meta["images_sha256"] != first.meta["images_sha256"]
    # A damaged cache file is recomputed, with a warning, not trusted.
    from atelier.metrics.reference import reference_path

    reference_path(first.meta).write_bytes(b"not safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = compute_reference(digits["test"], ex, split="test", n=200, seed=0)
    assert not again.cached and any("unreadable reference" in str(w.message) for w in caught)


def test_evaluator_floor_ceiling_and_provenance(digits_home, digits) -> None:
    ev = Evaluator(small_cfg(), resolution=28, progress=False)
    real = ev.evaluate(digits["train"].images[:359], source="train split")
    noise = ev.evaluate(torch.randint(0, 256, (359, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    m, q = real.metrics, noise.metrics
    assert m["fid"] < 0.1 * q["fid"] and m["kid_mean"] < 0.05 * q["kid_mean"]
    assert m["precision"] > 0.6 and m["recall"] > 0.6 and q["precision"] < 0.05 and q["recall"] < 0.05
    assert m["is"] > 5 and q["is"] < m["is"]
    assert m["c2st_accuracy"] < 0.65 and q["c2st_accuracy"] > 0.95
    assert m["near_copy_fraction"] == 1.0  # the training images themselves are copies
    assert q["near_copy_fraction"] == 0.0
    p = real.provenance
    for key in ("extractor", "extractor_sha256", "resize", "n_real", "n_fake", "split", "seed", "atelier_version"):
        assert key in p
    assert p["n_real"] == 359 and p["n_fake"] == 359 and p["split"] == "test" and p["extractor"] == "digits-cnn"
    assert REQUIRED_KEYS <= set(real.to_json())


def test_evaluator_conforms_size_and_channels(digits_home, digits) -> None:
    ev = Evaluator(small_cfg(metrics=("fid",)), resolution=28, progress=False)
    big_rgb = torch.nn.functional.interpolate(digits["train"].images[:100].float(), size=56, mode="bilinear")
    with pytest.warns(ConversionNote, match=r"^samples are 56x56 RGB, the reference \(digits:test\) is 28x28 grey: "
                      r"resized to 28x28 and converted to grey before scoring$"):
        result = ev.evaluate(big_rgb.round().to(torch.uint8).expand(-1, 3, -1, -1))
    assert set(result.metrics) == {"fid"}
    assert result.provenance["generated_conversion"] == ["channels 3 -> 1", "resized 56x56 -> 28x28"]
    with pytest.raises(DataError, match="at least 10"):
        ev.evaluate(digits["train"].images[:5])
    with pytest.raises(ValueError, match="unknown metrics"):
        EvalConfig(metrics=("fid", "lpips"))


def test_images_from_array_layouts() -> None:
    nhwc = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert torch.equal(images_from_array(nhwc), torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert torch.equal(images_from_array(nhwc.transpose(0, 3, 1, 2)), images_from_array(nhwc))
    assert images_from_array(np.zeros((2, 8, 8), np.uint8)).shape == (2, 1, 8, 8)
    assert images_from_array(np.ones((2, 8, 8, 4), np.uint8)).shape == (2, 3, 8, 8)  # alpha dropped
    floats = np.array([[[[-1.0, 0.0, 1.0]]]], dtype=np.float32).reshape(1, 1, 1, 3).transpose(0, 1, 3, 2)
    assert images_from_array(floats).flatten().tolist() == [0, 128, 255]  # [-1, 1] when negative
    assert images_from_array(np.full((1, 4, 4), 0.5, np.float32)).unique().tolist() == [128]  # [0, 1]
    for bad, match in ((np.zeros((2, 5, 5, 7)), "expected images"), (np.full((1, 4, 4), np.nan), "NaN"),
                       (np.full((1, 4, 4), 3.0), r"\[0, 1\] or \[-1, 1\]"), (np.zeros((0, 4, 4), np.uint8), "empty")):
        with pytest.raises(DataError, match=match):
            images_from_array(bad)


def test_load_generated_from_npz_folder_and_model(tmp_path) -> None:
    from atelier.models import GAN, GANConfig

    arr = np.random.default_rng(0).integers(0, 256, (30, 16, 16, 1), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=arr, labels=np.arange(30))
    got = load_generated(tmp_path / "s.npz", n=20)
    assert got.images.shape == (20, 1, 16, 16) and got.labels.tolist() == list(range(20)) and got.kind == "npz"
    np.savez(tmp_path / "bad.npz", pictures=arr)
    with pytest.raises(DataError, match="no array named 'images'"):
        load_generated(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", images=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="not a readable"):
        load_generated(tmp_path / "obj.npz")  # never unpickled
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(arr[i, :, :, 0]).save(folder / f"{i}.png")
    got = load_generated(folder, n=10)
    assert got.images.shape == (10, 1, 16, 16) and got.kind == "folder"
    torch.manual_seed(0)
    model = GAN(GANConfig(resolution=16, channels=1, latent_dim=8, g_width=8, d_width=8, num_classes=3))
    model.save_pretrained(tmp_path / "model")
    a = load_generated(tmp_path / "model", n=12, seed=3)
    b = load_generated(tmp_path / "model", n=12, seed=3)
    assert a.kind == "model" and torch.equal(a.images, b.images) and a.labels.tolist() == [0, 1, 2] * 4
    with pytest.raises(FileNotFoundError):
        load_generated(tmp_path / "missing")


def test_cli_evaluate_writes_metrics_and_report(digits_home, digits, tmp_path, capsys) -> None:
    images = digits["train"].images[:200].permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "gen.npz", images=images)
    out = tmp_path / "eval"
    rc = main(["evaluate", str(tmp_path / "gen.npz"), "--data", "digits", "--n", "200", "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(metrics)
    assert metrics["provenance"]["n_fake"] == 200 and metrics["provenance"]["extractor"] == "digits-cnn"
    assert all(isinstance(metrics[k], float) for k in REQUIRED_KEYS - {"provenance"})
    page = (out / "index.html").read_text()
    assert "samples.png" in page and "nearest.png" in page and f"{metrics['fid']:.5g}" in page
    for name in ("samples.png", "nearest.png", "nn_distances.png"):
        assert Image.open(out / name).size[0] > 50
    assert "fid" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "gen.npz"), "--out", str(out)]) == 2  # no --data for an .npz
    assert "say which real data" in capsys.readouterr().err


def test_inception_extractor_wraps_the_network() -> None:
    from atelier.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    ex = InceptionExtractor(FIDInceptionV3(), "0" * 64, "tf-bilinear")
    out = ex(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert out.features.shape == (2, 2048) and out.logits.shape == (2, 1008)
    assert "tf-bilinear" in ex.provenance()["resize"]
    with pytest.raises(ValueError, match="resize mode"):
        InceptionExtractor(FIDInceptionV3(), "0" * 64, "nearest")


def test_training_evaluates_and_keeps_the_best_checkpoint(digits_home, tmp_path) -> None:
    from atelier.train import DataConfig, GANTrainConfig, train_model

    cfg = dict(batch_size=32, log_every=10, sample_every=1000, checkpoint_every=1000, eval_every=20, eval_n=100,
               tensorboard=False, progress=False, precision="fp32")
    model_kwargs = {"latent_dim": 16, "g_width": 8, "d_width": 8}
    out = tmp_path / "run"
    result = train_model("dcgan", data=DataConfig(), train=GANTrainConfig(steps=50, **cfg), out=out, model_kwargs=model_kwargs)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [20, 40, 50]  # every 20 steps and at the end
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(min(e["fid"] for e in evals))
    assert best["step"] == min(evals, key=lambda e: e["fid"])["step"] and best["extractor"] == "digits-cnn"
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file() and (out / "eval_curve.png").is_file()
    assert result.evaluations[-1]["best_fid"] == pytest.approx(best["value"])
    # Resuming keeps the best so far: it is only replaced by a better one.
    train_model("dcgan", data=DataConfig(), train=GANTrainConfig(steps=60, **cfg), out=out, model_kwargs=model_kwargs,
                resume=True)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [20, 40, 50, 60]
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(min(e["fid"] for e in evals))
    from atelier.models import load_pretrained

    assert load_pretrained(out / "checkpoints" / "best").config.latent_dim == 16


def test_demo_trains_evaluates_and_writes_its_page(digits_home, tmp_path) -> None:
    from atelier.demo import run_demo

    page = run_demo(tmp_path / "demo", steps=30, vae_steps=20, flow_steps=10, progress=False, style_quick=True)
    html = page.read_text()
    assert "FID" in html and "evaluation/index.html" in html
    metrics = json.loads((tmp_path / "demo" / "evaluation" / "metrics.json").read_text())
    assert metrics["provenance"]["source"].endswith("best") and metrics["fid"] > 0
    assert "negative ELBO" in html and "vae_traversal.png" in html
    for name in ("samples.png", "per_class.png", "loss_curve.png", "evaluation/nearest.png", "gan_class_morph.png",
                 "vae_reconstructions.png", "vae_traversal.png", "vae_interpolation.png", "vae_interpolation.gif",
                 "vae_samples.png", "style_gatys.png", "style_gatys.gif", "style_fast.png", "cyclegan.png",
                 "flow_guidance.png", "flow_edit.png", "flow_inpaint.png"):
        assert (tmp_path / "demo" / name).is_file()
    assert "RANDOM" in html  # offline, the style demos say they ran on the random feature fallback
    assert "network evaluations per image" in html and "sketch" in html
    assert "CycleGAN" in html and "Fast style" in html


def test_a_folder_of_samples_is_sized_by_its_first_readable_image_through_the_guarded_decoder(tmp_path) -> None:
    """An unreadable first file or a decompression bomb no longer decides (or breaks) the evaluation."""
    import numpy as np
    from PIL import Image

    from atelier.data import DataError
    from atelier.metrics.sources import load_generated

    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "000_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (8000, 8000)).save(folder / "001_bomb.png")  # 64 MP declared: refused from the header
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / f"{i + 2:03d}.png")
    with pytest.warns(UserWarning, match="000_broken.png"):
        generated = load_generated(folder, n=None)
    assert generated.images.shape == (3, 1, 20, 20)  # the first readable image's shorter side
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "a.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the 1 images is readable"):
        load_generated(only_bad, n=None)


def test_cli_evaluate_says_on_the_console_what_it_changed(digits_home, digits, tmp_path, capsys) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    rgb = digits["train"].images[:30].expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
    for i, image in enumerate(rgb):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(folder / "999_odd.png")
    out = tmp_path / "eval"
    assert main(["evaluate", str(folder), "--data", "digits", "--metrics", "fid", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (f"note: {folder}: 1 of the 31 images is not 28x28 (e.g. 999_odd.png is 32x40): resized so the shorter "
            "side is 28 and centre-cropped to 28x28 before scoring") in err
    assert ("note: samples are 28x28 RGB, the reference (digits:test) is grey: the reference was converted to RGB "
            "to match them before scoring") in err
    provenance = json.loads((out / "metrics.json").read_text())["provenance"]
    assert provenance["reference_conversion"] == ["channels 1 -> 3", "resized 8x8 -> 28x28"]  # all in the file
    assert provenance["generated_conversion"] == []
    assert "UserWarning" not in err and "ConversionNote" not in err  # said as notes, not Python warnings


def test_cli_evaluate_stops_on_sigterm_and_writes_nothing(digits_home, digits, tmp_path, capsys, monkeypatch) -> None:
    import os
    import signal

    from atelier.metrics.extractors import ClassifierExtractor
    from atelier.signals import Stopped

    np.savez(tmp_path / "gen.npz", images=digits["train"].images[:200].permute(0, 2, 3, 1).numpy())
    forward, calls = ClassifierExtractor._forward, []

    def forward_then_signal(self, images):  # a real SIGTERM during the first batch of features
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, images)

    monkeypatch.setattr(ClassifierExtractor, "_forward", forward_then_signal)
    out = tmp_path / "eval"
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["evaluate", str(tmp_path / "gen.npz"), "--data", "digits", "--n", "200", "--batch-size", "50",
               "--out", str(out), "--quiet"])
    assert rc == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) == before
    assert len(calls) == 1  # stopped before the next batch
    assert "stopped by SIGTERM (extracting digits-cnn features): the evaluation was abandoned and nothing was " \
           "written" in capsys.readouterr().err
    assert not out.exists()
    ev = Evaluator(small_cfg(metrics=("fid",)), resolution=28, progress=False)
    with pytest.raises(Stopped, match="after features"):  # the Python API: between metrics, too
        ev.evaluate(digits["train"].images[:20], should_stop=lambda: len(calls) > 1)
