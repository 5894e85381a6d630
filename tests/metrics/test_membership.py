"""The membership-inference audit: its statistics on hand-made scores, each attack on models that do and do
not memorise, and reading a run's training and held-out images from its data config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atelier.data import DataError, load_dataset
from atelier.data.base import to_float
from atelier.metrics.membership import (audit_data, choose_attack, discriminator_scores, elbo_scores,
                                        load_audit_data, membership_advantage)
from atelier.models.registry import create_model
from atelier.objectives.vae import elbo_terms

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the statistics -------------------------------------------------------------------------------------
def test_scores_from_one_distribution_give_no_advantage() -> None:
    g = torch.Generator().manual_seed(0)
    r = membership_advantage(torch.randn(1000, generator=g), torch.randn(1000, generator=g), bootstrap=100)
    assert abs(r.advantage) < 0.06 and abs(r.auc - 0.5) < 0.04
    assert r.advantage_ci[0] <= 0.0 <= r.advantage_ci[1] and r.auc_ci[0] <= 0.5 <= r.auc_ci[1]
    assert not r.leaks
    # the in-sample maximum is the Kolmogorov-Smirnov statistic: positive even here, which is why it is not the verdict
    assert 0.0 < r.advantage_in_sample < 0.1
    assert r.tpr_at_low_fpr < 0.05


def test_the_same_scores_on_both_sides_give_exactly_chance() -> None:
    scores = torch.arange(50.0)
    r = membership_advantage(scores, scores.flip(0), bootstrap=50)
    assert r.auc == 0.5 and r.advantage_in_sample == 0.0 and not r.leaks
    # cross-fitted, the halves differ by chance: noise about 0, inside its interval
    assert r.advantage_ci[0] <= 0.0 <= r.advantage_ci[1] and abs(r.advantage) < 0.3


def test_perfectly_separated_scores_give_an_advantage_of_one() -> None:
    r = membership_advantage(torch.arange(20.0) + 100, torch.arange(20.0), bootstrap=100)
    assert r.auc == 1.0 and r.advantage == 1.0 and r.tpr_at_low_fpr == 1.0
    assert r.advantage_ci == (1.0, 1.0) and r.leaks
    # reversed (members score lower): no advantage for an attack that calls high scores members
    flipped = membership_advantage(torch.arange(20.0), torch.arange(20.0) + 100, bootstrap=100)
    assert flipped.auc == 0.0 and flipped.advantage <= 0.0 and not flipped.leaks


def test_large_scores_are_ranked_not_squashed() -> None:
    # ELBOs in thousands of nats (a 32 px RGB image): torchmetrics would squash them with a sigmoid to 0, all tied
    members, nonmembers = -1000.0 - torch.arange(30.0), -2000.0 - torch.arange(30.0)
    assert membership_advantage(members, nonmembers, bootstrap=0).auc == 1.0


def test_a_shift_is_caught_with_an_interval_above_zero() -> None:
    g = torch.Generator().manual_seed(1)
    r = membership_advantage(torch.randn(400, generator=g) + 1.0, torch.randn(400, generator=g), bootstrap=200)
    assert 0.25 < r.advantage < 0.5 and r.advantage_ci[0] > 0.15 and 0.7 < r.auc < 0.85 and r.leaks
    assert r.tpr_at_low_fpr_ci[0] <= r.tpr_at_low_fpr <= r.tpr_at_low_fpr_ci[1]
    assert membership_advantage(r.member_scores, r.nonmember_scores, bootstrap=200).advantage == r.advantage  # seeded


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        membership_advantage(torch.tensor([1.0, float("nan")]), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        membership_advantage(torch.ones(1), torch.zeros(3))
    with pytest.raises(ValueError, match="bootstrap"):
        membership_advantage(torch.ones(3), torch.zeros(3), bootstrap=-1)


# -- the attacks on models that memorise, and on data they never saw --------------------------------------
@pytest.fixture(scope="module")
def digits8() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(32 training images, their labels, 64 held-out images, their labels): digits at 8x8."""
    train, test = load_dataset("digits", resolution=8, split="train"), load_dataset("digits", resolution=8, split="test")
    return train.images[:32], train.labels[:32], test.images[:64], test.labels[:64]


@pytest.fixture(scope="module")
def overfit_vae(digits8):
    """A small VAE trained 200 full-batch steps on the 32 images alone (a second on one core): it memorises."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = create_model("vae", resolution=8, width=16, hidden=128, latent_dim=8)
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    x = to_float(digits8[0])
    for _ in range(200):
        loss = elbo_terms(vae, x)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.update_ema(0.0)  # the averaged networks the audit scores with are the trained ones
    return vae.eval()


def test_a_vae_that_memorised_its_training_images_is_caught(overfit_vae, digits8) -> None:
    members, _, heldout, _ = digits8
    report = audit_data(overfit_vae, members, heldout[:32], n=32, n_samples=100, bootstrap=200)
    ms = report.membership
    assert ms.attack == "elbo" and "ELBO" in ms.how
    assert ms.advantage_ci[0] > 0.05 and ms.auc > 0.75 and report.leaks
    assert ms.member_scores.mean() > ms.nonmember_scores.mean()  # training images get the higher ELBO
    assert report.verdict.startswith("WARNING") and "gives away its training images" in report.verdict
    # two halves of data it never saw, scored as "members" and "non-members": nothing to find
    null = audit_data(overfit_vae, heldout[:32], heldout[32:], n=32, n_samples=100, bootstrap=200)
    assert null.membership.advantage_ci[0] <= 0.0 <= null.membership.advantage_ci[1] and not null.leaks
    assert "no evidence" in null.verdict


def test_elbo_scores_are_reproducible_and_averaged_over_draws(overfit_vae, digits8) -> None:
    x = digits8[0][:8]
    one = elbo_scores(overfit_vae, x, samples=1, seed=3)
    assert torch.equal(one, elbo_scores(overfit_vae, x, samples=1, seed=3))
    many = [elbo_scores(overfit_vae, x, samples=16, seed=s) for s in (1, 2)]
    few = [elbo_scores(overfit_vae, x, samples=1, seed=s) for s in (1, 2)]
    assert (many[0] - many[1]).abs().mean() < (few[0] - few[1]).abs().mean()  # more draws, less noise


class _NearestNeighbourDiscriminator(nn.Module):
    """A discriminator that has memorised its training set outright: the logit is minus the distance to it."""

    def __init__(self, train: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("memory", to_float(train).flatten(1))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return -self.scale * torch.cdist(images.flatten(1), self.memory).min(1).values


def test_a_gan_whose_discriminator_memorised_is_caught(digits8) -> None:
    members, _, heldout, _ = digits8
    torch.manual_seed(0)
    gan = create_model("dcgan", resolution=8, g_width=4, d_width=4, latent_dim=4)
    assert choose_attack(gan)[0] == "discriminator"
    honest = audit_data(gan, members, heldout[:32], n=32, n_samples=50, bootstrap=100)  # untrained: knows nothing
    assert not honest.leaks and honest.membership.attack == "discriminator"
    gan.discriminator = _NearestNeighbourDiscriminator(members)
    caught = audit_data(gan, members, heldout[:32], n=32, n_samples=50, bootstrap=100)
    assert caught.membership.auc == 1.0 and caught.membership.advantage_ci[0] > 0.8 and caught.leaks
    assert not caught.copies  # its generator is untrained: it copies nothing


def test_a_conditional_model_needs_labels_for_its_own_attack(digits8) -> None:
    members, labels, heldout, heldout_labels = digits8
    torch.manual_seed(0)
    gan = create_model("dcgan", resolution=8, g_width=4, d_width=4, latent_dim=4, num_classes=10)
    scores = discriminator_scores(gan, members, labels)
    assert scores.shape == (32,) and not torch.equal(scores, discriminator_scores(gan, members, (labels + 1) % 10))
    report = audit_data(gan, members, heldout, member_labels=labels, nonmember_labels=heldout_labels, n=32,
                        n_samples=20, bootstrap=20)
    assert report.membership.attack == "discriminator"
    unlabelled = audit_data(gan, members, heldout, n=32, n_samples=20, bootstrap=20)
    assert unlabelled.membership.attack == "distance" and "no labels" in unlabelled.membership.how
    with pytest.raises(ValueError, match="labels"):
        audit_data(gan, members, heldout, attack="discriminator", n_samples=20)


class _Copier:
    """A "model" that samples by handing back its training images: the worst memoriser there is."""

    family, tasks, conditional = "copier", ("sample",), False

    def __init__(self, train: torch.Tensor) -> None:
        self.train = train
        self.config = type("Config", (), {"resolution": train.shape[-1], "channels": train.shape[1], "num_classes": 0})

    def sample(self, n, *, labels=None, generator=None, truncation=None) -> torch.Tensor:
        return to_float(self.train[torch.randint(len(self.train), (n,), generator=generator)])


def test_a_generator_that_copies_is_caught_by_distance_and_near_copies(digits8) -> None:
    members, _, heldout, _ = digits8
    copier = _Copier(members)
    assert choose_attack(copier) == ("distance", "auto: the copier model has neither a discriminator nor a likelihood")
    report = audit_data(copier, members, heldout, n=32, n_samples=200, bootstrap=100)
    assert report.membership.attack == "distance" and "calibrated by the nearest of 32" in report.membership.how
    assert report.near_copy_fraction == 1.0 and report.copies and report.leaks
    assert "near-copies of training images" in report.verdict
    with pytest.raises(ValueError, match="discriminator"):
        audit_data(copier, members, heldout, attack="discriminator")


def test_held_out_copies_of_training_images_are_left_out(overfit_vae, digits8) -> None:
    members, _, heldout, _ = digits8
    mixed = torch.cat([heldout[:30], members[:5]])
    report = audit_data(overfit_vae, members, mixed, n=32, n_samples=20, bootstrap=20)
    assert report.overlap_removed == 5 and report.n_nonmembers_available == 30 and report.membership.n_members == 30
    assert any("byte-identical" in note for note in report.notes)
    with pytest.raises(DataError, match="at least 2"):
        audit_data(overfit_vae, members, members[:10], n_samples=20)


def test_images_must_match_the_model(overfit_vae, digits8) -> None:
    with pytest.raises(ValueError, match="resolution"):
        audit_data(overfit_vae, torch.zeros(4, 1, 16, 16, dtype=torch.uint8), digits8[2], n_samples=20)
    with pytest.raises(ValueError, match="uint8"):
        audit_data(overfit_vae, to_float(digits8[0]), digits8[2], n_samples=20)


# -- a run's training and held-out images ------------------------------------------------------------------
def test_a_runs_own_data_gives_members_and_disjoint_nonmembers() -> None:
    config = {"data": {"name": "digits", "split": "train", "data_dir": None}, "dataset": {"size": 1438}}
    sets = load_audit_data(config, resolution=8, channels=1)
    assert len(sets.members) == 1438 and len(sets.nonmembers) == 359
    assert any("disjoint by split" in n for n in sets.notes) and sets.sources["members"] == "digits:train"
    changed = load_audit_data({**config, "dataset": {"size": 1000}}, resolution=8, channels=1)
    assert any("data changed" in n for n in changed.notes)
    with pytest.raises(DataError, match="no images of it are known to be unseen"):
        load_audit_data({"data": {"name": "digits", "split": "all"}}, resolution=8, channels=1)
    with pytest.raises(DataError, match="does not record"):
        load_audit_data({}, resolution=8, channels=1)
    declared = load_audit_data({}, resolution=8, channels=1, data="digits")
    assert any("declared" in n for n in declared.notes) and len(declared.members) == 1438


def test_slices_of_one_split_are_disjoint_only_when_their_ranges_are() -> None:
    config = {"data": {"name": "digits", "split": "train[:1000]"}, "dataset": {"size": 1000}}
    sets = load_audit_data(config, resolution=8, channels=1, heldout="train[1000:]")
    assert (len(sets.members), len(sets.nonmembers)) == (1000, 438) and not any("changed" in n for n in sets.notes)
    for overlapping in ("train[999:]", "train", "all[:10]"):
        with pytest.raises(DataError, match="may share images"):
            load_audit_data(config, resolution=8, channels=1, heldout=overlapping)
    assert len(load_audit_data(config, resolution=8, channels=1, heldout="test[:100]").nonmembers) == 100


def test_a_fine_tuned_runs_pretraining_images_are_never_nonmembers(tmp_path, overfit_vae, digits8) -> None:
    import json

    source = overfit_vae.save_pretrained(tmp_path / "pretrained")
    saved = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**saved, "data": {"name": "digits", "split": "test[:50]"}}))
    config = {"data": {"name": "digits", "split": "train[:32]"}, "init_from": {"source": str(source)}}
    sets = load_audit_data(config, resolution=8, channels=1)
    assert sets.also_seen.shape[0] == 50 and any("started from the weights" in n for n in sets.notes)
    report = audit_data(overfit_vae, sets.members.images, sets.nonmembers.images, also_seen=sets.also_seen, n=32,
                        n_samples=20, bootstrap=20)
    assert report.overlap_removed == 50 and report.n_nonmembers_available == 359 - 50
    moved = load_audit_data({**config, "init_from": {"source": str(tmp_path / "gone")}}, resolution=8, channels=1)
    assert moved.also_seen is None and any("could not be read" in n for n in moved.notes)
