"""Convolutional variational autoencoder (Kingma & Welling 2014), beta-VAE and conditional VAE.

The encoder maps an image to a diagonal Gaussian posterior q(z|x) = N(mean, exp(logvar)); the
decoder maps a latent back to the parameters of p(x|z):

- ``bernoulli``: per-pixel logits over the [0, 1] intensity (x + 1) / 2, for binary-ish data
  (MNIST). With grey-level targets this is the summed binary cross-entropy of the classic VAE.
- ``gaussian``: per-pixel means on the [-1, 1] scale with one standard deviation sigma, either
  fixed or learned (a single shared log sigma, the "optimal sigma" of Rybkin et al. 2021).
- ``logistic_mixture``: a discretised mixture of ``mixture_components`` logistics per pixel over the
  256 values of 8-bit data (Salimans et al. 2017; pixels independent given z, channels linearly
  dependent within a pixel as in PixelCNN++): a true probability, so its test likelihood reads in
  bits per dimension comparable with the colour-VAE literature (the ``vae-cifar`` preset).

Images shown to users (samples, reconstructions) are the decoder's mean: the sigmoid of the logits,
the Gaussian mean, or the logistic mixture's mean, all in [-1, 1].

The prior is N(0, I), or the VampPrior (Tomczak & Welling 2018): an equal mixture of the encoder's
posteriors for K learned pseudo-inputs, which closes the gap between prior and aggregate posterior
that leaves "holes" where N(0, I) samples decode badly. Beta weights the KL term (Higgins et al. 2017); the conditional VAE (Sohn et al. 2015) gives the
label to both networks (one-hot maps as extra encoder channels, one-hot vector beside z). Built for
any resolution ``start * 2**k`` with start in {4, 7} (28, 32, 64, 128), grey or RGB. The ELBO
itself lives in :mod:`atelier.objectives.vae`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
from torch import nn

from atelier.config import Config, NonNegative, Positive, Width
from atelier.models.latents import label_weights, normal_latents
from atelier.models.layers import start_size
from atelier.models.pretrained import PretrainedMixin
from atelier.models.registry import register_model
from atelier.objectives.logistic_mixture import logistic_mixture_mean, mixture_channels


@dataclass
class VAEConfig(Config):
    resolution: Annotated[int, at.Interval(ge=4, le=4096)] = 28
    channels: Literal[1, 3] = 1
    latent_dim: Width = 32
    width: Width = 32  # channels of the first encoder stage (the last decoder stage); doubled per halving
    max_width_mult: Annotated[int, at.Interval(ge=1, le=1024)] = 8
    hidden: Annotated[int, at.Interval(ge=0, le=2**16)] = 512  # fully connected layer between the conv stack and the latent (0: none)
    num_classes: Annotated[int, at.Interval(ge=0, le=10**6)] = 0  # 0: unconditional
    likelihood: Literal["bernoulli", "gaussian", "logistic_mixture"] = "bernoulli"  # bernoulli | gaussian |
    # logistic_mixture (discretised, on 8-bit pixels: reports bits/dim)
    mixture_components: Annotated[int, at.Interval(ge=1, le=64)] = 5  # logistic_mixture: components per pixel (1: a single logistic)
    learn_sigma: bool = True  # gaussian: learn the shared sigma (else it stays at ``sigma``)
    sigma: Positive = 0.1  # gaussian: initial / fixed standard deviation on the [-1, 1] scale (logistic_mixture: initial one)
    beta: NonNegative = 1.0  # weight of the KL term (beta-VAE when > 1)
    kl_warmup_steps: Annotated[int, at.Interval(ge=0, le=10**9)] = 0  # KL weight ramps linearly from 0 to beta over these training steps
    binarize: bool = False  # bernoulli: train on stochastically binarised pixels (as in the NLL literature)
    prior: Literal["normal", "vamp"] = "normal"  # normal: N(0, I) | vamp: VampPrior, a mixture of
    # posteriors of learned pseudo-inputs
    vamp_components: Annotated[int, at.Interval(ge=1, le=10**5)] = 100  # vamp: number of pseudo-inputs (mixture components)

    def __post_init__(self) -> None:
        super().__post_init__()
        start_size(self.resolution)
        if self.prior == "vamp" and (self.num_classes or self.vamp_components < 1):
            raise ValueError("the VampPrior needs vamp_components >= 1 and an unconditional VAE")
        if self.binarize and self.likelihood != "bernoulli":
            raise ValueError("binarize needs the bernoulli likelihood")

    def output_channels(self) -> int:
        """The decoder's per-pixel parameters: one per channel, or the logistic mixture's."""
        if self.likelihood == "logistic_mixture":
            return mixture_channels(self.channels, self.mixture_components)
        return self.channels

    def widths(self) -> list[int]:
        """Encoder channels per stage, largest feature map first: [w, 2w] at 28 px, [w, 2w, 4w, 8w] at 64."""
        _, n = start_size(self.resolution)
        return [self.width * min(2**i, self.max_width_mult) for i in range(n)]


def _down(c_in: int, c_out: int) -> nn.Sequential:
    """(B, c_in, H, W) -> (B, c_out, H/2, W/2): strided conv, then a 3x3 conv at the new size."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.SiLU())


def _up(c_in: int, c_out: int, last: bool = False) -> nn.Sequential:
    """(B, c_in, H, W) -> (B, c_out, 2H, 2W): a 3x3 conv, then a transposed conv that doubles the size."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_in, 3, 1, 1), nn.SiLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
    return nn.Sequential(*layers) if last else nn.Sequential(*layers, nn.SiLU())


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        start, _ = start_size(cfg.resolution)
        widths = cfg.widths()
        self.num_classes = cfg.num_classes
        c_in = cfg.channels + cfg.num_classes  # one-hot label maps ride along as channels
        # (B, C [+K], R, R) -> (B, widths[-1], start, start)
        self.convs = nn.Sequential(*[_down(a, b) for a, b in zip([c_in] + widths[:-1], widths)])
        flat = widths[-1] * start * start
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), nn.SiLU()) if cfg.hidden else nn.Flatten()
        # -> (B, 2 * latent): mean and log-variance
        self.to_posterior = nn.Linear(cfg.hidden or flat, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes:
            if labels is None:
                raise ValueError("this VAE is class-conditional: pass labels")
            onehot = label_weights(labels, self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        mean, logvar = self.to_posterior(self.fc(self.convs(x))).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite in low precision


def mixture_head(c_in: int, cfg: VAEConfig) -> nn.Conv2d:
    """(B, c_in, R, R) -> the logistic mixture's parameters (B, P, R, R) by a 1x1 convolution, whose biases
    start the components' means spread evenly over [-1, 1] and their scales at ``cfg.sigma`` standard
    deviations, rather than all means at 0 with scale 1 (a blur over the whole range): on CIFAR-10 the
    first 25 steps then reach 7.7 bits/dim instead of 8.6, and the reconstruction's gradient is stronger
    while the KL term would otherwise pull the early posterior onto the prior."""
    head = nn.Conv2d(c_in, cfg.output_channels(), 1)
    k, c = cfg.mixture_components, cfg.channels
    with torch.no_grad():
        head.bias.zero_()
        centres = torch.linspace(-1, 1, k + 2)[1:-1] if k > 1 else torch.zeros(1)
        head.bias[k : k + k * c] = centres.repeat_interleave(c)  # component-major, as split_params reads them
        head.bias[k + k * c : k + 2 * k * c] = math.log(cfg.sigma * math.sqrt(3) / math.pi)  # logistic s = sd sqrt(3)/pi
    return head


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        start, _ = start_size(cfg.resolution)
        widths = cfg.widths()[::-1]  # smallest feature map first
        self.num_classes, self.start, self.top = cfg.num_classes, start, widths[0]
        z_in = cfg.latent_dim + cfg.num_classes
        flat = widths[0] * start * start
        # (B, z_in) -> (B, widths[0], start, start)
        layers: list[nn.Module] = [nn.Linear(z_in, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, flat)] if cfg.hidden \
            else [nn.Linear(z_in, flat)]
        self.fc = nn.Sequential(*layers, nn.SiLU())
        # each stage doubles the size; the last one outputs the likelihood's per-pixel parameter, or, for
        # the logistic mixture's many parameters, features that a 1x1 convolution turns into them
        mixture = cfg.likelihood == "logistic_mixture"
        outs = widths[1:] + [widths[-1] if mixture else cfg.output_channels()]
        stages = [_up(a, b, last=i == len(outs) - 1 and not mixture) for i, (a, b) in enumerate(zip(widths, outs))]
        if mixture:
            stages.append(mixture_head(widths[-1], cfg))
        self.convs = nn.Sequential(*stages)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("this VAE is class-conditional: pass labels")
            z = torch.cat([z, label_weights(labels, self.num_classes).to(z.dtype)], dim=1)
        h = self.fc(z).view(z.shape[0], self.top, self.start, self.start)
        return self.convs(h)


class VAE(PretrainedMixin, nn.Module):
    """Encoder, decoder, (Gaussian likelihood) the log standard deviation of p(x|z), and exponential
    moving averages (EMA) of both networks.

    Training updates the raw networks; sampling, encoding, reconstruction and test likelihoods use the
    averaged ones (as modern VAEs such as NVAE and VDVAE are evaluated), which are smoother than the
    weights of any single Adam step. ``averaged()`` swaps them in for code that calls ``forward``."""

    family = "vae"
    tasks = ("sample", "interpolate", "reconstruct")
    config_class = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        log_sigma = torch.tensor(math.log(config.sigma))
        self.log_sigma = nn.Parameter(log_sigma, requires_grad=config.learn_sigma and config.likelihood == "gaussian")
        if config.prior == "vamp":  # pseudo-inputs, kept in [-1, 1] by a tanh
            shape = (config.vamp_components, config.channels, config.resolution, config.resolution)
            self.pseudo_inputs = nn.Parameter(torch.randn(shape) * 0.1)
        self.encoder_ema = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        self.decoder_ema = copy.deepcopy(self.decoder).requires_grad_(False).eval()
        self._averaged = False

    @contextlib.contextmanager
    def averaged(self):
        """Within the block, ``encoder``/``decoder`` are the EMA networks (nested use is fine)."""
        if self._averaged:
            yield self
            return
        raw = self.encoder, self.decoder
        self.encoder, self.decoder, self._averaged = self.encoder_ema, self.decoder_ema, True
        try:
            yield self
        finally:
            self.encoder, self.decoder, self._averaged = raw[0], raw[1], False

    def update_ema(self, decay: float) -> None:
        from atelier.models.ema import ema_update

        ema_update(self.encoder_ema, self.encoder, decay)
        ema_update(self.decoder_ema, self.decoder, decay)

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] (B, C, R, R) -> posterior mean and log-variance, (B, latent) each."""
        return self.encoder(x, labels)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent) -> the likelihood's per-pixel parameters (B, P, R, R): logits or means
        (P = C), or the logistic mixture's parameters (P = ``config.output_channels()``)."""
        return self.decoder(z, labels)

    def to_image(self, params: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) as an image in [-1, 1]."""
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(params.float()) * 2 - 1
        if self.config.likelihood == "logistic_mixture":
            return logistic_mixture_mean(params, self.config.channels)
        return params.float().clamp(-1.0, 1.0)

    @staticmethod
    def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): differentiable in mean and logvar."""
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device, mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        mean, logvar = self.encode(x, labels)
        z = self.reparameterize(mean, logvar, generator=generator)
        return {"params": self.decode(z, labels), "mean": mean, "logvar": logvar, "z": z}

    # -- the prior -------------------------------------------------------------------------------
    def prior_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """VampPrior: the (K, latent) means and log-variances of the encoder's posteriors of the pseudo-inputs."""
        return self.encoder(torch.tanh(self.pseudo_inputs))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over the last dimension: (..., latent) -> (...)."""
        from atelier.objectives.vae import log_normal

        if self.config.prior == "normal":
            return log_normal(z.float())
        mean, logvar = (t.float() for t in self.prior_components())  # (K, D)
        per_component = log_normal(z.float().unsqueeze(-2), mean, logvar)  # (..., K)
        return torch.logsumexp(per_component, dim=-1) - math.log(mean.shape[0])

    def kl_term(self, mean: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per image: exact for N(0, I); the one-sample estimate
        log q(z|x) - log p(z) at the posterior sample ``z`` for the VampPrior."""
        from atelier.objectives.vae import kl_standard_normal, log_normal

        if self.config.prior == "normal":
            return kl_standard_normal(mean, logvar)
        return log_normal(z.float(), mean.float(), logvar.float()) - self.log_prior(z)

    # -- the generative interface shared with the GAN (atelier.creative relies on it) ----------
    def sample_latents(self, n: int, *, generator: torch.Generator | None = None,
                       truncation: float | None = None) -> torch.Tensor:
        """Prior draws (n, latent) on CPU. VampPrior: a component per draw, then its Gaussian
        (``truncation`` then applies to the standardised noise); uses the averaged encoder."""
        eps = normal_latents(n, self.config.latent_dim, generator=generator, truncation=truncation)
        if self.config.prior == "normal":
            return eps
        which = torch.randint(self.config.vamp_components, (n,), generator=generator)
        with torch.no_grad(), self.averaged():
            mean, logvar = (t.float().cpu() for t in self.prior_components())
        return mean[which] + torch.exp(0.5 * logvar[which]) * eps

    def default_labels(self, n: int) -> torch.Tensor | None:
        return torch.arange(n) % self.config.num_classes if self.conditional else None

    def _check_labels(self, labels, n: int) -> torch.Tensor | None:
        if isinstance(labels, int):
            labels = torch.full((n,), labels, dtype=torch.long)
        if self.conditional:
            labels = self.default_labels(n) if labels is None else labels
            label_weights(labels, self.config.num_classes)  # validates the range
            return labels
        if labels is not None:
            raise ValueError("this VAE is not class-conditional: it takes no labels")
        return None

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, *, use_ema: bool = True,
                 batch_size: int = 256) -> torch.Tensor:
        """Decode latents (N, latent) to images (N, C, R, R) in [-1, 1]: the decoder means, eval mode,
        with the averaged decoder unless ``use_ema=False``."""
        labels = self._check_labels(labels, z.shape[0])
        with self.averaged() if use_ema else contextlib.nullcontext():
            return self._generate(z, labels, batch_size)

    def _generate(self, z: torch.Tensor, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        was_training = self.training
        self.eval()
        device = self.log_sigma.device
        out = []
        for i in range(0, z.shape[0], batch_size):
            lab = labels[i : i + batch_size].to(device) if labels is not None else None
            out.append(self.to_image(self.decode(z[i : i + batch_size].to(device), lab)).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.config.channels, *(2 * [self.config.resolution]))

    def sample(self, n: int, *, labels: torch.Tensor | int | None = None, generator: torch.Generator | None = None,
               truncation: float | None = None, use_ema: bool = True) -> torch.Tensor:
        """``n`` prior samples (decoder means) in [-1, 1]; ``labels`` as for the GAN."""
        z = self.sample_latents(n, generator=generator, truncation=truncation)
        return self.generate(z, self._check_labels(labels, n), use_ema=use_ema)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, use_ema: bool = True,
                      batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, logvar) of uint8 or [-1, 1] images, eval mode, batched, on CPU (averaged
        encoder unless ``use_ema=False``)."""
        if self.conditional and labels is None:
            raise ValueError("this VAE is class-conditional: pass the images' labels to encode them")
        labels = self._check_labels(labels, images.shape[0])
        if use_ema and not self._averaged:
            with self.averaged():
                return self.encode_images(images, labels, batch_size=batch_size)
        was_training = self.training
        self.eval()
        device = self.log_sigma.device
        means, logvars = [], []
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size]
            x = x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()
            lab = labels[i : i + batch_size].to(device) if labels is not None else None
            m, lv = self.encode(x.to(device), lab)
            means.append(m.float().cpu())
            logvars.append(lv.float().cpu())
        self.train(was_training)
        return torch.cat(means), torch.cat(logvars)

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                    use_ema: bool = True) -> torch.Tensor:
        """Decoder means of the posterior means: the usual deterministic reconstruction, in [-1, 1]."""
        mean, _ = self.encode_images(images, labels, use_ema=use_ema)
        return self.generate(mean, labels, use_ema=use_ema)


@register_model("vae")
def vae(**kwargs) -> VAE:
    """A configurable convolutional VAE; keyword arguments are the fields of :class:`VAEConfig`."""
    return VAE(VAEConfig(**kwargs))


@register_model("beta-vae")
def beta_vae(**kwargs) -> VAE:
    """A beta-VAE for disentangling: beta 4, a 10-d latent, KL warm-up over 2,000 steps."""
    settings = dict(beta=4.0, latent_dim=10, kl_warmup_steps=2000)
    settings.update(kwargs)
    return VAE(VAEConfig(**settings))


@register_model("vae-cifar")
def vae_cifar(**kwargs) -> VAE:
    """A colour VAE for 32 px RGB (CIFAR-10) scored in bits/dim: a discretised mixture of 5 logistics per
    pixel, a 128-d latent straight from the conv features (no FC bottleneck), 32-64-128 channels.

    Chosen by 2-minute runs on CIFAR-10 (2 shared cores, one thread, bf16): width 32 with 5 components
    trains at ~200 images/s and reached 6.77 bits/dim, ahead of 10 components (6.90; 170 images/s) and
    width 64 with 10 (7.03; ~60-110 images/s); longer budgets may favour the wider ones."""
    settings = dict(resolution=32, channels=3, likelihood="logistic_mixture", mixture_components=5,
                    latent_dim=128, width=32, hidden=0)
    settings.update(kwargs)
    return VAE(VAEConfig(**settings))
