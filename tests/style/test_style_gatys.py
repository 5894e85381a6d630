"""Style losses on hand-computed cases, colour preservation, and the Gatys optimisation."""

from __future__ import annotations

import pytest
import torch

from atelier.models.vgg import VGGFeatures
from atelier.objectives.style import (
    blend_grams,
    content_loss,
    gram_matrix,
    style_loss,
    total_variation,
)
from atelier.style.color import (
    combine_luminance,
    luminance,
    match_color_histogram,
    rgb_to_yiq,
    yiq_to_rgb,
)
from atelier.style.gatys import GatysConfig, StyleLoss, gatys_transfer, iterations_per_full_pass, resize_longer

# ----------------------------------------------------------------------------------------- losses


def test_gram_matrix_hand_computed():
    # two channels over four positions: a = [1, 2, 0, 1], b = [0, 1, 1, 2]
    f = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 2.0]]]])  # (1, 2, 2, 2)
    g = gram_matrix(f)
    # a.a = 6, a.b = 4, b.b = 6, divided by N = 4 positions
    assert torch.allclose(g, torch.tensor([[[1.5, 1.0], [1.0, 1.5]]]))


def test_gram_matrix_mask_restricts_to_region():
    f = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 2.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # the top row only: a = [1, 2], b = [0, 1]
    g = gram_matrix(f, mask)
    assert torch.allclose(g, torch.tensor([[[2.5, 1.0], [1.0, 0.5]]]))  # (1+4)/2, (0+2)/2, (0+1)/2
    # a larger mask is area-averaged down to the feature size
    big = torch.nn.functional.interpolate(mask, scale_factor=4, mode="nearest")
    assert torch.allclose(gram_matrix(f, big), g)


def test_content_style_tv_losses_hand_computed():
    feats = {"a": torch.ones(1, 1, 2, 2), "b": torch.zeros(1, 2, 1, 1)}
    targets = {"a": torch.zeros(1, 1, 2, 2)}
    assert content_loss(feats, targets, {"a": 3.0}).item() == pytest.approx(3.0)  # 3 * mean(1^2)
    grams = {"b": torch.eye(2)[None]}
    # the Gram of zeros is 0; mean squared difference to the identity is 2 / 4
    assert style_loss(feats, grams, {"b": 2.0}).item() == pytest.approx(1.0)
    x = torch.tensor([[[[0.0, 1.0], [1.0, 3.0]]]])
    # horizontal diffs 1, 2 -> mean 1.5; vertical 1, 2 -> 1.5
    assert total_variation(x).item() == pytest.approx(3.0)
    assert total_variation(x, power=2).item() == pytest.approx(5.0)  # (1 + 4) / 2 twice


def test_blend_grams_is_a_weighted_average():
    g1, g2 = {"l": torch.zeros(1, 2, 2)}, {"l": torch.ones(1, 2, 2)}
    assert torch.allclose(blend_grams([g1, g2], [1, 3])["l"], torch.full((1, 2, 2), 0.75))
    with pytest.raises(ValueError, match="style weights"):
        blend_grams([g1, g2], [1])
    with pytest.raises(ValueError, match="non-negative"):
        blend_grams([g1, g2], [0, 0])


# ------------------------------------------------------------------------------------------ colour


def test_yiq_round_trip_and_luminance():
    x = torch.rand(2, 3, 5, 7)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)
    grey = torch.full((3, 4, 4), 0.3)
    assert torch.allclose(rgb_to_yiq(grey)[1:], torch.zeros(2, 4, 4), atol=1e-6)  # grey has no chrominance
    assert torch.allclose(luminance(grey), grey, atol=1e-6)


def test_combine_luminance_keeps_content_chrominance():
    torch.manual_seed(0)
    content = 0.25 + 0.5 * torch.rand(3, 8, 8)
    stylised = 0.25 + 0.5 * torch.rand(3, 8, 8)
    out = combine_luminance(stylised, content)
    assert torch.allclose(rgb_to_yiq(out)[1:], rgb_to_yiq(content)[1:], atol=1e-5)
    assert torch.allclose(rgb_to_yiq(out)[0], rgb_to_yiq(stylised)[0], atol=1e-5)


def test_histogram_matching_moves_mean_and_covariance():
    torch.manual_seed(0)
    style = 0.3 + 0.1 * torch.randn(3, 32, 32)  # no clipping in play
    style[0] += 0.2
    content = 0.5 + 0.05 * torch.randn(3, 20, 24)
    content[2] -= 0.1
    out = match_color_histogram(style.clamp(0, 1), content.clamp(0, 1))
    mean = lambda t: t.reshape(3, -1).mean(1)  # noqa: E731
    cov = lambda t: torch.cov(t.reshape(3, -1))  # noqa: E731
    assert out.shape == style.shape
    assert torch.allclose(mean(out), mean(content), atol=2e-3)
    assert torch.allclose(cov(out), cov(content), atol=2e-4)


# ------------------------------------------------------------------------------------- optimisation


def _tiny_net() -> VGGFeatures:
    torch.manual_seed(0)
    net = VGGFeatures("vgg19", ["relu1_1", "relu2_1", "relu3_1"], pool="avg")
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def _tiny_cfg(**kw) -> GatysConfig:
    base = dict(size=32, steps=30, scales=1, content_layers={"relu2_1": 1.0},
                style_layers={"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}, precision="fp32")
    base.update(kw)
    return GatysConfig(**base)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    content = torch.rand(3, 24, 40, generator=g) * 0.5 + 0.25  # landscape, not the output size
    yy, xx = torch.meshgrid(torch.linspace(0, 6.3, 50), torch.linspace(0, 6.3, 50), indexing="ij")
    stripes = (torch.sin(3 * xx + yy) * 0.5 + 0.5)
    style = torch.stack([stripes, 1 - stripes, stripes * 0.5])  # a 50x50 coloured texture
    return content, style


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_optimisation_lowers_the_loss(images, optimizer):
    content, style = images
    # texture synthesis (style only, from noise) has a reachable optimum far below the start
    cfg = _tiny_cfg(optimizer=optimizer, steps=40, init="noise", content_weight=0.0)
    result = gatys_transfer(content, style, _tiny_net(), cfg, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 40
    assert losses[-1] < 0.3 * losses[0]
    # monotone enough: the running minimum keeps improving, and late iterations rarely go up
    later = losses[len(losses) // 2 :]
    ups = sum(b > a * 1.05 for a, b in zip(later, later[1:]))
    assert ups <= len(later) // 4
    assert min(losses[20:]) < min(losses[:20])
    # the returned image is the best one seen (L-BFGS) and has the content's aspect ratio
    assert result.image.shape == (3, 19, 32)  # 24x40 -> longer side 32
    assert 0 <= result.image.min() and result.image.max() <= 1


def test_a_permuted_image_at_its_own_size_is_optimised(images):
    # an upload decoded as (H, W, 3) and permuted, already at the output size: L-BFGS flattens its gradient
    content = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(2)).permute(2, 0, 1)
    result = gatys_transfer(content, images[1], _tiny_net(), _tiny_cfg(steps=3), progress=False)
    assert result.image.shape == (3, 32, 32) and len(result.history) == 3


def test_style_transfer_moves_gram_towards_style(images):
    content, style = images
    net = _tiny_net()
    cfg = _tiny_cfg(steps=30)
    result = gatys_transfer(content, style, net, cfg, progress=False)
    objective = StyleLoss(net, resize_longer(content[None], 32), [resize_longer(style[None], 32)], cfg)
    before = objective(resize_longer(content[None], 32))["style"].item()
    after = objective(result.image[None])["style"].item()
    assert after < 0.5 * before


def test_coarse_to_fine_and_cost(images):
    content, style = images
    cfg = _tiny_cfg(size=128, scales=3, steps=3, coarse_steps=5)
    assert cfg.scale_sizes() == [64, 128]  # 32 would be below the minimum level size
    assert iterations_per_full_pass(cfg) == pytest.approx(3 + 5 * 0.25)
    result = gatys_transfer(content, style, _tiny_net(), cfg, progress=False)
    assert [h["size"] for h in result.history] == [64] * 5 + [128] * 3
    assert result.image.shape == (3, 77, 128)


def test_luminance_transfer_keeps_content_chrominance(images):
    content, style = images
    cfg = _tiny_cfg(preserve_colors="luminance", steps=15)
    out = gatys_transfer(content, style, _tiny_net(), cfg, progress=False).image
    ref = resize_longer(content, 32)
    # chrominance (I, Q) equals the content's wherever clipping to [0, 1] did not intervene
    inside = ((out > 0.001) & (out < 0.999)).all(0)
    assert inside.float().mean() > 0.8
    diff = (rgb_to_yiq(out)[1:] - rgb_to_yiq(ref)[1:]).abs()[:, inside]
    assert diff.max() < 1e-4
    # ... while the luma did change
    assert (rgb_to_yiq(out)[0] - rgb_to_yiq(ref)[0]).abs().mean() > 1e-3


def test_mask_keeps_content_outside(images):
    content, style = images
    mask = torch.zeros(24, 40)
    mask[:, 20:] = 1  # style on the right half only
    cfg = _tiny_cfg(steps=15)
    out = gatys_transfer(content, style, _tiny_net(), cfg, mask=mask, progress=False).image
    ref = resize_longer(content, 32)
    assert torch.allclose(out[:, :, :12], ref[:, :, :12], atol=1e-6)  # left, away from the soft edge
    assert (out[:, :, 20:] - ref[:, :, 20:]).abs().mean() > 1e-3


def test_several_styles_and_frames(images):
    content, style = images
    cfg = _tiny_cfg(steps=6, style_blend=[1.0, 2.0], frame_every=2)
    result = gatys_transfer(content, [style, style.flip(-1)], _tiny_net(), cfg, progress=False)
    assert result.frames is not None and result.frames.shape == (3, 3, 19, 32)
    with pytest.raises(ValueError, match="style_blend"):
        gatys_transfer(content, [style], _tiny_net(), cfg, progress=False)


def test_bad_inputs_are_named(images):
    content, style = images
    with pytest.raises(ValueError, match=r"content must have values in \[0, 1\]"):
        gatys_transfer(content * 300, style, _tiny_net(), _tiny_cfg(steps=1), progress=False)
    with pytest.raises(ValueError, match="style image 1 contains NaN"):
        gatys_transfer(content, style * float("nan"), _tiny_net(), _tiny_cfg(steps=1), progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        GatysConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="no layer"):
        VGGFeatures("vgg19", ["relu9_9"])


def test_should_stop_ends_at_an_iteration_with_the_best_image_so_far_at_the_output_size(images):
    content, style = images
    cfg = _tiny_cfg(size=128, scales=3, steps=4, coarse_steps=6)  # levels 64 and 128
    asked = []

    def should_stop() -> bool:  # asked before every iteration; says stop before the fourth
        asked.append(1)
        return len(asked) > 3

    result = gatys_transfer(content, style, _tiny_net(), cfg, progress=False, should_stop=should_stop)
    assert result.stopped and len(asked) == 4
    assert [h["size"] for h in result.history] == [64] * 3  # stopped inside the coarse level
    assert result.image.shape == (3, 77, 128)  # brought to the output size all the same
    assert torch.isfinite(result.image).all() and 0 <= result.image.min() and result.image.max() <= 1
    whole = gatys_transfer(content, style, _tiny_net(), _tiny_cfg(steps=2), progress=False, should_stop=lambda: False)
    assert not whole.stopped and len(whole.history) == 2
