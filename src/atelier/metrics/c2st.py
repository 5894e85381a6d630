"""Classifier two-sample test (Lopez-Paz & Oquab, 2017): can a small network tell real from generated?

A two-layer MLP is trained on half of a balanced real/generated set (features from the evaluator's
extractor by default, or any flattened vectors such as pixels) and scored on the other half. Held-out
accuracy near 50% means the classifier cannot separate the two sets; near 100% means they are
obviously different. The p-value is the exact one-sided binomial probability of an accuracy at least
this high if the two sets came from one distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TwoSampleResult:
    accuracy: float  # held-out accuracy of the real-vs-generated classifier
    p_value: float  # one-sided binomial test of accuracy > 0.5
    n_train: int  # samples the classifier was trained on (half real, half generated)
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


def binomial_sf(successes: int, n: int) -> float:
    """P(X >= successes) for X ~ Binomial(n, 1/2), exactly, in log space."""
    if successes <= 0:
        return 1.0
    ks = torch.arange(successes, n + 1, dtype=torch.float64)
    log_terms = (torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(ks + 1)
                 - torch.lgamma(n - ks + 1) - n * torch.log(torch.tensor(2.0, dtype=torch.float64)))
    return float(torch.logsumexp(log_terms, 0).exp().clamp(max=1.0))


def classifier_two_sample_test(real: torch.Tensor, fake: torch.Tensor, *, hidden: int = 256, epochs: int = 20,
                               batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                               seed: int = 0) -> TwoSampleResult:
    """Train on a random half of min(N, M) real and as many generated vectors; test on the rest."""
    real, fake = real.flatten(1).float(), fake.flatten(1).float()
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and generated vectors differ in size: {real.shape[1]} vs {fake.shape[1]}")
    n = min(real.shape[0], fake.shape[0])
    if n < 4:
        raise ValueError(f"the two-sample test needs at least 4 samples per side, got {n}")
    g = torch.Generator().manual_seed(seed)
    real = real[torch.randperm(real.shape[0], generator=g)[:n]]
    fake = fake[torch.randperm(fake.shape[0], generator=g)[:n]]
    half = n // 2
    x_train = torch.cat([real[:half], fake[:half]])
    y_train = torch.cat([torch.ones(half), torch.zeros(half)])
    x_test = torch.cat([real[half:], fake[half:]])
    y_test = torch.cat([torch.ones(n - half), torch.zeros(n - half)])
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)  # standardise with training stats only
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2),
                            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(x_train.shape[0], generator=g)
            for i in range(0, x_train.shape[0], batch_size):
                idx = perm[i : i + batch_size]
                loss = F.binary_cross_entropy_with_logits(net(x_train[idx]).squeeze(1), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            correct = int(((net(x_test).squeeze(1) > 0).float() == y_test).sum())
    return TwoSampleResult(accuracy=correct / x_test.shape[0], p_value=binomial_sf(correct, x_test.shape[0]),
                           n_train=x_train.shape[0], n_test=x_test.shape[0])
