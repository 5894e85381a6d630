"""Inception Score (Salimans et al., 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

High when each sample is classified confidently (sharp p(y|x)) and the classes are used evenly
(flat p(y)); its maximum is the number of classes. With a domain classifier (MNIST, digits) it is
the "Inception-style" score of the MNIST literature; with InceptionV3 logits it is the paper's score.
"""

from __future__ import annotations

import torch


def inception_score(logits: torch.Tensor, *, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the score over ``splits`` consecutive equal parts of the (N, K) ``logits``."""
    if logits.dim() != 2 or logits.shape[0] < splits:
        raise ValueError(f"need (N >= splits={splits}, K) logits, got shape {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits.double(), dim=1)  # (N, K) log p(y|x)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(part, dim=0) - torch.log(torch.tensor(float(part.shape[0]), dtype=torch.float64))
        kl = (part.exp() * (part - log_py)).sum(1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    return float(values.mean()), float(values.std()) if splits > 1 else 0.0
