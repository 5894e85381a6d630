"""The classic MLP VAE (784-400-20, summed BCE) on MNIST for a wall-clock budget: the same-budget
baseline that our convolutional VAE has to beat.

    python benchmarks/reference_vae.py --data-dir ../shared/datasets/mnist --minutes 10 \\
        [--epochs E] [--seed 0] [--samples-out runs/reference_vae_samples.npz] [--n-samples 10000] [--json]

Why it exists: the VAE issue asks for "in 10 minutes of training, a test negative ELBO below that of
the classic MLP VAE reference (784-400-20, summed BCE) trained for the same time, and prior samples
with a classifier-feature Frechet distance at most half of that reference's". This script is that
reference, modelled on the well-known PyTorch examples VAE (examples/vae/main.py) and kept a
deliberately *textbook eager fp32 implementation*: no compilation, no mixed precision, no fused or
tuned kernels, Adam at lr 1e-3, batch 128, data reshuffled every epoch. Nothing from atelier is used
except the MNIST loader, so improvements to the library cannot leak into the baseline.

Model: fc1 784->400 + ReLU; fc21 / fc22 400->20 (mu / logvar); decoder fc3 20->400 + ReLU, fc4
400->784 (+ sigmoid for the pixel means). Targets are the grey values / 255 in [0, 1] (not
binarized), as in the example. Loss per batch = summed binary cross-entropy over all pixels + KL(q ||
N(0, I)); it is reported divided by the number of images ("per image", in nats).

Training stops when the wall-clock budget (checked before every step) or the epoch count runs out,
whichever comes first. The data are decoded to float tensors before the clock starts. Afterwards,
in eval mode without gradients, on the 10,000 test images:

* ``test_neg_elbo_nats``: the standard single-sample ELBO estimate (one posterior sample z per image,
  from a seeded generator, as in the example's test loop), negated and averaged over the test set;
  ``test_neg_elbo_se`` is its standard error over images; ``test_recon_nats`` and ``test_kl_nats`` are
  the two parts (summed BCE, analytic KL).
* ``test_iw_nll_nats``: the importance-weighted estimate -log mean_k exp(log p(x|z_k) + log p(z_k) -
  log q(z_k|x)) with ``--iw-k`` samples on the first ``--iw-n`` test images.

Caveat on the units: with grey (non-binary) targets, "log p(x|z) = -BCE" is not a normalized density
(the continuous-Bernoulli normalizer is left out, here as in the example), so both numbers are
"bounds" only in that normalizer-free sense. They are comparable between models that use this same
Bernoulli-on-grey-values likelihood, not with likelihoods of other kinds.

``--samples-out`` writes an .npz whose ``images`` are (N, 28, 28, 1) uint8 prior samples: z ~ N(0, I)
(seeded), decoded to the sigmoid means, times 255 and rounded. The quality benchmark scores these
with a classifier-feature Frechet distance.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atelier.data import load_dataset

PIXELS = 28 * 28
LATENT = 20
HIDDEN = 400
LOG_2PI = math.log(2 * math.pi)


class ReferenceVAE(nn.Module):
    """784-400-20 MLP encoder and 20-400-784 MLP decoder, named as in the PyTorch example."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(PIXELS, HIDDEN)
        self.fc21 = nn.Linear(HIDDEN, LATENT)
        self.fc22 = nn.Linear(HIDDEN, LATENT)
        self.fc3 = nn.Linear(LATENT, HIDDEN)
        self.fc4 = nn.Linear(HIDDEN, PIXELS)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The fc4 pre-activation; the pixel means are its sigmoid."""
        return self.fc4(F.relu(self.fc3(z)))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterization trick
        return self.decode_logits(z), mu, logvar


def loss_terms(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image summed BCE (nats) and per-image KL(q(z|x) || N(0, I)) (nats).

    BCE is taken on the logits, not on sigmoid outputs: mathematically the same value as the
    example's ``binary_cross_entropy(sigmoid(fc4(h)), x, reduction="sum")``, but without the log(0)
    clamping issues once the sigmoid saturates.
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)
    return recon, kl


def load_flat(data_dir: str, split: str) -> torch.Tensor:
    images = load_dataset("mnist", data_dir=data_dir, split=split, progress=False).images
    return images.reshape(len(images), PIXELS).float().div_(255)


def train(
    model: ReferenceVAE, data: torch.Tensor, *, minutes: float, epochs: int | None, batch_size: int, lr: float
) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = len(data)
    steps = images_seen = epoch = 0
    last_loss = float("nan")
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    out_of_time = False
    while not out_of_time and (epochs is None or epoch < epochs):
        perm = torch.randperm(n)
        for start in range(0, n, batch_size):  # keeps the short last batch, like a DataLoader
            if time.monotonic() >= deadline:
                out_of_time = True
                break
            x = data[perm[start : start + batch_size]]
            logits, mu, logvar = model(x)
            recon, kl = loss_terms(logits, x, mu, logvar)
            loss = recon.sum() + kl.sum()  # summed over the batch, as in the example
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            images_seen += len(x)
            last_loss = loss.item() / len(x)
        else:
            epoch += 1
    seconds = time.monotonic() - t0
    return {
        "steps": steps,
        "epochs": images_seen / n,
        "train_seconds": seconds,
        "images_per_second": images_seen / seconds if seconds > 0 else float("nan"),
        "last_train_loss_nats": last_loss,
    }


@torch.no_grad()
def evaluate_elbo(model: ReferenceVAE, data: torch.Tensor, *, seed: int, batch_size: int) -> dict:
    """Single-sample negative ELBO per test image, with its mean, standard error and parts."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    recons, kls = [], []
    for start in range(0, len(data), batch_size):
        x = data[start : start + batch_size]
        logits, mu, logvar = model(x, generator=gen)
        recon, kl = loss_terms(logits, x, mu, logvar)
        recons.append(recon)
        kls.append(kl)
    recon, kl = torch.cat(recons).double(), torch.cat(kls).double()
    neg_elbo = recon + kl
    return {
        "test_neg_elbo_nats": neg_elbo.mean().item(),
        "test_neg_elbo_se": (neg_elbo.std() / math.sqrt(len(neg_elbo))).item(),
        "test_recon_nats": recon.mean().item(),
        "test_kl_nats": kl.mean().item(),
    }


@torch.no_grad()
def evaluate_iw_nll(model: ReferenceVAE, data: torch.Tensor, *, k: int, seed: int, batch_size: int) -> float:
    """Mean over images of -log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    per_image = []
    for start in range(0, len(data), batch_size):
        x = data[start : start + batch_size]
        mu, logvar = model.encode(x)
        eps = torch.randn((k, *mu.shape), generator=gen)
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, LATENT)
        logits = model.decode_logits(z)  # (k, B, PIXELS)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz_x = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
        log_w = (log_px_z + log_pz - log_qz_x).double()
        per_image.append(-(torch.logsumexp(log_w, dim=0) - math.log(k)))
    return torch.cat(per_image).mean().item()


@torch.no_grad()
def prior_samples(model: ReferenceVAE, n: int, *, seed: int, batch_size: int = 1000) -> np.ndarray:
    """(n, 28, 28, 1) uint8: sigmoid means of the decoder at z ~ N(0, I), times 255, rounded."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n, batch_size):
        z = torch.randn((min(batch_size, n - start), LATENT), generator=gen)
        means = torch.sigmoid(model.decode_logits(z))
        chunks.append(means.mul(255).round().clamp(0, 255).to(torch.uint8))
    images = torch.cat(chunks) if chunks else torch.empty((0, PIXELS), dtype=torch.uint8)
    return images.reshape(n, 28, 28, 1).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    p.add_argument("--epochs", type=int, default=None, help="also stop after this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--iw-k", type=int, default=100, help="importance samples per image")
    p.add_argument("--iw-n", type=int, default=1000, help="test images for the importance-weighted NLL")
    p.add_argument("--samples-out", default=None, help="write prior samples to this .npz")
    p.add_argument("--n-samples", type=int, default=10000)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    train_x = load_flat(args.data_dir, "train")
    test_x = load_flat(args.data_dir, "test")

    torch.manual_seed(args.seed)
    model = ReferenceVAE()
    stats = train(model, train_x, minutes=args.minutes, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    # Evaluation and sampling use their own seeded generators, independent of how long training ran.
    elbo = evaluate_elbo(model, test_x, seed=args.seed + 1, batch_size=args.eval_batch_size)
    iw_n = min(args.iw_n, len(test_x))
    iw_batch = max(1, min(args.eval_batch_size, 100))  # k * batch * 784 floats per chunk
    iw_nll = evaluate_iw_nll(model, test_x[:iw_n], k=args.iw_k, seed=args.seed + 2, batch_size=iw_batch)

    if args.samples_out:
        images = prior_samples(model, args.n_samples, seed=args.seed + 3)
        buf = io.BytesIO()
        np.savez_compressed(buf, images=images)
        out = Path(args.samples_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.getvalue())

    result = {
        "minutes": args.minutes,
        "steps": stats["steps"],
        "epochs": stats["epochs"],
        "images_per_second": stats["images_per_second"],
        **elbo,
        "test_iw_nll_nats": iw_nll,
        "iw_k": args.iw_k,
        "iw_n": iw_n,
        "train_seconds": stats["train_seconds"],
        "seed": args.seed,
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"reference MLP VAE (784-{HIDDEN}-{LATENT}, summed BCE, Adam {args.lr:g}, batch {args.batch_size}, "
          f"fp32 eager, {result['torch_threads']} threads, seed {args.seed})")
    print(f"  trained {stats['train_seconds']:.1f} s (budget {args.minutes:g} min): {stats['steps']} steps, "
          f"{stats['epochs']:.2f} epochs, {stats['images_per_second']:.0f} images/s, "
          f"last batch loss {stats['last_train_loss_nats']:.2f} nats/image")
    print(f"  test negative ELBO  {elbo['test_neg_elbo_nats']:.2f} +- {elbo['test_neg_elbo_se']:.2f} nats/image "
          f"(recon {elbo['test_recon_nats']:.2f} + KL {elbo['test_kl_nats']:.2f}; 10,000 images, 1 sample)")
    print(f"  test IW NLL (k={args.iw_k}, first {iw_n} images)  {iw_nll:.2f} nats/image")
    if args.samples_out:
        print(f"  wrote {args.n_samples} prior samples to {args.samples_out}")


if __name__ == "__main__":
    main()
