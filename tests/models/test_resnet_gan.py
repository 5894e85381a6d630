"""The residual GAN (SNGAN/BigGAN networks): shapes, the textbook functions its fused convs compute,
class conditioning (indices and class weights), spectral norm, sizes, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atelier.creative.interpolate import interpolate_classes
from atelier.models import load_pretrained
from atelier.models.gan import GAN
from atelier.models.layers import ConditionalBatchNorm2d, conv3x3_avgpool, upsample_conv3x3
from atelier.models.registry import create_model, model_family
from atelier.models.resnet_gan import ClassAffine, DownBlock, ResNetGAN, ResNetGANConfig, UpBlock

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> ResNetGAN:
    torch.manual_seed(kw.pop("seed", 0))
    return create_model("resnet-gan", **{"g_width": 8, "d_width": 8, "latent_dim": 16, **kw})


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("resolution, channels", [(32, 3), (64, 3), (28, 1), (28, 3), (16, 3)])
def test_shapes_ranges_and_gradients(resolution: int, channels: int, num_classes: int) -> None:
    model = tiny(resolution=resolution, channels=channels, num_classes=num_classes).train()
    z = torch.randn(3, 16)
    labels = torch.tensor([0, 4, 9]) if num_classes else None
    images = model.generator(z, labels)
    assert images.shape == (3, channels, resolution, resolution) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    logits = model.discriminator(images, labels)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())
    samples = model.sample(5)
    assert samples.shape == (5, channels, resolution, resolution)
    assert samples.min() >= -1 and samples.max() <= 1


def test_the_architecture_follows_the_resolution() -> None:
    # 32 px: 4x4 -> 8 -> 16 -> 32 (three up-blocks); D: 32 -> 16 -> 8, then two blocks at 8x8
    m32 = tiny(resolution=32)
    assert len(m32.generator.blocks) == 3 and m32.generator.start == 4
    assert [b.down for b in m32.discriminator.blocks] == [True, True, False, False]
    m64 = tiny(resolution=64, max_width_mult=8)
    assert len(m64.generator.blocks) == 4
    assert m64.config.g_widths() == [64, 64, 32, 16, 8]  # capped at 8x, halving towards the image
    assert m64.config.d_widths() == [8, 16, 32]  # doubling after each downsampling
    m28 = tiny(resolution=28)
    assert m28.generator.start == 7 and len(m28.generator.blocks) == 2


@pytest.mark.parametrize("resolution", [8, 30, 7, 100])
def test_unsupported_resolutions_are_refused(resolution: int) -> None:
    with pytest.raises(ValueError, match="resolution"):
        ResNetGANConfig(resolution=resolution)


def test_it_is_a_gan_with_its_own_family() -> None:
    model = tiny()
    assert isinstance(model, GAN) and model.family == "resnet-gan"
    assert model_family("resnet-gan") == model_family("sngan32") == "resnet-gan"
    assert model.config.loss == "hinge"
    with pytest.raises(ValueError, match="not class-conditional"):
        model.sample(2, labels=1)


# ------------------------------------------------------------------- the textbook functions, computed faster


def test_fused_resampling_convs_equal_the_textbook_ops() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 8, generator=g, dtype=torch.float64)
    w = torch.randn(7, 5, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    up = F.conv2d(F.interpolate(x, scale_factor=2), w, b, padding=1)
    torch.testing.assert_close(upsample_conv3x3(x, w, b), up, rtol=0, atol=1e-12)
    pooled = F.avg_pool2d(F.conv2d(x, w, b, padding=1), 2)
    torch.testing.assert_close(conv3x3_avgpool(x, w, b), pooled, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="3x3"):
        upsample_conv3x3(x, w[..., :2], b)
    with pytest.raises(ValueError, match="even"):
        conv3x3_avgpool(x[..., :5], w, b)


def textbook_up(block: UpBlock, x, affines):
    """SNGAN's generator block as written: BN-ReLU-upsample-conv-BN-ReLU-conv + conv1x1(upsample(x))."""
    up = lambda t: F.interpolate(t, scale_factor=2)  # noqa: E731

    def cbn(norm, t, affine):  # batch norm without an affine step, then the class's gain and bias
        gain, bias = affine
        return norm.bn(t) * gain[:, :, None, None] + bias[:, :, None, None]

    h = block.conv1(up(F.relu(cbn(block.norm1, x, affines[0]))))
    h = block.conv2(F.relu(cbn(block.norm2, h, affines[1])))
    return h + block.shortcut(up(x))


def textbook_down(block: DownBlock, x):
    """SNGAN's discriminator block as written: [ReLU]-conv-ReLU-conv-avgpool + avgpool(conv1x1(x))."""
    h = block.conv2(F.relu(block.conv1(x if block.first else F.relu(x))))
    s = block.shortcut(x) if block.shortcut is not None else x
    return (F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)) if block.down else (h, s)


def test_the_networks_compute_the_textbook_sngan_functions() -> None:
    model = tiny(num_classes=4).double().eval()
    g, d = model.generator, model.discriminator
    z, labels = torch.randn(3, 16, dtype=torch.float64), torch.tensor([0, 3, 1])
    h = g.project(z).view(3, -1, 4, 4)
    # SNGAN's per-layer class embeddings of gains and biases, as columns of one table
    with torch.no_grad():
        g.class_affine.embed.weight.add_(torch.randn_like(g.class_affine.embed.weight) * 0.5)
    rows = g.class_affine.embed.weight[labels].split(g.class_affine.sizes, dim=1)
    for i, block in enumerate(g.blocks):
        h = textbook_up(block, h, ((rows[4 * i], rows[4 * i + 1]), (rows[4 * i + 2], rows[4 * i + 3])))
    expected = torch.tanh(g.to_image(F.relu(g.norm(h))))
    images = g(z, labels)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-10)
    h = images
    for block in d.blocks:
        h = sum(textbook_down(block, h))
    h = F.relu(h).sum(dim=(2, 3))
    expected = d.head(h).flatten() + (d.embed(labels) * h).sum(1)
    torch.testing.assert_close(d(images, labels), expected, rtol=0, atol=1e-9)


def test_channels_last_gives_the_same_images_in_that_format() -> None:
    model = tiny(num_classes=3).eval()
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    expected = model.generator(z, labels)
    model.to(memory_format=torch.channels_last)
    images = model.generator(z, labels)
    assert images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.discriminator(images, labels), model.discriminator(expected, labels),
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------- conditioning


def test_conditional_batch_norm_takes_per_sample_gains_and_biases() -> None:
    x = torch.randn(4, 6, 5, 5)
    plain = F.batch_norm(x, None, None, training=True)
    gain, bias = torch.rand(4, 6), torch.randn(4, 6)
    cbn = ConditionalBatchNorm2d(6).train()
    torch.testing.assert_close(cbn(x, (gain, bias)), plain * gain[:, :, None, None] + bias[:, :, None, None])
    with pytest.raises(ValueError, match="gains and biases"):
        cbn(x)
    assert not any(True for _ in cbn.parameters())  # the affine step comes from the caller
    unconditional = ConditionalBatchNorm2d(6, conditional=False).train()
    torch.testing.assert_close(unconditional(x), plain)  # plain batch norm with a learned affine step
    assert sum(p.numel() for p in unconditional.parameters()) == 12


def test_class_affine_holds_each_norms_class_gains_and_mixes_classes() -> None:
    table = ClassAffine(3, [2, 4])
    start = table(torch.tensor([0, 2]))
    assert [(g.shape, b.shape) for g, b in start] == [((2, 2), (2, 2)), ((2, 4), (2, 4))]
    assert all(torch.equal(g, torch.ones_like(g)) and torch.equal(b, torch.zeros_like(b)) for g, b in start)
    with torch.no_grad():
        table.embed.weight.copy_(torch.arange(3.0)[:, None].expand(3, 12))  # class k: every gain and bias k
    (g1, b1), (g2, b2) = table(torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]))
    for t in (g1, b1, g2, b2):
        torch.testing.assert_close(t, torch.tensor([[0.5], [1.75]]).expand_as(t))


def test_labels_as_class_weights_in_both_networks() -> None:
    model = tiny(num_classes=5).eval()
    with torch.no_grad():  # as after training: the classes' gains and biases differ (at first they are 1 and 0)
        model.generator_ema.class_affine.embed.weight.add_(torch.randn(5, 4 * 3 * 8) * 0.3)
        model.generator.load_state_dict(model.generator_ema.state_dict())
    z, labels = torch.randn(4, 16), torch.tensor([0, 4, 2, 2])
    one_hot = F.one_hot(labels, 5).float()
    images = model.generator(z, labels)
    torch.testing.assert_close(model.generator(z, one_hot), images, rtol=0, atol=0)
    torch.testing.assert_close(model.discriminator(images, one_hot), model.discriminator(images, labels))
    # the projection is linear in the class weights
    mix = torch.full((4, 5), 0.2)
    by_class = torch.stack([model.discriminator(images, torch.full((4,), k)) for k in range(5)])
    torch.testing.assert_close(model.discriminator(images, mix), by_class.mean(0), rtol=1e-4, atol=1e-4)
    # a class morph (the creative tool): its ends are the two classes' images of one latent
    frames = interpolate_classes(model, 1, 3, steps=4, seed=7)
    assert frames.shape == (4, 3, 32, 32)
    ends = model.generate(model.sample_latents(1, generator=torch.Generator().manual_seed(7)).expand(2, -1),
                          torch.tensor([1, 3]))
    torch.testing.assert_close(frames[[0, -1]], ends, rtol=1e-5, atol=1e-5)
    assert (frames[1] - frames[0]).abs().mean() > 0  # the frames in between differ from the ends


def test_a_conditional_model_needs_labels() -> None:
    model = tiny(num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        model.generator(torch.randn(2, 16))
    with pytest.raises(ValueError, match="labels"):
        model.discriminator(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model.sample(2, labels=torch.tensor([0, 3]))
    assert model.default_labels(5).tolist() == [0, 1, 2, 0, 1]


# ------------------------------------------------------------------------------------ spectral norm


def test_every_discriminator_layer_and_no_generator_layer_is_spectrally_normalised() -> None:
    model = tiny(num_classes=10)
    weighted = [m for m in model.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(weighted) == 3 + 3 + 2 + 2 + 1 + 1  # blocks (2 with shortcuts), head, projection embedding
    assert all(hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight") for m in weighted)
    assert not any(hasattr(m, "parametrizations") for m in model.generator.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    model.discriminator.train()
    for _ in range(30):  # power iterations, one per forward pass
        model.discriminator(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    for m in weighted:
        w = m.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05, (m, float(sigma))


# ------------------------------------------------------------------------------------------ sizes


def test_sngan32_has_the_paper_networks_parameter_counts() -> None:
    # SNGAN's CIFAR-10 networks (Miyato et al. 2018, appendix B.4): G 4.28 M, D 1.05 M parameters
    model = create_model("sngan32")
    n_g = sum(p.numel() for p in model.generator.parameters())
    n_d = sum(p.numel() for p in model.discriminator.parameters())
    assert (n_g, n_d) == (4_276_739, 1_053_825)
    assert (model.config.g_width, model.config.d_width, model.config.latent_dim) == (256, 128, 128)
    # the generator's EMA copy has the same parameters and no gradients
    assert sum(p.numel() for p in model.generator_ema.parameters()) == n_g
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    # conditioning: a K x C gain and bias per batch norm in the blocks (6 of them) instead of a learned
    # affine step, and one K x 128 projection
    cond = create_model("sngan32", num_classes=10)
    assert sum(p.numel() for p in cond.generator.parameters()) == n_g - 6 * 2 * 256 + 6 * 2 * 10 * 256
    assert sum(p.numel() for p in cond.discriminator.parameters()) == n_d + 10 * 128


def test_width_scales_the_parameter_count_quadratically() -> None:
    small, large = tiny(g_width=16, d_width=16), tiny(g_width=32, d_width=32)
    ratio = sum(p.numel() for p in large.parameters()) / sum(p.numel() for p in small.parameters())
    assert 3.5 < ratio < 4.1


# -------------------------------------------------------------------------------------- save / load


def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    model = tiny(num_classes=4, resolution=64)
    model.discriminator.train()
    model.discriminator(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))  # move the power-iteration state
    directory = model.save_pretrained(tmp_path / "m")
    for loaded in (load_pretrained(directory), ResNetGAN.from_pretrained(directory)):
        assert type(loaded) is ResNetGAN and loaded.config == model.config
        a = model.sample(4, generator=torch.Generator().manual_seed(3))
        b = loaded.sample(4, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
        images = torch.rand(3, 3, 64, 64) * 2 - 1
        model.discriminator.eval(), loaded.discriminator.eval()
        assert torch.equal(model.discriminator(images, torch.tensor([0, 1, 3])),
                           loaded.discriminator(images, torch.tensor([0, 1, 3])))
    assert math.isfinite(float(loaded.discriminator(images, torch.tensor([0, 1, 2])).detach().sum()))
