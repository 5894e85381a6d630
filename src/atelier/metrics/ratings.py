"""Human ratings of generated images: the record, its storage, and the statistics built on it.

Two kinds of judgement are stored in one record type, :class:`Rating`:

* absolute: a ``score`` on a declared :class:`RatingScale` ("how realistic is this, 1 to 5?");
* pairwise: a ``choice`` between ``item_id`` and ``other_id`` ("which of the two is more
  realistic?"), the more reliable of the two for close models.

Each rating names the model that made the item (``"real"`` for real images shown as controls), so
the aggregates are per model: :func:`summarize_scores` (mean, spread, bootstrap interval) and
:func:`preference_win_rates` (wins over comparisons with a Wilson interval).

For a ratings service working on plain tuples: :func:`bradley_terry` fits model strengths to
pairwise outcomes (left, right or tie), :func:`leaderboard` ranks the models with bootstrap
intervals, and :func:`real_fraction` tallies a "real or generated?" test (HYPE-infinity).

:class:`RatingStore` keeps ratings in an append-only JSON-lines file, one rating per line: easy to
inspect, to diff and to merge, robust to crashes (at worst the last line is cut short, and it is
skipped), and never unpickled. Ratings are facts about what people said; nothing rewrites them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; single-writer use is still safe
    fcntl = None  # type: ignore[assignment]


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.000+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _nonempty(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class Rating:
    """One answer of one rater to one question about one item (or one pair of items).

    Exactly one of ``score`` (an absolute rating) and ``choice`` (the id of the preferred item of
    the pair ``item_id``/``other_id``) is set. ``model``/``other_model`` say which model or run
    made ``item_id``/``other_id``. ``meta`` holds extra JSON data (e.g. the seconds spent, the page
    version); it is left out of the hash and should be treated as read-only.
    """

    item_id: str  # e.g. "<run>/<seed>/<index>", or the SHA-256 of the image file
    rater_id: str  # anonymous
    question: str  # e.g. "realism", "diversity", "matches_label"
    score: float | None = None
    choice: str | None = None
    other_id: str | None = None
    model: str | None = None
    other_model: str | None = None
    created_at: str = field(default_factory=utc_now)
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("item_id", "rater_id", "question"):
            _nonempty(name, getattr(self, name))
        for name in ("choice", "other_id", "model", "other_model"):
            if getattr(self, name) is not None:
                _nonempty(name, getattr(self, name))
        if (self.score is None) == (self.choice is None):
            raise ValueError(f"a rating has exactly one of score and choice, got score={self.score!r}, "
                             f"choice={self.choice!r}")
        if self.score is not None:
            if isinstance(self.score, bool) or not isinstance(self.score, (int, float)):
                raise ValueError(f"score must be a number, got {self.score!r}")
            if not math.isfinite(self.score):
                raise ValueError(f"score must be finite, got {self.score!r}")
            object.__setattr__(self, "score", float(self.score))
            if self.other_id is not None or self.other_model is not None:
                raise ValueError("other_id and other_model belong to pairwise choices, not to scores")
        else:
            if self.other_id is None:
                raise ValueError("a pairwise choice needs other_id, the other item of the pair")
            if self.other_id == self.item_id:
                raise ValueError(f"an item cannot be compared with itself ({self.item_id!r})")
            if self.choice not in (self.item_id, self.other_id):
                raise ValueError(f"choice {self.choice!r} is neither item_id {self.item_id!r} "
                                 f"nor other_id {self.other_id!r}")
        try:
            when = datetime.fromisoformat(self.created_at)
        except (TypeError, ValueError):
            raise ValueError(f"created_at must be an ISO 8601 timestamp, got {self.created_at!r}") from None
        if when.utcoffset() != timedelta(0):
            raise ValueError(f"created_at must be in UTC (+00:00), got {self.created_at!r}")
        try:  # what is stored must read back equal: a dict with str keys, no tuples, no NaN
            same = isinstance(self.meta, dict) and json.loads(json.dumps(self.meta, allow_nan=False)) == self.meta
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ValueError(f"meta must be plain JSON data (str keys, lists, finite numbers), got {self.meta!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rating:
        if not isinstance(data, dict):
            raise ValueError(f"a rating is a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown rating field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class RatingScale:
    """The scale of an absolute question, e.g. ``RatingScale("realism", 1, 5, ("fake", "real"), integer=True)``."""

    question: str
    low: float
    high: float
    labels: tuple[str, str] | None = None  # what the two ends mean, shown to raters
    integer: bool = False  # a Likert scale takes whole numbers only

    def __post_init__(self) -> None:
        _nonempty("question", self.question)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"{self.question}: need finite low < high, got [{self.low}, {self.high}]")
        if self.labels is not None and len(self.labels) != 2:
            raise ValueError(f"{self.question}: labels are (low end, high end), got {self.labels!r}")

    def validate(self, score: float) -> float:
        """``score`` as a float, or ValueError if it is off the scale."""
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not self.low <= score <= self.high:
            raise ValueError(f"{self.question}: score {score!r} is outside [{self.low:g}, {self.high:g}]")
        if self.integer and score != int(score):
            raise ValueError(f"{self.question}: score {score!r} must be a whole number")
        return float(score)


class RatingStore:
    """An append-only JSON-lines file of ratings.

    ``scales`` declares the absolute questions: when given, ``add`` refuses scores for undeclared
    questions or off their scale, and choices for questions that have a scale. Ratings already in
    the file are read back as they are (a scale changed later does not make old data unreadable).
    """

    def __init__(self, path: str | Path, scales: Iterable[RatingScale] | None = None) -> None:
        self.path = Path(path)
        scales = None if scales is None else list(scales)
        self.scales = None if scales is None else {scale.question: scale for scale in scales}
        if scales is not None and len(self.scales) != len(scales):
            raise ValueError(f"two scales for one question in {[scale.question for scale in scales]}")

    def _check(self, rating: Rating) -> None:
        if not isinstance(rating, Rating):
            raise TypeError(f"expected a Rating, got {type(rating).__name__}")
        if self.scales is None:
            return
        scale = self.scales.get(rating.question)
        if rating.score is not None:
            if scale is None:
                raise ValueError(f"no scale declared for question {rating.question!r}")
            scale.validate(rating.score)
        elif scale is not None:
            raise ValueError(f"question {rating.question!r} is answered on a scale, not by a choice")

    def add(self, rating: Rating) -> None:
        self.extend([rating])

    def extend(self, ratings: Iterable[Rating]) -> None:
        """Check every rating first (one bad rating writes none), then append them in one write."""
        ratings = list(ratings)
        for rating in ratings:
            self._check(rating)
        if not ratings:
            return
        data = "".join(json.dumps(r.to_dict(), sort_keys=True, allow_nan=False) + "\n" for r in ratings).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a" opens with O_APPEND: every write lands at the end of the file, and one write() per
        # batch of whole lines is atomic enough for an append-only log on a local file system
        # (concurrent writers interleave whole lines; a crash leaves at most one cut-short last
        # line, which load() skips). The lock serialises our writers so that the repair of such a
        # line below cannot race another append; readers need no lock.
        with open(self.path, "ab") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                size = f.seek(0, os.SEEK_END)
                if size:
                    with open(self.path, "rb") as r:
                        r.seek(size - 1)
                        if r.read(1) != b"\n":  # a crash cut the last line: drop it, or it would
                            r.seek(0)           # become a corrupt line in the middle of the file
                            keep = r.read().rfind(b"\n") + 1
                            warnings.warn(f"{self.path}: dropping an incomplete last line "
                                          f"({size - keep} bytes) left by an interrupted write", stacklevel=3)
                            f.truncate(keep)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def load(self) -> list[Rating]:
        """Every rating in file order; [] if the file does not exist yet.

        A corrupt line raises ValueError naming the file and line number, except for a last line
        without its newline (a write cut short by a crash), which is skipped with a warning.
        """
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        if lines[-1]:  # no newline at the end: the last write never completed
            warnings.warn(f"{self.path}:{len(lines)}: skipping an incomplete last line "
                          "(an interrupted write)", stacklevel=2)
        ratings = []
        for number, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                ratings.append(Rating.from_dict(json.loads(line)))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: [[[[...]]]]
                raise ValueError(f"{self.path}:{number}: not a valid rating ({str(exc)[:200]})") from None
        return ratings

    def __iter__(self) -> Iterator[Rating]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())


def _one_question(ratings: Iterable[Rating], question: str | None, pairwise: bool) -> list[Rating]:
    """The ratings of one kind for ``question``; with no question given there must be only one."""
    kept = [r for r in ratings if (r.choice is not None) == pairwise and question in (None, r.question)]
    questions = sorted({r.question for r in kept})
    if question is None and len(questions) > 1:
        raise ValueError(f"ratings answer several questions ({', '.join(questions)}): pass question=")
    return kept


@dataclass(frozen=True)
class ScoreSummary:
    mean: float  # over ratings, each counting once
    std: float  # sample standard deviation of the ratings (nan for a single one)
    n: int  # ratings
    n_raters: int
    ci_low: float  # percentile bootstrap interval of the mean (nan when it cannot be estimated)
    ci_high: float


def summarize_scores(ratings: Iterable[Rating], question: str | None = None, *, confidence: float = 0.95,
                     n_boot: int = 2000, seed: int = 0,
                     resample: Literal["raters", "ratings"] = "raters") -> dict[str | None, ScoreSummary]:
    """Per model (``None`` for ratings without one): mean score, its spread and a bootstrap interval.

    The interval resamples *raters* by default: a rater's scores share that rater's leniency, so
    they are not independent, and resampling single ratings would make the interval too narrow.
    Each replicate draws raters with replacement and pools all their ratings of the model. With
    ``resample="ratings"`` single ratings are drawn instead. With fewer than two raters (or
    ratings) there is nothing to resample and the interval is nan. Each model uses a fresh
    ``numpy.random.default_rng(seed)``, so its interval does not depend on the other models.
    """
    if not 0 < confidence < 1 or n_boot < 1 or resample not in ("raters", "ratings"):
        raise ValueError(f"need 0 < confidence < 1, n_boot >= 1 and resample in raters/ratings, got "
                         f"{confidence}, {n_boot}, {resample!r}")
    by_model: dict[str | None, list[Rating]] = defaultdict(list)
    for r in _one_question(ratings, question, pairwise=False):
        by_model[r.model].append(r)
    out = {}
    tail = (1 - confidence) / 2
    for model, rs in by_model.items():
        scores = np.array([r.score for r in rs], dtype=np.float64)
        if resample == "raters":
            raters = sorted({r.rater_id for r in rs})
            index = {rater: i for i, rater in enumerate(raters)}
            unit = np.array([index[r.rater_id] for r in rs])
            sums, counts = np.bincount(unit, scores, len(raters)), np.bincount(unit, minlength=len(raters))
        else:
            sums, counts = scores, np.ones_like(scores)
        units = len(sums)
        low = high = math.nan
        if units >= 2:
            rng = np.random.default_rng(seed)
            means = []
            chunk = max(1, 2**22 // units)  # bound memory to ~32 MB of indices
            for start in range(0, n_boot, chunk):
                draw = rng.integers(0, units, size=(min(chunk, n_boot - start), units))
                means.append(sums[draw].sum(1) / counts[draw].sum(1))
            low, high = (float(q) for q in np.quantile(np.concatenate(means), [tail, 1 - tail]))
        out[model] = ScoreSummary(float(scores.mean()), float(scores.std(ddof=1)) if len(rs) > 1 else math.nan,
                                  len(rs), len({r.rater_id for r in rs}), low, high)
    return out


@dataclass(frozen=True)
class WinRate:
    wins: int
    comparisons: int
    rate: float  # wins / comparisons
    ci_low: float  # Wilson score interval
    ci_high: float


def wilson_interval(wins: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: sound near 0 and 1 and for small n."""
    if not 0 <= wins <= n:
        raise ValueError(f"need 0 <= wins <= n, got {wins} wins of {n}")
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p, z2 = wins / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # exact ends where the formula's round-off would miss them (e.g. 3e-17 for 0 wins)
    return (0.0 if wins == 0 else centre - half), (1.0 if wins == n else centre + half)


def preference_win_rates(ratings: Iterable[Rating], question: str | None = None, *,
                         confidence: float = 0.95) -> dict[str | None, WinRate]:
    """Per model: how often its item was preferred in the pairwise comparisons it took part in.

    A comparison counts for both sides (``model`` of ``item_id``, ``other_model`` of ``other_id``;
    ``None`` where unknown); comparisons between two items of the same model say nothing about
    models and are left out. The interval is Wilson's, which treats comparisons as independent
    (several judgements by one rater are not quite, so the true uncertainty is likely larger).
    """
    wins: dict[str | None, int] = defaultdict(int)
    comparisons: dict[str | None, int] = defaultdict(int)
    for r in _one_question(ratings, question, pairwise=True):
        if r.model == r.other_model:
            continue
        for model, item in ((r.model, r.item_id), (r.other_model, r.other_id)):
            comparisons[model] += 1
            wins[model] += r.choice == item
    return {m: WinRate(wins[m], n, wins[m] / n, *wilson_interval(wins[m], n, confidence))
            for m, n in comparisons.items()}


# --- pairwise comparisons: Bradley-Terry strengths and a bootstrapped leaderboard ---------------------

_OUTCOMES = ("left", "right", "tie")


def _comparison_votes(comparisons: Iterable[tuple[str, str, str]]
                      ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The models (sorted) and the votes as index arrays: left, right, outcome (0 left, 1 right, 2 tie).

    Every model named is kept, but a comparison of a model with itself says nothing about models
    and is dropped (as in :func:`preference_win_rates`).
    """
    named: set[str] = set()
    votes: list[tuple[str, str, int]] = []
    for vote in comparisons:
        try:
            left, right, outcome = vote
        except (TypeError, ValueError):
            raise ValueError(f"a comparison is (left_model, right_model, outcome), got {vote!r}") from None
        _nonempty("left model", left)
        _nonempty("right model", right)
        if not isinstance(outcome, str) or outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(_OUTCOMES)}, got {outcome!r}")
        named.update((left, right))
        if left != right:
            votes.append((left, right, _OUTCOMES.index(outcome)))
    models = sorted(named)
    index = {m: i for i, m in enumerate(models)}
    left_i = np.array([index[v[0]] for v in votes], dtype=np.intp)
    right_i = np.array([index[v[1]] for v in votes], dtype=np.intp)
    return models, left_i, right_i, np.array([v[2] for v in votes], dtype=np.intp)


def _bt_check(ties: str, prior: float, max_iter: int, tol: float) -> None:
    if ties not in ("half", "drop"):
        raise ValueError(f"ties must be 'half' or 'drop', got {ties!r}")
    if not (math.isfinite(prior) and prior >= 0) or max_iter < 1 or not tol > 0:
        raise ValueError(f"need prior >= 0, max_iter >= 1 and tol > 0, got {prior}, {max_iter}, {tol}")


def _vote_types(left: np.ndarray, right: np.ndarray, outcome: np.ndarray, n: int,
                ties: str) -> tuple[np.ndarray, np.ndarray]:
    """The distinct kinds of vote, as codes ``(left * n + right) * 3 + outcome``, and their counts.

    With ``ties="drop"`` tie votes are left out: they take no part in the fit.
    """
    keep = outcome != 2 if ties == "drop" else np.ones(len(outcome), dtype=bool)
    return np.unique((left[keep] * n + right[keep]) * 3 + outcome[keep], return_counts=True)


def _win_matrices(counts: np.ndarray, codes: np.ndarray, n: int, prior: float) -> np.ndarray:
    """Win matrices ``W[b, i, j]`` (wins of i over j, ties as half a win to each side) of shape (B, k, k).

    ``counts`` (B, T) holds how often each vote kind of ``codes`` (T,) occurs in each of B data
    sets. With ``prior > 0`` index 0 is a reference player against which every model has
    ``prior`` virtual ties, and the models follow at 1..n (k = n + 1); otherwise k = n.
    """
    off = 1 if prior > 0 else 0
    k = n + off
    pair, outcome = np.divmod(codes, 3)
    i, j = np.divmod(pair, n)
    i, j = i + off, j + off
    # each vote kind adds its count (times a weight) to one or two cells: i over j, j over i
    cells = np.concatenate([i * k + j, j * k + i])
    weight = np.concatenate([np.select([outcome == 0, outcome == 2], [1.0, 0.5], 0.0),
                             np.select([outcome == 1, outcome == 2], [1.0, 0.5], 0.0)])
    source = np.concatenate([np.arange(len(codes))] * 2)
    flat = np.zeros((k * k, counts.shape[0]))
    np.add.at(flat, cells, (counts[:, source] * weight).T)
    wins = np.ascontiguousarray(flat.T).reshape(-1, k, k)
    if off:
        wins[:, 0, 1:] = wins[:, 1:, 0] = prior / 2
    return wins


def _bt_fit(wins: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Maximum-likelihood log-strengths (B, k) for win matrices (B, k, k), player 0 held at 0.

    Newton's method on the concave log-likelihood, with step halving wherever a full step would
    lower it; all B fits run together. Stops when no log-strength moves by ``tol`` or more. The
    information matrix must be invertible once player 0 is removed: every player connected to 0.
    """
    batch, k, _ = wins.shape
    games = wins + wins.transpose(0, 2, 1)
    won = wins.sum(2)
    theta = np.zeros((batch, k))

    def loglik(theta: np.ndarray) -> np.ndarray:
        diff = theta[:, :, None] - theta[:, None, :]
        return -(wins * np.logaddexp(0.0, -diff)).sum((1, 2))  # sum of W_ij log P(i beats j)

    current = loglik(theta)
    diagonal = np.arange(k)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh((theta[:, :, None] - theta[:, None, :]) / 2))  # P(i beats j), stably
        grad = won - (games * p).sum(2)
        weight = games * p * p.transpose(0, 2, 1)
        info = -weight
        info[:, diagonal, diagonal] += weight.sum(2)  # a weighted graph Laplacian
        step = np.zeros_like(theta)
        step[:, 1:] = np.linalg.solve(info[:, 1:, 1:], grad[:, 1:, None])[..., 0]
        scale = np.ones(batch)
        for _ in range(60):
            candidate = theta + scale[:, None] * step
            value = loglik(candidate)
            worse = value < current - 1e-12 * (1.0 + np.abs(current))
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        theta, current = candidate, value
        if np.abs(scale[:, None] * step).max() < tol:
            return theta
    warnings.warn(f"Bradley-Terry fit did not converge in {max_iter} iterations (tol={tol:g})",
                  RuntimeWarning, stacklevel=3)
    return theta


def _strongly_connected(wins: np.ndarray) -> bool:
    """Whether every player has beaten (or tied), through some chain, every other: (k, k) wins."""
    reach = (wins > 0) | np.eye(len(wins), dtype=bool)
    for _ in range(max(1, int(math.ceil(math.log2(len(wins)))))):
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    return bool(reach.all())


def _bt_scores(counts: np.ndarray, codes: np.ndarray, n: int, prior: float, max_iter: int,
               tol: float) -> np.ndarray:
    """Centred log-strengths (B, n) of the n models for B data sets of vote-kind ``counts`` (B, T)."""
    wins = _win_matrices(counts, codes, n, prior)
    if prior == 0 and not _strongly_connected(wins[0]):
        raise ValueError("the maximum-likelihood strengths do not exist: some model won (or lost) every "
                         "comparison against a group of others, or the models fall into groups never "
                         "compared; use prior > 0")
    theta = _bt_fit(wins, max_iter, tol)[:, 1 if prior > 0 else 0:]
    return theta - theta.mean(1, keepdims=True)


def bradley_terry(comparisons: Iterable[tuple[str, str, str]], *, ties: Literal["half", "drop"] = "half",
                  prior: float = 1.0, max_iter: int = 100, tol: float = 1e-10) -> dict[str, float]:
    """Bradley-Terry strengths of the models from pairwise outcomes, as centred log-strengths.

    ``comparisons`` holds ``(left_model, right_model, outcome)`` with ``outcome`` one of
    ``"left"``, ``"right"`` (the side preferred) and ``"tie"`` (the service maps "both good" and
    "both bad" to a tie). The model is ``P(i preferred to j) = 1 / (1 + exp(s_j - s_i))``: a score
    is a log-strength on the logit scale, so ``s_i - s_j`` is the log-odds of i being preferred to
    j (a difference of ``log 3`` means 3 to 1). Scores are centred to mean 0 over the models: only
    differences mean anything. With ``ties="half"`` a tie counts as half a win to each side (the
    scale stays that of the decisive votes only if ties are rare or balanced); ``ties="drop"``
    leaves ties out of the fit.

    ``prior`` is a weak symmetric regularisation: every model plays ``prior`` virtual ties against
    a reference model of log-strength 0 (half a virtual win, half a virtual loss; the reference is
    left out of the result). It keeps the scores finite when a model won or lost all its
    comparisons, and ties groups of models never compared with each other to a common level
    (both centred near 0); its pull is that of ``prior`` votes per model, negligible for a model with
    dozens of votes. ``prior=0`` gives the plain maximum-likelihood fit, which exists only when
    every model has beaten or tied every other through some chain of comparisons; ValueError
    otherwise.

    Fit by Newton's method with step halving (the log-likelihood is concave), to ``tol`` in every
    score; deterministic and independent of the order of the comparisons. Comparisons of a model
    with itself are dropped, but the model is kept. Returns ``{model: score}`` in model-name order;
    ``{}`` for no comparisons and ``{model: 0.0}`` for a single model.
    """
    _bt_check(ties, prior, max_iter, tol)
    models, left, right, outcome = _comparison_votes(comparisons)
    if not models:
        return {}
    if len(models) == 1:
        return {models[0]: 0.0}
    codes, counts = _vote_types(left, right, outcome, len(models), ties)
    scores = _bt_scores(counts[None, :].astype(np.float64), codes, len(models), prior, max_iter, tol)[0]
    return {model: float(score) for model, score in zip(models, scores)}


@dataclass(frozen=True)
class LeaderboardRow:
    """One model on a :func:`leaderboard`."""

    model: str
    score: float  # centred Bradley-Terry log-strength (see bradley_terry)
    low: float  # percentile bootstrap interval of the score
    high: float
    votes: int  # comparisons with another model (self-comparisons are not counted)
    wins: int
    losses: int
    ties: int
    rank: int  # 1 for the best: the position by score, equal scores broken by model name


def leaderboard(comparisons: Iterable[tuple[str, str, str]], *, n_boot: int = 1000, confidence: float = 0.95,
                seed: int = 0, ties: Literal["half", "drop"] = "half", prior: float = 1.0,
                max_iter: int = 100, tol: float = 1e-10) -> list[LeaderboardRow]:
    """The models ranked by Bradley-Terry score, best first, with bootstrap intervals and vote counts.

    Scores are those of :func:`bradley_terry` (same ``ties``, ``prior``, ``max_iter``, ``tol``).
    The interval resamples the votes with replacement ``n_boot`` times, refits, and takes the
    percentiles of each model's centred score. Resampling the vote list is done exactly, and fast,
    as a multinomial draw of how often each distinct kind of vote (left model, right model,
    outcome) appears, from ``numpy.random.default_rng(seed)``; the result does not depend on the
    order of the comparisons. The votes are treated as independent (several votes of one rater
    are not quite, so the true uncertainty is likely larger). ``prior`` must be > 0 here: a
    resample can leave a model with only wins. A single model gets score 0 and interval [0, 0].
    """
    _bt_check(ties, prior, max_iter, tol)
    if not 0 < confidence < 1 or n_boot < 1 or prior <= 0:
        raise ValueError(f"need 0 < confidence < 1, n_boot >= 1 and prior > 0, got {confidence}, {n_boot}, "
                         f"{prior}")
    models, left, right, outcome = _comparison_votes(comparisons)
    n = len(models)
    if not n:
        return []
    codes, counts = _vote_types(left, right, outcome, n, ties)
    if n == 1:
        score, low, high = np.zeros(1), np.zeros(1), np.zeros(1)
    else:
        score = _bt_scores(counts[None, :].astype(np.float64), codes, n, prior, max_iter, tol)[0]
        rng = np.random.default_rng(seed)
        total = int(counts.sum())
        probs = counts / total
        chunk = max(1, 2**21 // (n + 1) ** 2)  # bound memory to ~100 MB of matrices
        boot = []
        for start in range(0, n_boot, chunk):
            draws = rng.multinomial(total, probs, size=min(chunk, n_boot - start)).astype(np.float64)
            boot.append(_bt_scores(draws, codes, n, prior, max_iter, tol))
        tail = (1 - confidence) / 2
        low, high = np.quantile(np.concatenate(boot), [tail, 1 - tail], axis=0)
    # counts per model over all votes with another model, ties included whatever ``ties`` says
    wins = np.bincount(left[outcome == 0], minlength=n) + np.bincount(right[outcome == 1], minlength=n)
    losses = np.bincount(left[outcome == 1], minlength=n) + np.bincount(right[outcome == 0], minlength=n)
    tie_counts = np.bincount(left[outcome == 2], minlength=n) + np.bincount(right[outcome == 2], minlength=n)
    order = sorted(range(n), key=lambda m: (-score[m], models[m]))
    return [LeaderboardRow(models[m], float(score[m]), float(low[m]), float(high[m]),
                           int(wins[m] + losses[m] + tie_counts[m]), int(wins[m]), int(losses[m]),
                           int(tie_counts[m]), rank)
            for rank, m in enumerate(order, start=1)]


# --- "real or generated?": the fraction judged real, and HYPE-infinity error rates --------------------


@dataclass(frozen=True)
class JudgedReal:
    """How often the images of one source were judged real."""

    judged_real: int
    n: int  # judgements
    fraction: float  # judged_real / n
    low: float  # Wilson score interval of the fraction
    high: float


@dataclass(frozen=True)
class HypeScore:
    """HYPE-infinity for one model: how often raters were wrong, on its images and on the real ones.

    0.5 means raters cannot tell the model from real images (chance, with as many real as generated
    images shown); lower is easier to tell apart; above 0.5 the generated images look more real
    than the real ones.
    """

    errors: int  # the model's images judged real + real images judged fake
    n: int  # judgements of the model's images + judgements of the real images
    error_rate: float  # errors / n, the HYPE-infinity score
    low: float  # Wilson score interval of error_rate
    high: float
    balanced_error_rate: float  # mean of the two error rates (fakes judged real, reals judged fake):
    #                             weighs both alike, however many real controls were shown


@dataclass(frozen=True)
class RealFraction:
    """The result of :func:`real_fraction`.

    ``sources`` has one entry per source, ``"real"`` (the real controls) included; ``hype`` has
    one per model (every source but ``"real"``) and is empty when no real controls were judged.
    """

    sources: dict[str, JudgedReal]
    hype: dict[str, HypeScore]


def real_fraction(judgements: Iterable[tuple[str, bool]], *, confidence: float = 0.95) -> RealFraction:
    """Tallies of a "real or generated?" test (HYPE, Zhou et al. 2019) per source of images.

    ``judgements`` holds ``(source, said_real)``: ``source`` is ``"real"`` for a real image or the
    name of the model that made it, ``said_real`` whether the rater judged it real (a bool). Per
    source: the fraction judged real, with a Wilson interval (:func:`wilson_interval`). Per model,
    when real controls were judged: the HYPE-infinity error rate, (the model's images judged real +
    real images judged fake) / (judgements of both), pooled over all the real controls. Intervals
    treat judgements as independent (several by one rater are not quite). Sources are in name order.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"need 0 < confidence < 1, got {confidence}")
    real: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for judgement in judgements:
        try:
            source, said_real = judgement
        except (TypeError, ValueError):
            raise ValueError(f"a judgement is (source, said_real), got {judgement!r}") from None
        _nonempty("source", source)
        if not isinstance(said_real, (bool, np.bool_)):
            raise ValueError(f"said_real must be a bool, got {said_real!r}")
        total[source] += 1
        real[source] += bool(said_real)
    sources = {s: JudgedReal(real[s], total[s], real[s] / total[s], *wilson_interval(real[s], total[s], confidence))
               for s in sorted(total)}
    hype = {}
    if "real" in total:
        reals_missed, n_real = total["real"] - real["real"], total["real"]
        for s in sources:
            if s == "real":
                continue
            errors, n = real[s] + reals_missed, total[s] + n_real
            hype[s] = HypeScore(errors, n, errors / n, *wilson_interval(errors, n, confidence),
                                (real[s] / total[s] + reals_missed / n_real) / 2)
    return RealFraction(sources, hype)
