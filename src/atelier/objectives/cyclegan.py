"""CycleGAN objectives (Zhu et al. 2017): least-squares adversarial terms, cycle consistency, identity.

For the generators, with G: A -> B, F: B -> A and the discriminators D_A, D_B::

    adv_ab = (D_B(G(a)) - 1)^2            adv_ba = (D_A(F(b)) - 1)^2
    cycle_a = lambda |F(G(a)) - a|_1      cycle_b = lambda |G(F(b)) - b|_1
    identity_ab = lambda lambda_id |G(b) - b|_1    identity_ba = lambda lambda_id |F(a) - a|_1

(means over pixels and the batch; the identity terms only when both domains have the same channels).
Each discriminator minimises half the least-squares loss, 0.5 [(D(x) - 1)^2 + D(fake)^2], the halving
of the paper's code that slows D relative to G. Every function returns weighted terms that add up to
the ``loss`` entry, so logs show what each term contributes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atelier.objectives.gan import discriminator_loss, generator_loss


def generator_terms(
    *,
    real_a: torch.Tensor,
    real_b: torch.Tensor,
    rec_a: torch.Tensor,
    rec_b: torch.Tensor,
    d_b_of_fake_b: torch.Tensor,
    d_a_of_fake_a: torch.Tensor,
    idt_b: torch.Tensor | None = None,
    idt_a: torch.Tensor | None = None,
    lambda_cycle: float = 10.0,
    lambda_identity: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The generators' loss terms. ``idt_b`` = G(b) and ``idt_a`` = F(a), or None to skip identity."""
    terms = {
        "adv_ab": generator_loss(d_b_of_fake_b, "lsgan"),
        "adv_ba": generator_loss(d_a_of_fake_a, "lsgan"),
        "cycle_a": lambda_cycle * F.l1_loss(rec_a.float(), real_a.float()),
        "cycle_b": lambda_cycle * F.l1_loss(rec_b.float(), real_b.float()),
    }
    if idt_b is not None and idt_a is not None and lambda_identity > 0:
        w = lambda_cycle * lambda_identity
        terms["identity_ab"] = w * F.l1_loss(idt_b.float(), real_b.float())
        terms["identity_ba"] = w * F.l1_loss(idt_a.float(), real_a.float())
    terms["loss"] = torch.stack(list(terms.values())).sum()
    return terms


def discriminator_term(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """One discriminator's loss: half the least-squares loss on a real and a (pooled) fake batch."""
    return 0.5 * discriminator_loss(real_logits, fake_logits, "lsgan")
