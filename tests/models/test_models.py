"""DCGAN networks, the model registry, the GAN losses and save_pretrained/from_pretrained."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from atelier.models import GAN, GANConfig, load_pretrained
from atelier.models.layers import InstanceNorm2d, start_size
from atelier.objectives.gan import discriminator_loss, generator_loss
from atelier.models.registry import create_model, list_models, register_model


def tiny(**kw) -> GAN:
    """A small DCGAN with a fixed initialisation."""
    torch.manual_seed(kw.pop("seed", 0))
    return create_model("dcgan", **{"g_width": 8, "d_width": 8, "latent_dim": 16, **kw})


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("d_norm", ["batch", "spectral"])
@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [28, 32, 64, 128])
def test_generator_and_discriminator_shapes(resolution: int, channels: int, num_classes: int, d_norm: str) -> None:
    model = tiny(resolution=resolution, channels=channels, num_classes=num_classes, d_norm=d_norm)
    model.train()
    b = 3
    z = torch.randn(b, 16)
    labels = torch.tensor([0, 4, 9]) if num_classes else None
    images = model.generator(z, labels)
    assert images.shape == (b, channels, resolution, resolution)
    assert images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    logits = model.discriminator(images, labels)
    assert logits.shape == (b,)
    assert torch.isfinite(logits).all()
    # both networks are differentiable end to end
    logits.sum().backward()
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())
    # the EMA copy has the same architecture and sampling goes through it
    samples = model.sample(b)
    assert samples.shape == (b, channels, resolution, resolution)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    # the generator doubles the start map once per stage
    start, n = start_size(resolution)
    assert start * 2**n == resolution
    assert len(model.generator.blocks) == n - 1


def test_generator_output_saturates_within_minus_one_and_one() -> None:
    model = tiny()
    # Huge latents push the pre-tanh activations far out; the output must still stay in [-1, 1].
    out = model.generate(torch.randn(16, 16) * 1e4, use_ema=False)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.abs().max() > 0.99  # the test input really does saturate the output layer


@pytest.mark.parametrize("resolution", [30, 7, 4, 100, 0])
def test_unsupported_resolution_raises(resolution: int) -> None:
    with pytest.raises(ValueError, match="resolution"):
        GANConfig(resolution=resolution)
    with pytest.raises(ValueError, match="resolution"):
        create_model("dcgan", resolution=resolution)


@pytest.mark.parametrize(
    "kwargs", [{"channels": 2}, {"d_norm": "layer"}, {"g_norm": "spectral"}, {"loss": "wasserstein"}]
)
def test_invalid_config_fields_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GANConfig(**kwargs)


# ----------------------------------------------------------------------------------------- registry


def test_registry_lists_models_and_names_the_available_ones_on_error() -> None:
    names = list_models()
    assert "dcgan" in names and "dcgan64" in names
    assert names == sorted(names)
    with pytest.raises(KeyError) as info:
        create_model("no-such-gan")
    message = str(info.value)
    assert "no-such-gan" in message and "dcgan" in message and "dcgan64" in message
    assert isinstance(create_model("DCGAN", g_width=8, d_width=8), GAN)  # names are case-insensitive


def test_registering_a_taken_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("dcgan")(lambda **kw: None)
    assert "dcgan" in list_models()


def test_dcgan64_preset_is_the_classic_dcgan() -> None:
    model = create_model("dcgan64")
    cfg = model.config
    assert (cfg.resolution, cfg.latent_dim, cfg.g_norm, cfg.d_norm, cfg.loss) == (
        64, 100, "batch", "batch", "nonsaturating"
    )
    assert cfg.num_classes == 0
    assert cfg.widths(cfg.g_width) == [512, 256, 128, 64]
    assert cfg.widths(cfg.d_width) == [512, 256, 128, 64]
    # the actual layers: generator 100 -> 512 (4x4) -> 256 -> 128 -> 64 -> C (64x64)
    g_convs = [m for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in g_convs] == [
        (100, 512), (512, 256), (256, 128), (128, 64), (64, 1)
    ]
    d_convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in d_convs] == [
        (1, 64), (64, 128), (128, 256), (256, 512), (512, 1)
    ]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules()) == 3  # none on the first
    assert create_model("dcgan64", channels=3, latent_dim=32).config.latent_dim == 32  # overrides apply


@pytest.mark.parametrize("channels", [3, 1])
def test_dcgan64_parameter_counts_match_the_pytorch_example(channels: int) -> None:
    # The PyTorch examples' DCGAN (nz=100, ngf=ndf=64, nc=3): 3,576,704 and 2,765,568 parameters.
    model = create_model("dcgan64", channels=channels)
    n_g = sum(p.numel() for p in model.generator.parameters())
    n_d = sum(p.numel() for p in model.discriminator.parameters())
    assert abs(n_g - 3_576_704) / 3_576_704 < 1e-3, n_g
    assert abs(n_d - 2_765_568) / 2_765_568 < 1e-3, n_d


# ---------------------------------------------------------------------------------- spectral norm


def test_spectral_norm_constrains_discriminator_weights() -> None:
    model = tiny(resolution=32, d_norm="spectral", num_classes=10)
    disc = model.discriminator.train()
    normed = [m for m in disc.modules() if hasattr(m, "parametrizations")]
    convs = [m for m in normed if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4  # three strided convs and the head
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    images, labels = torch.randn(4, 1, 32, 32), torch.arange(4)
    for _ in range(5):
        disc(images, labels)
    with torch.no_grad():
        for conv in convs:
            raw = conv.parametrizations.weight.original
            raw_sigma = torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2)
            assert abs(float(raw_sigma) - 1.0) > 0.2  # the raw weights are far from unit norm
            w = conv.weight
            sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
            assert float(sigma) == pytest.approx(1.0, abs=0.02)


# ------------------------------------------------------------------------------------ shared layers


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_shared_instance_norm_equals_torch_instance_norm(memory_format: torch.memory_format) -> None:
    """layers.InstanceNorm2d (group norm, one group per channel) is F.instance_norm with a learned scale
    and shift, in values and gradients, and keeps the channels-last format (torch's drops it)."""
    g = torch.Generator().manual_seed(0)
    norm = InstanceNorm2d(6)
    assert isinstance(norm, nn.InstanceNorm2d) and norm.affine and not norm.track_running_stats
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, generator=g))
        norm.bias.copy_(torch.randn(6, generator=g))
    x = (torch.randn(3, 6, 9, 11, generator=g) * 3 + 2).contiguous(memory_format=memory_format)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    w, b = norm.weight.detach().clone().requires_grad_(), norm.bias.detach().clone().requires_grad_()
    ours = norm(x_ours)
    ref = torch.nn.functional.instance_norm(x_ref, weight=w, bias=b, eps=norm.eps)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert ours.is_contiguous(memory_format=memory_format)
    upstream = torch.randn(ours.shape, generator=g)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.weight.grad, w.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(norm.bias.grad, b.grad, atol=1e-4, rtol=1e-5)
    # the state is nn.InstanceNorm2d(affine=True)'s: either loads the other's state dict
    assert list(norm.state_dict()) == ["weight", "bias"]
    torch_norm = nn.InstanceNorm2d(6, affine=True)
    torch_norm.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), torch_norm(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x[0]), torch_norm(x[0]), atol=1e-5, rtol=1e-5)  # unbatched (C, H, W)
    with pytest.raises(ValueError, match="spatial"):
        norm(torch.randn(2, 6, 1, 1))
    with pytest.raises(ValueError, match="channels"):
        norm(torch.randn(2, 5, 4, 4))


def _keys(prefix: str, blocks: dict[str, list[str]]) -> set[str]:
    return {f"{prefix}{block}.{key}" for block, keys in blocks.items() for key in keys}


_CNR = ["0.weight", "1.weight", "1.bias"]  # conv_norm_relu: bias-free conv, instance norm scale and shift
_RES = [f"body.{i}.{key}" for i in (0, 1) for key in _CNR]  # ResidualBlock
_TN_KEYS = (_keys("down.", {str(i): _CNR for i in range(3)}) | _keys("res.", {str(i): _RES for i in range(5)})
            | _keys("up.", {str(i): ["conv.weight", "norm.weight", "norm.bias"] for i in range(2)})
            | {"to_rgb.weight", "to_rgb.bias"})
_CYCLEGAN_G = _keys("net.", {"0": _CNR, "1": _CNR, "2": _CNR, **{str(i): _RES for i in range(3, 7)},
                             "7": ["weight"], "8": ["weight", "bias"], "10": ["weight"], "11": ["weight", "bias"],
                             "13": ["weight", "bias"]})
_CYCLEGAN_D = {"net.0.weight", "net.0.bias", "net.2.weight", "net.3.weight", "net.3.bias", "net.5.weight",
               "net.5.bias"}
#: The state-dict keys that saved models of these presets hold: changes to the shared layers must keep them.
SAVED_KEYS = {
    "transformer-net": _TN_KEYS,
    "transformer-net-johnson": _TN_KEYS,
    "cyclegan": ({f"{net}.{key}" for net in ("g_ab", "g_ba", "g_ab_ema", "g_ba_ema") for key in _CYCLEGAN_G}
                 | {f"{net}.{key}" for net in ("d_a", "d_b") for key in _CYCLEGAN_D}),
}


@pytest.mark.parametrize("name", sorted(SAVED_KEYS))
def test_image_to_image_presets_keep_their_saved_keys_and_share_one_instance_norm(name: str) -> None:
    model = create_model(name)
    keys, expected = set(model.state_dict()), SAVED_KEYS[name]
    assert keys == expected, (sorted(keys - expected), sorted(expected - keys))
    norms = [m for m in model.modules() if isinstance(m, (nn.InstanceNorm2d, nn.GroupNorm, nn.BatchNorm2d))]
    assert norms and all(type(m) is InstanceNorm2d for m in norms)  # the shared one, no copy


# ---------------------------------------------------------------------------------------- sampling


def test_truncation_keeps_every_latent_within_bounds() -> None:
    model = tiny()
    g = torch.Generator().manual_seed(0)
    for t in (0.3, 1.0):
        z = model.sample_latents(2000, generator=g, truncation=t)
        assert z.shape == (2000, 16)
        assert z.abs().max() <= t
        assert z.abs().max() > 0.9 * t  # resampled, not clamped to zero
        assert z.unique().numel() > 0.99 * z.numel()  # not clamped to +-T either
    plain = model.sample_latents(2000, generator=torch.Generator().manual_seed(0))
    assert plain.abs().max() > 1.0
    with pytest.raises(ValueError, match="truncation"):
        model.sample_latents(4, truncation=0.0)
    images = model.sample(5, truncation=0.5, generator=torch.Generator().manual_seed(1))
    assert images.shape == (5, 1, 28, 28)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_sampling_is_reproducible_by_seed(num_classes: int) -> None:
    model = tiny(num_classes=num_classes)
    a = model.sample(6, generator=torch.Generator().manual_seed(7))
    b = model.sample(6, generator=torch.Generator().manual_seed(7))
    c = model.sample(6, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # different latents give different images
    # raw generator and EMA generator are separate networks (identical at initialisation)
    raw = model.sample(6, generator=torch.Generator().manual_seed(7), use_ema=False)
    assert torch.allclose(raw, a)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(0.05)
    raw = model.sample(6, generator=torch.Generator().manual_seed(7), use_ema=False)
    assert not torch.allclose(raw, a)
    assert torch.equal(model.sample(6, generator=torch.Generator().manual_seed(7)), a)


def test_sampling_leaves_training_mode_untouched() -> None:
    model = tiny()
    model.generator.train()
    model.sample(2)
    assert model.generator.training
    model.sample(2, use_ema=False)
    assert model.generator.training


def test_conditional_labels_change_the_samples() -> None:
    model = tiny(num_classes=10)
    with torch.no_grad():  # make the class embedding matter
        model.generator_ema.embed.weight.normal_(0, 1)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    threes = model.sample(4, labels=3, generator=g())
    assert torch.equal(threes, model.sample(4, labels=torch.full((4,), 3), generator=g()))
    assert not torch.allclose(threes, model.sample(4, labels=5, generator=g()))
    assert torch.equal(model.default_labels(12), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]))
    assert torch.equal(
        model.sample(12, generator=g()), model.sample(12, labels=torch.arange(12) % 10, generator=g())
    )


def test_conditional_without_labels_and_unconditional_with_labels_raise() -> None:
    cond, uncond = tiny(num_classes=10), tiny()
    z = torch.randn(2, 16)
    with pytest.raises(ValueError, match="conditional"):
        cond.generator(z)
    with pytest.raises(ValueError, match="conditional"):
        cond.discriminator(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="conditional"):
        cond.generate(z)
    with pytest.raises(ValueError, match="not class-conditional"):
        uncond.sample(2, labels=1)
    with pytest.raises(ValueError, match="not class-conditional"):
        uncond.sample(2, labels=torch.tensor([0, 1]))
    assert uncond.default_labels(3) is None


@pytest.mark.parametrize("labels", [10, -1, torch.tensor([0, 10]), torch.tensor([-1, 3])])
def test_labels_out_of_range_raise(labels) -> None:
    model = tiny(num_classes=10)
    with pytest.raises(ValueError, match="0..9"):
        model.sample(2, labels=labels)


# ------------------------------------------------------------------------------------------ losses


def test_nonsaturating_loss_at_zero_logits() -> None:
    zeros = torch.zeros(5)
    assert float(discriminator_loss(zeros, zeros, "nonsaturating")) == pytest.approx(2 * math.log(2), rel=1e-6)
    assert float(generator_loss(zeros, "nonsaturating")) == pytest.approx(math.log(2), rel=1e-6)


def test_nonsaturating_loss_matches_binary_cross_entropy() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(7) * 3, torch.randn(7) * 3
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(7)) + bce(fake, torch.zeros(7))
    assert torch.allclose(discriminator_loss(real, fake, "nonsaturating"), expected_d, atol=1e-6)
    assert torch.allclose(generator_loss(fake, "nonsaturating"), bce(fake, torch.ones(7)), atol=1e-6)
    # extreme logits stay finite (softplus, not log(sigmoid))
    huge = torch.tensor([200.0, -200.0])
    assert torch.isfinite(discriminator_loss(-huge, huge, "nonsaturating"))


def test_hinge_loss_hand_computed() -> None:
    assert float(discriminator_loss(torch.full((4,), 2.0), torch.full((4,), -2.0), "hinge")) == 0.0
    assert float(discriminator_loss(torch.zeros(4), torch.zeros(4), "hinge")) == pytest.approx(2.0)
    # relu(1 - 0.5) + mean(relu(1 + [-3, 1])) = 0.5 + (0 + 2) / 2
    assert float(discriminator_loss(torch.tensor([0.5, 0.5]), torch.tensor([-3.0, 1.0]), "hinge")) == pytest.approx(1.5)
    fake = torch.tensor([1.0, -2.0, 4.0])
    assert float(generator_loss(fake, "hinge")) == pytest.approx(-float(fake.mean()))


def test_losses_compute_in_float32_and_reject_unknown_kinds() -> None:
    half = torch.zeros(3, dtype=torch.bfloat16)
    assert discriminator_loss(half, half, "hinge").dtype == torch.float32
    assert generator_loss(half, "nonsaturating").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown GAN loss"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), "wgan")
    with pytest.raises(ValueError, match="unknown GAN loss"):
        generator_loss(torch.zeros(2), "wgan")


# --------------------------------------------------------------------------------------- pretrained


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 10, "d_norm": "spectral", "loss": "hinge"}])
def test_save_and_load_pretrained_round_trip(tmp_path: Path, kwargs: dict) -> None:
    model = tiny(**kwargs)
    with torch.no_grad():  # make the EMA differ from the raw generator and from any fresh init
        for p in model.generator_ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.train()
    model.discriminator(torch.randn(4, 1, 28, 28), torch.arange(4) if kwargs else None)  # moves BN / SN buffers
    out = model.save_pretrained(tmp_path / "saved")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    torch.manual_seed(123)  # a different initialisation for the model that gets loaded into
    loaded = GAN.from_pretrained(out)
    assert loaded.config == model.config
    assert not loaded.training
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    a = model.sample(8, generator=torch.Generator().manual_seed(5))
    b = loaded.sample(8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(123)
    fresh = GAN(loaded.config)
    assert not torch.allclose(fresh.sample(8, generator=torch.Generator().manual_seed(5)), a)
    # the family-agnostic loader gives the same model
    assert torch.equal(load_pretrained(out).sample(8, generator=torch.Generator().manual_seed(5)), a)
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["family"] == "gan" and saved["environment"]["torch"] == torch.__version__


def test_from_pretrained_missing_paths_raise_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        GAN.from_pretrained(missing)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as info:
        GAN.from_pretrained(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained(empty)
    assert str(empty) in str(info.value)


def _rewrite_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["model"]["config"].update(changes)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "changes", [{"g_width": 16}, {"num_classes": 10}, {"d_norm": "spectral"}, {"resolution": 32}]
)
def test_from_pretrained_with_mismatched_weights_raises_value_error(tmp_path: Path, changes: dict) -> None:
    out = tiny().save_pretrained(tmp_path / "m")
    _rewrite_config(out, **changes)
    with pytest.raises(ValueError) as info:
        GAN.from_pretrained(out)
    assert "model.safetensors" in str(info.value)


def test_from_pretrained_rejects_another_family(tmp_path: Path) -> None:
    out = tiny().save_pretrained(tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    config["model"]["family"] = "vae"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="vae"):
        GAN.from_pretrained(out)
    with pytest.raises(ValueError, match="VAEConfig field"):  # a GAN's config is no VAE's
        load_pretrained(out)
    config["model"]["family"] = "hypernetwork"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown model family 'hypernetwork'"):
        load_pretrained(out)
