"""The discretised logistic mixture likelihood of 8-bit pixels (Salimans et al. 2017, PixelCNN++).

Pixels live on the [-1, 1] scale: value v in 0..255 sits at x = v / 127.5 - 1, and its bin is
[x - 1/255, x + 1/255] (width 2/255), except the edge bins, which reach to -inf (v = 0) and +inf
(v = 255) so that the 256 probabilities of a channel sum to one. A logistic with mean m and scale s
gives the bin the mass sigmoid((x + 1/255 - m) / s) - sigmoid((x - 1/255 - m) / s).

Unlike PixelCNN++ the decoder is not autoregressive over pixels: given z every pixel is independent.
Within a pixel it keeps PixelCNN++'s linear dependence of each channel on the earlier ones (for RGB:
the green mean moves with the red value, blue with red and green, by tanh-bounded coefficients per
component), so one mixture component describes a colour, not three unrelated grey levels. One
component shared by the channels is picked per pixel: p(x) = sum_k pi_k prod_c p(x_c | x_<c, k).

Numerics: the bin mass is computed in log space as

    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-(a - b)))

(from sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a))), which is exact in float32
in both tails and for bins much narrower than the scale, so the usual fallback to "pdf at the bin
centre times the bin width" when the difference of two CDFs underflows is never needed. Log scales
are clamped to [-7, 7] (as PixelCNN++ clamps from below), which keeps a - b finite and positive.

The decoder's output (B, P, H, W) holds, per component k: a mixture logit, C means, C log scales and
C (C - 1) / 2 channel coefficients; P = K (1 + 2C + C (C - 1) / 2): 3K for grey, 10K for RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HALF_BIN = 1.0 / 255.0  # half an 8-bit bin on the [-1, 1] scale
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0

def coefficient_count(channels: int) -> int:
    """Channel coefficients per component: one per pair (c, j < c)."""
    return channels * (channels - 1) // 2

def mixture_channels(channels: int, components: int) -> int:
    """The decoder's output channels P for C image channels and K components."""
    return components * (1 + 2 * channels + coefficient_count(channels))

def split_params(params: torch.Tensor, channels: int) -> tuple[torch.Tensor, ...]:
    """(B, P, H, W) -> logits (B, K, H, W), means and log scales (B, K, C, H, W), coefficients
    (B, K, C(C-1)/2, H, W) in (-1, 1). K is read from P."""
    per = mixture_channels(channels, 1)
    b, p, h, w = params.shape
    if p % per:
        raise ValueError(f"a logistic mixture over {channels} channels needs a multiple of {per} parameter "
                         f"channels, got {p}")
    k, n_coef = p // per, coefficient_count(channels)
    logits, means, log_scales, coeffs = params.float().split([k, k * channels, k * channels, k * n_coef], dim=1)
    means = means.reshape(b, k, channels, h, w)
    log_scales = log_scales.reshape(b, k, channels, h, w).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    return logits, means, log_scales, torch.tanh(coeffs.reshape(b, k, n_coef, h, w))

def _coupled(means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Means of each channel given the earlier channels' values ``x`` (B, 1, C, H, W) or expected values
    (B, K, C, H, W): mean_c + sum_{j<c} coeff_(c,j) x_j."""
    channels = means.shape[2]
    out, i = [means[:, :, 0]], 0
    for c in range(1, channels):
        m = means[:, :, c]
        for j in range(c):
            m = m + coeffs[:, :, i] * x[:, :, j]
            i += 1
        out.append(m)
    return torch.stack(out, dim=2)

def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log P(the 8-bit bin of x) under a logistic(mean, exp(log_scale)) on the [-1, 1] scale,
    with the edge bins open to -inf (x = -1) and +inf (x = 1). Broadcasts its arguments."""
    inv_s = torch.exp(-log_scale)
    centred = x - mean
    a = inv_s * (centred + HALF_BIN)  # upper edge of the bin, standardised
    b = inv_s * (centred - HALF_BIN)  # lower edge
    lower_tail = F.logsigmoid(a)  # log CDF(upper edge): the bin of 0
    upper_tail = F.logsigmoid(-b)  # log (1 - CDF(lower edge)): the bin of 255
    # log(1 - exp(-(a - b))), a - b = inv_s * 2/255 in [2/255 e^-7, 2/255 e^7] = [7e-6, 8.6] by the clamp: on
    # that range log(-expm1(-d)) is accurate to ~1e-7 nats absolute (no log1p branch needed), and cheap
    inner = lower_tail + upper_tail + torch.log(-torch.expm1(inv_s * (-2 * HALF_BIN)))
    return torch.where(x < -1 + HALF_BIN, lower_tail, torch.where(x > 1 - HALF_BIN, upper_tail, inner))

def logistic_mixture_log_prob(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of each pixel: params (B, P, H, W), x (B, C, H, W) on the [-1, 1] scale -> (B, H, W)."""
    x = x.float()
    logits, means, log_scales, coeffs = split_params(params, x.shape[1])
    xk = x.unsqueeze(1)  # (B, 1, C, H, W)
    per_channel = discretized_logistic_log_prob(xk, _coupled(means, coeffs, xk), log_scales)  # (B, K, C, H, W)
    return torch.logsumexp(per_channel.sum(2) + F.log_softmax(logits, dim=1), dim=1)

def logistic_mixture_mean(params: torch.Tensor, channels: int) -> torch.Tensor:
    """The mixture's mean image (B, C, H, W) in [-1, 1]: sum_k pi_k E[x | k], where under component k the
    channel means chain through the coefficients (E[x_c | k] = m_c + sum_j coeff_(c,j) E[x_j | k]). This is
    the mean of the underlying continuous mixture, clamped to [-1, 1] (the discretised edge bins move it
    slightly); it is what the VAE shows as the decoder's output."""
    logits, means, _, coeffs = split_params(params, channels)
    expected, i = [means[:, :, 0]], 0
    for c in range(1, channels):  # in order: channel c uses the expected values of channels < c
        m = means[:, :, c]
        for j in range(c):
            m = m + coeffs[:, :, i] * expected[j]
            i += 1
        expected.append(m)
    expected = torch.stack(expected, dim=2)  # (B, K, C, H, W)
    weights = torch.softmax(logits, dim=1).unsqueeze(2)  # (B, K, 1, H, W)
    return (weights * expected).sum(1).clamp(-1.0, 1.0)

@torch.no_grad()
def sample_logistic_mixture(params: torch.Tensor, channels: int, *,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of every pixel (B, C, H, W), rounded to the 8-bit grid of the [-1, 1] scale: a component
    per pixel, then each channel in order from its logistic (given the earlier channels' draws)."""
    logits, means, log_scales, coeffs = split_params(params, channels)
    b, k, _, h, w = means.shape

    def uniform(*shape: int) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, dtype=torch.float32).to(params.device)
        return u.clamp(1e-6, 1 - 1e-6)

    gumbel = -torch.log(-torch.log(uniform(b, k, h, w)))
    pick = (logits + gumbel).argmax(1, keepdim=True)  # (B, 1, H, W)

    def chosen(t: torch.Tensor) -> torch.Tensor:  # (B, K, n, H, W) -> (B, 1, n, H, W)
        return t.gather(1, pick.unsqueeze(2).expand(-1, -1, t.shape[2], -1, -1))

    means, log_scales, coeffs = chosen(means), chosen(log_scales), chosen(coeffs)
    x = torch.zeros(b, 1, channels, h, w, device=params.device)
    for c in range(channels):
        m = _coupled(means, coeffs, x)[:, :, c]
        u = uniform(b, 1, h, w)
        value = m + log_scales[:, :, c].exp() * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
        x[:, :, c] = ((value.clamp(-1.0, 1.0) + 1) * 127.5).round() / 127.5 - 1
    return x.squeeze(1)
