"""Rating statistics: Bradley-Terry strengths, the bootstrapped leaderboard, and "real or generated?" tallies.

The statistical tests simulate raters with known strengths: the Bradley-Terry model
``P(i preferred to j) = e^s_i / (e^s_i + e^s_j)``, with Davidson's ties where ties are wanted
(``P(tie) = nu sqrt(e^s_i e^s_j) / (e^s_i + e^s_j + nu sqrt(e^s_i e^s_j))``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from atelier.metrics.ratings import (
    HypeScore,
    JudgedReal,
    LeaderboardRow,
    RealFraction,
    bradley_terry,
    leaderboard,
    real_fraction,
    wilson_interval,
)

TRUE = np.linspace(-1.5, 1.5, 6)  # true log-strengths of six models
NAMES = [f"model{k}" for k in range(len(TRUE))]


def simulate(strengths: np.ndarray, n_votes: int, rng: np.random.Generator,
             nu: float = 0.0) -> list[tuple[str, str, str]]:
    """``n_votes`` comparisons of uniformly drawn pairs (random sides); Davidson ties with ``nu > 0``."""
    n = len(strengths)
    left = rng.integers(0, n, n_votes)
    right = (left + rng.integers(1, n, n_votes)) % n  # never the same model
    p_left, p_right = np.exp(strengths[left]), np.exp(strengths[right])
    p_tie = nu * np.sqrt(p_left * p_right)
    u = rng.random(n_votes) * (p_left + p_right + p_tie)
    outcome = np.where(u < p_left, "left", np.where(u < p_left + p_right, "right", "tie"))
    return [(NAMES[a], NAMES[b], str(o)) for a, b, o in zip(left, right, outcome)]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (no tied values): the Pearson correlation of the ranks."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def bisect(f, low: float, high: float) -> float:
    """The root of an increasing ``f`` in [low, high]."""
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) < 0 else (low, mid)
    return (low + high) / 2


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- bradley_terry -------------------------------------------------------------------------------------


def test_bt_hand_worked_three_of_four_without_prior_is_log_3():
    # Two models, A preferred 3 times of 4. The maximum-likelihood P(A over B) is the observed
    # 3/4, so the log-odds s_A - s_B = log(3/4 / (1/4)) = log 3; centred: +-log(3)/2.
    votes = [("A", "B", "left")] * 3 + [("B", "A", "left")]
    scores = bradley_terry(votes, prior=0)
    assert scores["A"] - scores["B"] == pytest.approx(math.log(3), abs=1e-9)
    assert scores["A"] + scores["B"] == pytest.approx(0, abs=1e-12)


def test_bt_hand_worked_three_of_four_with_prior_is_pulled_in():
    # With prior=1 each model also ties once with a reference R of log-strength 0 (half a win and
    # half a loss). The score equations (wins = expected wins) are
    #   A: 3 + 1/2 = 4 sig(a - b) + sig(a)        B: 1 + 1/2 = 4 sig(b - a) + sig(b).
    # Their sum gives sig(a) + sig(b) = 1, so b = -a, and a solves 3.5 = 4 sig(2a) + sig(a).
    votes = [("A", "B", "left")] * 3 + [("A", "B", "right")]
    a = bisect(lambda a: 4 * sigmoid(2 * a) + sigmoid(a) - 3.5, 0.0, 5.0)
    scores = bradley_terry(votes)  # prior=1 is the default
    assert scores["A"] == pytest.approx(a, abs=1e-9) and scores["B"] == pytest.approx(-a, abs=1e-9)
    assert 0.8 * math.log(3) < 2 * a < math.log(3)  # ~0.949 against log 3 ~ 1.099: a mild pull toward 0


def test_bt_ties_count_half_or_are_dropped():
    # One win and one tie: 1.5 wins of 2 for A, the same odds as 3 of 4 -> log 3 without the prior.
    votes = [("A", "B", "left"), ("B", "A", "tie")]
    scores = bradley_terry(votes, prior=0)
    assert scores["A"] - scores["B"] == pytest.approx(math.log(3), abs=1e-9)
    dropped = bradley_terry(votes + [("A", "B", "right")] + [("A", "B", "tie")] * 5, ties="drop", prior=0)
    assert dropped["A"] == pytest.approx(0, abs=1e-9)  # one win each once the ties are gone


def test_bt_recovers_ranking_of_simulated_raters_with_ties():
    rng = np.random.default_rng(2024)
    rhos = []
    for _ in range(5):
        scores = bradley_terry(simulate(TRUE, 2000, rng, nu=0.5))
        fitted = np.array([scores[name] for name in NAMES])
        assert fitted.mean() == pytest.approx(0, abs=1e-12)
        rhos.append(spearman(fitted, TRUE))
    assert min(rhos) >= 0.9, rhos


def test_bt_recovers_strengths_without_ties():
    scores = bradley_terry(simulate(TRUE, 20000, np.random.default_rng(7)))
    fitted = np.array([scores[name] for name in NAMES])
    np.testing.assert_allclose(fitted, TRUE - TRUE.mean(), atol=0.1)


def test_bt_edge_cases():
    assert bradley_terry([]) == {}
    assert bradley_terry([("A", "A", "left")]) == {"A": 0.0}  # a single model: self-comparisons say nothing
    assert bradley_terry([("A", "A", "tie")], prior=0) == {"A": 0.0}
    # all wins: finite with the prior, no maximum-likelihood fit without it
    sweep = bradley_terry([("A", "B", "left")] * 10 + [("C", "A", "right")] * 10)
    assert all(math.isfinite(s) for s in sweep.values()) and sweep["A"] > max(sweep["B"], sweep["C"])
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry([("A", "B", "left")] * 10, prior=0)
    # two groups never compared: finite, each group centred on the prior's reference
    votes = [("A", "B", "left")] * 3 + [("A", "B", "right")] + [("C", "D", "left")] * 3 + [("C", "D", "right")]
    apart = bradley_terry(votes)
    assert all(math.isfinite(s) for s in apart.values())
    assert apart["A"] == pytest.approx(apart["C"]) and apart["B"] == pytest.approx(apart["D"])
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry(votes, prior=0)


def test_bt_is_deterministic_and_order_free():
    votes = simulate(TRUE, 500, np.random.default_rng(3), nu=0.3)
    first = bradley_terry(votes)
    assert bradley_terry(votes) == first
    shuffled = [votes[k] for k in np.random.default_rng(4).permutation(len(votes))]
    again = bradley_terry(shuffled)
    assert list(again) == list(first) == sorted(NAMES)
    for name in NAMES:
        assert again[name] == pytest.approx(first[name], abs=1e-9)


@pytest.mark.parametrize("bad", [("A", "B"), ("A", "B", "both good"), ("A", "", "left"), ("A", "B", 1)])
def test_bt_rejects_malformed_comparisons(bad):
    with pytest.raises(ValueError):
        bradley_terry([bad])


def test_bt_rejects_bad_options():
    with pytest.raises(ValueError):
        bradley_terry([("A", "B", "left")], ties="win")
    with pytest.raises(ValueError):
        bradley_terry([("A", "B", "left")], prior=-1)
    with pytest.raises(ValueError):
        leaderboard([("A", "B", "left")], prior=0)


# --- leaderboard ---------------------------------------------------------------------------------------


def test_leaderboard_rows_counts_and_order():
    votes = [("A", "B", "left")] * 3 + [("B", "A", "tie"), ("C", "A", "left"), ("C", "B", "right"),
                                        ("A", "A", "left")]
    rows = leaderboard(votes, n_boot=200)
    assert all(isinstance(r, LeaderboardRow) for r in rows)
    assert [r.rank for r in rows] == [1, 2, 3]
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    by_model = {r.model: r for r in rows}
    assert (by_model["A"].votes, by_model["A"].wins, by_model["A"].losses, by_model["A"].ties) == (5, 3, 1, 1)
    assert (by_model["B"].votes, by_model["B"].wins, by_model["B"].losses, by_model["B"].ties) == (5, 1, 3, 1)
    assert (by_model["C"].votes, by_model["C"].wins, by_model["C"].losses, by_model["C"].ties) == (2, 1, 1, 0)
    scores = bradley_terry(votes)
    for r in rows:
        assert r.score == pytest.approx(scores[r.model], abs=1e-12)
        assert r.low <= r.score <= r.high
    with pytest.raises(AttributeError):
        rows[0].score = 0.0  # frozen


def test_leaderboard_edge_cases():
    assert leaderboard([]) == []
    assert leaderboard([("A", "A", "tie")]) == [LeaderboardRow("A", 0.0, 0.0, 0.0, 0, 0, 0, 0, 1)]
    sweep = leaderboard([("A", "B", "left")] * 20, n_boot=100)
    assert [r.model for r in sweep] == ["A", "B"]
    assert all(math.isfinite(v) for r in sweep for v in (r.score, r.low, r.high))


def test_leaderboard_is_deterministic_for_a_seed():
    votes = simulate(TRUE, 300, np.random.default_rng(5), nu=0.3)
    rows = leaderboard(votes, n_boot=200, seed=1)
    assert leaderboard(votes, n_boot=200, seed=1) == rows
    shuffled = [votes[k] for k in np.random.default_rng(6).permutation(len(votes))]
    assert [(r.model, r.low, r.high) for r in leaderboard(shuffled, n_boot=200, seed=1)] == \
        [(r.model, r.low, r.high) for r in rows]  # the resampling does not see the order of the votes
    other = leaderboard(votes, n_boot=200, seed=2)
    assert [r.low for r in other] != [r.low for r in rows]
    assert [r.score for r in other] == [r.score for r in rows]


def test_leaderboard_is_fast():
    votes = simulate(TRUE, 2000, np.random.default_rng(8), nu=0.5)
    start = time.perf_counter()
    rows = leaderboard(votes, n_boot=1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"{elapsed:.2f} s"
    assert [r.model for r in rows] == NAMES[::-1]


def coverage(n_sets: int, n_votes: int, n_boot: int, seed: int) -> float:
    """How often the bootstrap intervals cover the true centred strengths, over models and data sets.

    Without ties, so the truth is on the scale the fit estimates: the centred true log-strengths.
    """
    rng = np.random.default_rng(seed)
    truth = dict(zip(NAMES, TRUE - TRUE.mean()))
    hits = total = 0
    for k in range(n_sets):
        for row in leaderboard(simulate(TRUE, n_votes, rng), n_boot=n_boot, seed=k):
            hits += row.low <= truth[row.model] <= row.high
            total += 1
    return hits / total


def test_leaderboard_intervals_cover_the_truth():
    rate = coverage(n_sets=150, n_votes=400, n_boot=300, seed=11)
    assert 0.85 <= rate <= 0.99, rate


@pytest.mark.slow
def test_leaderboard_intervals_cover_the_truth_at_length():
    rate = coverage(n_sets=500, n_votes=600, n_boot=1000, seed=12)
    assert 0.90 <= rate <= 0.98, rate


# --- real_fraction -------------------------------------------------------------------------------------


def test_real_fraction_counts_and_wilson_bounds():
    judgements = ([("real", True)] * 8 + [("real", False)] * 2 + [("A", True)] * 3 + [("A", False)] * 7
                  + [("B", np.bool_(True))] * 5 + [("B", False)] * 15)
    result = real_fraction(judgements)
    assert isinstance(result, RealFraction)
    assert list(result.sources) == ["A", "B", "real"]
    real = result.sources["real"]
    assert isinstance(real, JudgedReal)
    assert (real.judged_real, real.n, real.fraction) == (8, 10, 0.8)
    # Wilson at 95% for 8 of 10, z = 1.95996: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71674, half-width
    # z / (1 + z^2/10) * sqrt(0.8 * 0.2 / 10 + z^2/400) = 0.22658 -> [0.4902, 0.9433]
    assert real.low == pytest.approx(0.4902, abs=1e-4) and real.high == pytest.approx(0.9433, abs=1e-4)
    assert (result.sources["A"].judged_real, result.sources["A"].n) == (3, 10)
    assert (result.sources["A"].low, result.sources["A"].high) == wilson_interval(3, 10)
    assert (result.sources["B"].judged_real, result.sources["B"].n) == (5, 20)
    narrow = real_fraction(judgements, confidence=0.5).sources["real"]
    assert real.low < narrow.low < 0.8 < narrow.high < real.high


def test_real_fraction_hype_error_rates():
    judgements = ([("real", True)] * 8 + [("real", False)] * 2 + [("A", True)] * 3 + [("A", False)] * 7
                  + [("B", True)] * 5 + [("B", False)] * 15)
    hype = real_fraction(judgements).hype
    assert set(hype) == {"A", "B"}
    # A: 3 of its images judged real + 2 real images judged fake = 5 errors in 10 + 10 judgements
    a = hype["A"]
    assert isinstance(a, HypeScore)
    assert (a.errors, a.n, a.error_rate) == (5, 20, 0.25)
    assert (a.low, a.high) == wilson_interval(5, 20)
    assert a.balanced_error_rate == pytest.approx((3 / 10 + 2 / 10) / 2)
    # B: 5 + 2 = 7 errors in 20 + 10; balanced weighs the two error rates 5/20 and 2/10 alike
    b = hype["B"]
    assert (b.errors, b.n) == (7, 30) and b.error_rate == pytest.approx(7 / 30)
    assert b.balanced_error_rate == pytest.approx((5 / 20 + 2 / 10) / 2)
    # indistinguishable: everything judged real half the time -> 0.5
    coin = real_fraction([("real", True), ("real", False), ("C", True), ("C", False)]).hype["C"]
    assert coin.error_rate == coin.balanced_error_rate == 0.5


def test_real_fraction_without_real_controls_or_judgements():
    result = real_fraction([("A", True), ("A", False)])
    assert result.hype == {} and result.sources["A"].fraction == 0.5
    assert real_fraction([]) == RealFraction({}, {})


@pytest.mark.parametrize("bad", [("A", "yes"), ("A", 1), ("", True), ("A",)])
def test_real_fraction_rejects_malformed_judgements(bad):
    with pytest.raises(ValueError):
        real_fraction([bad])
