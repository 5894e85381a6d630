"""Fast (feed-forward) style transfer: the transformation network, training, save/load, resume, stylising files.

Everything runs on tiny networks (width 4, one residual block), a VGG-16 cut after relu2_2 with
seeded random weights, and 32 px synthetic photos, so the file takes seconds on one core.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from atelier.models.transformer_net import InstanceNorm2d, TransformerNet, TransformerNetConfig
from atelier.models.vgg import VGGFeatures
from atelier.models.registry import create_model, list_models
from atelier.data.content import content_files
from atelier.models.pretrained import latest_checkpoint
from atelier.objectives.perceptual import PerceptualLoss
from atelier.style.fast import stylize_paths, stylize_with_model, train_fast_style
from atelier.train.run import resume_configs
from atelier.train.steps.fast_style import FastStyleDataConfig, FastStyleTrainConfig
from atelier.train.trainer import TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_NET = TransformerNetConfig(width=4, n_res_blocks=1)


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field with a few discs: structure for the losses to act on."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2) + c) * 0.4 + 0.5 for c in range(3)], axis=-1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.3)]
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 1, 3)
    return (base * 255).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fast_style")
    rng = np.random.default_rng(0)
    content = root / "content"
    (content / "sub" / "deeper").mkdir(parents=True)
    for i, (folder, h, w) in enumerate([(content, 40, 56), (content, 48, 36), (content / "sub", 33, 47),
                                        (content / "sub", 64, 64), (content / "sub" / "deeper", 37, 53)]):
        Image.fromarray(_photo(rng, h, w)).save(folder / f"photo{i}.png")
    (content / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    stripes = np.zeros((48, 48, 3), np.uint8)
    stripes[:, ::6] = (230, 40, 20)
    stripes[::8, :] = (20, 60, 220)
    style = root / "style.png"
    Image.fromarray(stripes).save(style)
    return {"root": root, "content": content, "style": style}


def _features() -> VGGFeatures:
    torch.manual_seed(123)
    return VGGFeatures("vgg16", ["relu1_2", "relu2_2"])


def _cfg(data: dict[str, Path], **kw) -> dict:
    """The settings of a tiny run: ``train_fast_style(out, **_cfg(data))``."""
    settings = dict(style=[str(data["style"])], content_dir=str(data["content"]), size=32, batch_size=2, steps=10,
                    content_layers={"relu2_2": 1.0}, style_layers={"relu1_2": 1.0, "relu2_2": 1.0},
                    net=TINY_NET, log_every=1, checkpoint_every=5, precision="fp32", progress=False,
                    tensorboard=False)
    settings.update(kw)
    return settings


def _train(data, out: Path, **kw):
    with pytest.warns(UserWarning, match="broken.jpg"):  # the corrupt content file is named, then skipped
        return train_fast_style(out, **_cfg(data, **kw), features=_features())


# ------------------------------------------------------------------------------------------ network


@pytest.mark.parametrize("preset", ["fast", "johnson"])
@pytest.mark.parametrize("hw", [(37, 53), (5, 3), (32, 32)])
def test_any_size_in_gives_the_same_size_out_in_0_1(preset: str, hw: tuple[int, int]) -> None:
    net = create_model("transformer-net", preset=preset).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1
    assert net(torch.rand(1, 1, *hw)).shape == (1, 3, *hw)  # grey input is repeated to RGB


def test_presets_and_registry() -> None:
    assert {"transformer-net", "transformer-net-johnson"} <= set(list_models())
    johnson = create_model("transformer-net-johnson")
    assert johnson.config == TransformerNetConfig.from_preset("johnson")
    assert johnson.config.preset_name() == "johnson" and TransformerNetConfig().preset_name() == "fast"
    convs = [m for m in johnson.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in (convs[0], convs[1], convs[2], convs[-1])] == [
        (3, 32, 9), (32, 64, 3), (64, 128, 3), (32, 3, 9)]
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in johnson.modules()) == 0  # upsample + conv
    assert all(c.padding_mode == "reflect" for c in convs)
    assert create_model("transformer-net", n_res_blocks=2).config.n_res_blocks == 2
    with pytest.raises(ValueError, match="preset"):
        TransformerNetConfig.from_preset("nope")
    with pytest.raises(ValueError, match="odd"):
        TransformerNetConfig(end_kernel=4)


def test_instance_norm_is_present_and_equals_torch_instance_norm() -> None:
    net = TransformerNet(TINY_NET)
    norms = [m for m in net.modules() if isinstance(m, InstanceNorm2d)]
    assert len(norms) == 3 + 2 + 2 and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    ours, ref = InstanceNorm2d(6), nn.InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, 9, 11) * 3 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    # per-sample statistics: an image's output does not depend on the rest of the batch
    with torch.no_grad():
        torch.testing.assert_close(net(x[:1, :3]), net(torch.cat([x[:1, :3], x[1:, :3] * 5]))[:1])


# ----------------------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_writes_the_model_dir(data, tmp_path: Path) -> None:
    result = _train(data, tmp_path / "model", steps=40, checkpoint_every=100, lr=3e-3)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 40 and result.steps == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    out = tmp_path / "model"  # laid out like every family's run
    for name in ("config.json", "samples/latest.png", "loss_curve.png", "history.jsonl"):
        assert (out / name).is_file(), name
    assert (latest_checkpoint(out) / "model.safetensors").is_file()
    assert len((out / "history.jsonl").read_text().splitlines()) == 40
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["family"] == "fast-style" and config["train"]["steps"] == 40
    name, model_cfg, data_cfg, train_cfg = resume_configs(out, {})
    assert name == "transformer-net" and TransformerNetConfig(**model_cfg) == TINY_NET
    assert data_cfg == FastStyleDataConfig(style=[str(data["style"])], content_dir=str(data["content"]), size=32)
    assert train_cfg.lr == 3e-3 and train_cfg.style_layers == {"relu1_2": 1.0, "relu2_2": 1.0}
    with Image.open(out / "samples" / "latest.png") as im:  # 2 rows of 4 crops, enlarged 2x
        assert im.size == (2 * (4 * 34 + 2), 2 * (2 * 34 + 2))


def test_save_load_round_trip_gives_identical_outputs(data, tmp_path: Path) -> None:
    _train(data, tmp_path / "model", steps=3)
    loaded = TransformerNet.from_pretrained(tmp_path / "model")
    assert loaded.config == TINY_NET
    again = TransformerNet.from_pretrained(tmp_path / "model" / "checkpoints")  # the newest checkpoint
    x = torch.rand(2, 3, 29, 31)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), again(x), rtol=0, atol=0)
    loaded.save_pretrained(tmp_path / "copy")
    torch.testing.assert_close(stylize_with_model(tmp_path / "copy", x), stylize_with_model(loaded, x), rtol=0, atol=0)


def test_resume_continues_exactly_where_it_stopped(data, tmp_path: Path) -> None:
    _train(data, tmp_path / "straight", steps=10)
    _train(data, tmp_path / "resumed", steps=5)
    with pytest.raises(ValueError, match="holds a"):
        train_fast_style(tmp_path / "resumed", net=TransformerNetConfig(width=8, n_res_blocks=1), steps=10,
                         resume=True, progress=False, features=_features())
    result = train_fast_style(tmp_path / "resumed", steps=10, resume=True, progress=False, features=_features())
    assert result.steps == 10 and [h["step"] for h in result.history] == list(range(1, 11))
    a = TransformerNet.from_pretrained(tmp_path / "straight").state_dict()
    b = TransformerNet.from_pretrained(tmp_path / "resumed").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical, as for every family
    with pytest.raises(FileExistsError, match="resume=True"):  # never mixes two runs' checkpoints
        train_fast_style(tmp_path / "resumed", **_cfg(data), features=_features())
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_fast_style(tmp_path / "empty", **_cfg(data), resume=True, features=_features())


def test_nan_loss_stops_with_a_clear_error(data, tmp_path: Path) -> None:
    class Poisoned(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _features()

        def forward(self, x):
            out = self.inner(x)
            return {k: v * float("nan") for k, v in out.items()} if x.requires_grad else out

    with pytest.warns(UserWarning, match="broken"), pytest.raises(TrainingDiverged, match="diverged at step 1.*lr"):
        train_fast_style(tmp_path / "nan", **_cfg(data), features=Poisoned())
    assert latest_checkpoint(tmp_path / "nan") is None


def test_content_targets_come_from_a_shallower_cut_of_the_same_weights(data) -> None:
    torch.manual_seed(0)
    full = VGGFeatures("vgg16", ["relu1_2", "relu2_2", "relu3_3"]).requires_grad_(False)
    loss = PerceptualLoss(full, [torch.rand(3, 24, 24)], FastStyleTrainConfig(content_layers={"relu2_2": 1.0},
                                                                             style_layers={"relu3_3": 1.0}))
    assert loss.content_features is not full and loss.content_features.depth < full.depth
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(loss.content_features(x)["relu2_2"], full(x)["relu2_2"])
    same = PerceptualLoss(_features(), [torch.rand(3, 24, 24)], FastStyleTrainConfig(
        content_layers={"relu2_2": 1.0}, style_layers={"relu1_2": 1.0, "relu2_2": 1.0}))
    assert same.content_features is same.features  # nothing to cut: relu2_2 is already the deepest


def test_config_lengths_and_validation(data, tmp_path: Path) -> None:
    from atelier.train.trainer import Trainer

    class Steps:  # what the trainer reads of a sampler to size a run
        steps_per_epoch = 3

    def total(**kw) -> int | None:
        return Trainer.total_steps(type("T", (), {"cfg": FastStyleTrainConfig(**kw), "sampler": Steps()})())

    assert total(epochs=2.0) == 6 and total(steps=7) == 7 and total(minutes=1.0) is None
    assert total() == FastStyleTrainConfig.DEFAULT_STEPS == 2000  # no length given: 2000 steps, not 5 epochs
    assert FastStyleDataConfig(style="a.png").style == ["a.png"]
    with pytest.raises(ValueError, match="style_blend"):
        train_fast_style(tmp_path / "blend", **_cfg(data, style_blend=[1.0, 2.0]), features=_features())
    with pytest.raises(ValueError, match="precision"):
        FastStyleTrainConfig(precision="fp8")
    with pytest.warns(UserWarning, match="bundled with scikit-image"):
        assert len(content_files("")) >= 4  # no folder given: the offline photos
    with pytest.raises(Exception, match="not a folder"):
        train_fast_style(data["root"] / "x", **_cfg(data, content_dir=str(data["root"] / "missing")),
                         features=_features())


# ---------------------------------------------------------------------------------------- stylising


def test_strength_blends_with_the_content() -> None:
    torch.manual_seed(0)
    net = TransformerNet(TINY_NET).eval()
    x = torch.rand(3, 21, 18)
    assert torch.equal(stylize_with_model(net, x, strength=0.0), x)
    full = stylize_with_model(net, x, strength=1.0)
    with torch.no_grad():
        torch.testing.assert_close(full, net(x[None])[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stylize_with_model(net, x, strength=0.25), 0.75 * x + 0.25 * full)
    batch = stylize_with_model(net, torch.stack([x, x.flip(-1)]), batch_size=1)
    assert batch.shape == (2, 3, 21, 18) and torch.equal(batch[0], full)
    with pytest.raises(ValueError, match="strength"):
        stylize_with_model(net, x, strength=1.5)
    from atelier.style import stylize  # the one-call entry point takes a loaded network or a model directory

    assert torch.equal(stylize(x, model=net), full)


def test_stylize_paths_keeps_folders_and_skips_unreadable_files(data, tmp_path: Path) -> None:
    torch.manual_seed(0)
    TransformerNet(TINY_NET).save_pretrained(tmp_path / "model")
    single = data["content"] / "photo0.png"
    with pytest.warns(UserWarning, match="broken.jpg"):
        report = stylize_paths(tmp_path / "model", [data["content"], single], tmp_path / "out", progress=False,
                               batch_size=2)
    out = tmp_path / "out"
    expected = {"photo0.png", "photo1.png", "sub/photo2.png", "sub/photo3.png", "sub/deeper/photo4.png",
                "photo0_2.png"}  # the file given by itself clashes with the folder's photo0.png
    assert {p.relative_to(out).as_posix() for p in report.written} == expected
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.png")} == expected
    assert [p.name for p, _ in report.skipped] == ["broken.jpg"]
    with Image.open(out / "sub" / "deeper" / "photo4.png") as im, Image.open(single) as src:
        assert im.size == (53, 37) and im.mode == "RGB"
        assert Image.open(out / "photo0.png").size == src.size
    # size= resizes the longer side; strength 0 writes the (resized) content itself
    report = stylize_paths(tmp_path / "model", [single], tmp_path / "small", size=28, strength=0.0, progress=False)
    with Image.open(report.written[0]) as im, Image.open(single) as src:
        assert im.size == (28, 20)
        assert np.abs(np.asarray(im, np.int16) - np.asarray(src.resize((28, 20), Image.LANCZOS), np.int16)).max() <= 1
    with pytest.raises(FileNotFoundError, match="no such"):
        stylize_paths(tmp_path / "model", [tmp_path / "nothing.png"], tmp_path / "o", progress=False)
