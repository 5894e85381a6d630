"""The textbook convolutional VAE with a Gaussian (MSE) decoder on CIFAR-10 for a wall-clock budget,
scored in bits per dimension: the same-budget baseline for atelier's colour VAE.

    python benchmarks/reference_vae_cifar.py --data folder:/tmp/data/cifar10 --minutes 10 \\
        [--iw-k 100] [--iw-n 1000] [--test-n 10000] [--seed 0] [--threads 2] [--json]

What it is, deliberately: the convolutional VAE of the tutorials, a textbook eager fp32
implementation with nothing from atelier but the data loader and the bits/dim formula.
- Encoder: 3 -> 32 -> 64 -> 128 channels by 4x4 stride-2 convolutions with ReLU (32 -> 4 px), then
  linear layers to the mean and log-variance of a 128-d latent.
- Decoder: the mirror image (linear to 128 x 4 x 4, transposed convolutions 128 -> 64 -> 32 -> 3 with
  ReLU), and a sigmoid for pixel means in [0, 1].
- Loss per batch: summed squared error over pixels + KL(q(z|x) || N(0, I)), i.e. a Gaussian decoder of
  fixed variance (sigma^2 = 1/2 on the [0, 1] scale). Adam at 1e-3, batch 128, data reshuffled every
  epoch, decoded to float tensors in memory before the clock starts.

Scoring, in eval mode without gradients, on the first ``--test-n`` test images:
- The MSE loss leaves the decoder's variance free, so the fair likelihood uses the best single global
  sigma for the test set, fitted post hoc: for the ELBO in closed form (sigma^2 = mean squared error
  per dimension), for the importance-weighted bound by a one-dimensional search over log sigma (its own
  optimum; reported as ``sigma_iw``). Both sigmas use the test images themselves, which favours the
  reference slightly; ``test_neg_elbo_bpd_trained_sigma`` is the ELBO at the variance it was trained with.
- The Gaussian is a density on the [0, 1] scale; it becomes a probability of the 8-bit values by
  multiplying by the bin width 1/255 (``atelier.metrics.likelihood.bits_per_dim`` with bin_width 1/255,
  the same conversion atelier's Gaussian decoder gets with 2/255 on its [-1, 1] scale).
- ``test_iw_nll_bpd``: -log mean_k exp(log p(x|z_k) + log p(z_k) - log q(z_k|x)), k = ``--iw-k``
  posterior samples, on the first ``--iw-n`` test images.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from atelier.data import load_dataset
from atelier.metrics.likelihood import bits_per_dim

LATENT = 128
LOG_2PI = math.log(2 * math.pi)
BIN_01 = 1 / 255  # one 8-bit step on the [0, 1] scale


class ReferenceConvVAE(nn.Module):
    def __init__(self, latent: int = LATENT) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                 nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(), nn.Flatten())  # (B, 3, 32, 32) -> (B, 2048)
        self.fc_mu = nn.Linear(128 * 4 * 4, latent)
        self.fc_logvar = nn.Linear(128 * 4 * 4, latent)
        self.fc_dec = nn.Linear(latent, 128 * 4 * 4)
        self.dec = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                                 nn.ReLU(), nn.ConvTranspose2d(32, 3, 4, 2, 1))  # (B, 128, 4, 4) -> (B, 3, 32, 32)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means in [0, 1]."""
        return torch.sigmoid(self.dec(F.relu(self.fc_dec(z)).view(-1, 128, 4, 4)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
        return self.decode(z), mu, logvar


def load_unit(data: str, split: str, n: int | None = None) -> torch.Tensor:
    images = load_dataset(data, resolution=32, split=split, channels=3, progress=False).images
    images = images[:n] if n else images
    return images.float().div_(255)  # (N, 3, 32, 32) in [0, 1]


def train(model: ReferenceConvVAE, data: torch.Tensor, *, minutes: float, batch_size: int, lr: float) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    steps = seen = 0
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    while time.monotonic() < deadline:
        perm = torch.randperm(len(data))
        for start in range(0, len(data), batch_size):
            if time.monotonic() >= deadline:
                break
            x = data[perm[start : start + batch_size]]
            recon, mu, logvar = model(x)
            sse = F.mse_loss(recon, x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = sse + kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            seen += len(x)
    seconds = time.monotonic() - t0
    return {"steps": steps, "epochs": seen / len(data), "train_seconds": seconds, "images_per_second": seen / seconds}


def gaussian_nll(sse: torch.Tensor, dims: int, sigma: float) -> torch.Tensor:
    """-log N(x; mean, sigma^2 I) of images with summed squared errors ``sse``."""
    return sse / (2 * sigma**2) + dims * (math.log(sigma) + 0.5 * LOG_2PI)


@torch.no_grad()
def evaluate(model: ReferenceConvVAE, test: torch.Tensor, *, iw_k: int, iw_n: int, seed: int,
             batch_size: int = 500) -> dict:
    model.eval()
    dims = test[0].numel()
    g = torch.Generator().manual_seed(seed)
    sse, kl = [], []
    for start in range(0, len(test), batch_size):
        x = test[start : start + batch_size]
        recon, mu, logvar = model(x, generator=g)
        sse.append((recon - x).pow(2).flatten(1).sum(1).double())
        kl.append((-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).double())
    sse_t, kl_t = torch.cat(sse), torch.cat(kl)
    sigma = math.sqrt(sse_t.mean().item() / dims)  # the maximiser of the mean ELBO over one global sigma
    neg_elbo = gaussian_nll(sse_t, dims, sigma) + kl_t
    trained = gaussian_nll(sse_t, dims, math.sqrt(0.5)) + kl_t
    out = {
        "n": len(test), "dims": dims, "sigma_elbo": sigma,
        "test_neg_elbo_nats": neg_elbo.mean().item(),
        "test_neg_elbo_bpd": bits_per_dim(neg_elbo.mean().item(), dims, bin_width=BIN_01),
        "test_neg_elbo_bpd_se": (neg_elbo.std() / math.sqrt(len(neg_elbo))).item() / (dims * math.log(2)),
        "test_kl_nats": kl_t.mean().item(),
        "test_neg_elbo_bpd_trained_sigma": bits_per_dim(trained.mean().item(), dims, bin_width=BIN_01),
    }
    if iw_k > 0:
        out.update(iw_bound(model, test[:iw_n], k=iw_k, seed=seed + 1, sigma0=sigma))
    return out


@torch.no_grad()
def iw_bound(model: ReferenceConvVAE, test: torch.Tensor, *, k: int, seed: int, sigma0: float) -> dict:
    """The k-sample bound at its own best global sigma: the squared errors and log p(z) - log q(z|x) of
    every sample are kept, then log sigma is searched (golden section) for the lowest mean -L_k."""
    g = torch.Generator().manual_seed(seed)
    dims = test[0].numel()
    sse, log_ratio = [], []
    for x in test.split(max(1, 2000 // k)):
        mu, logvar = model.encode(x)
        eps = torch.randn((k, *mu.shape), generator=g)
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, latent)
        recon = model.decode(z.flatten(0, 1)).view(k, *x.shape)
        sse.append((recon - x).pow(2).flatten(2).sum(2).double())  # (k, B)
        log_ratio.append((-0.5 * (z.pow(2)).sum(-1) + 0.5 * (eps.pow(2) + logvar).sum(-1)).double())
    sse_t, ratio_t = torch.cat(sse, 1), torch.cat(log_ratio, 1)

    def neg_bound(log_sigma: float) -> torch.Tensor:
        log_w = -gaussian_nll(sse_t, dims, math.exp(log_sigma)) + ratio_t
        return -(torch.logsumexp(log_w, 0) - math.log(k))  # (B,)

    lo, hi = math.log(sigma0) - 2.0, math.log(sigma0) + 2.0
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if neg_bound(a).mean() < neg_bound(b).mean():
            hi = b
        else:
            lo = a
    nll = neg_bound((lo + hi) / 2)
    return {"sigma_iw": math.exp((lo + hi) / 2), "iw_k": k, "iw_n": len(test),
            "test_iw_nll_nats": nll.mean().item(),
            "test_iw_nll_bpd": bits_per_dim(nll.mean().item(), dims, bin_width=BIN_01),
            "test_iw_nll_bpd_se": (nll.std() / math.sqrt(len(nll))).item() / (dims * math.log(2))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="folder:/tmp/data/cifar10", help="atelier dataset spec with train and test splits")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=LATENT)
    p.add_argument("--iw-k", type=int, default=100, help="importance samples per image (0: skip)")
    p.add_argument("--iw-n", type=int, default=1000, help="test images for the importance-weighted bound")
    p.add_argument("--test-n", type=int, default=10000, help="test images for the ELBO")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train_x = load_unit(args.data, "train")
    test_x = load_unit(args.data, "test", args.test_n)
    torch.manual_seed(args.seed)
    model = ReferenceConvVAE(args.latent_dim)
    stats = train(model, train_x, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr)
    t0 = time.monotonic()
    scores = evaluate(model, test_x, iw_k=args.iw_k, iw_n=min(args.iw_n, len(test_x)), seed=args.seed + 1)
    result = {"model": "reference conv VAE, Gaussian (MSE) decoder, fp32 eager", "minutes": args.minutes, **stats,
              **scores, "eval_seconds": time.monotonic() - t0, "seed": args.seed,
              "torch_threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"reference conv VAE (MSE + KL, latent {args.latent_dim}, Adam {args.lr:g}, batch {args.batch_size}, "
          f"fp32 eager, {result['torch_threads']} threads): {stats['steps']} steps, {stats['epochs']:.2f} epochs")
    print(f"  test -ELBO {scores['test_neg_elbo_bpd']:.3f} bits/dim (global sigma {scores['sigma_elbo']:.4f} fitted "
          f"on the test set; {scores['test_neg_elbo_bpd_trained_sigma']:.3f} at the trained sigma^2 = 1/2)")
    if "test_iw_nll_bpd" in scores:
        print(f"  test IW NLL (k={args.iw_k}, {scores['iw_n']} images) {scores['test_iw_nll_bpd']:.3f} bits/dim")


if __name__ == "__main__":
    main()
