"""Human ratings of generated images: the record, its storage, and the statistics built on it.

Two kinds of judgement are stored in one record type, :class:`Rating`:

* absolute: a ``score`` on a declared :class:`RatingScale` ("how realistic is this, 1 to 5?");
* pairwise: a ``choice`` between ``item_id`` and ``other_id`` ("which of the two is more
  realistic?"), the more reliable of the two for close models.

Each rating names the model that made the item (``"real"`` for real images shown as controls), so
the aggregates are per model: :func:`summarize_scores` (mean, spread, bootstrap interval) and
:func:`preference_win_rates` (wins over comparisons with a Wilson interval).

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
            except (UnicodeDecodeError, ValueError) as exc:
                raise ValueError(f"{self.path}:{number}: not a valid rating ({exc})") from None
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
