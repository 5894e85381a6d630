"""Human ratings: validation, the append-only JSON-lines store, and the per-model aggregates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from atelier.metrics.ratings import (
    Rating,
    RatingScale,
    RatingStore,
    preference_win_rates,
    summarize_scores,
    wilson_interval,
)

REALISM = RatingScale("realism", 1, 5, ("obviously fake", "indistinguishable from real"), integer=True)


def score(item: str, rater: str, value: float, model: str | None = "A", question: str = "realism") -> Rating:
    return Rating(item, rater, question, score=value, model=model)


def pair(item: str, other: str, chosen: str, rater: str = "r1", model: str = "A", other_model: str = "B",
         question: str = "preference") -> Rating:
    return Rating(item, rater, question, choice=chosen, other_id=other, model=model, other_model=other_model)


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of score and choice"),
        ({"score": 3, "choice": "i"}, "exactly one of score and choice"),
        ({"choice": "k", "other_id": "j"}, "neither item_id"),
        ({"choice": "i"}, "needs other_id"),
        ({"choice": "i", "other_id": "i"}, "compared with itself"),
        ({"score": float("nan")}, "finite"),
        ({"score": float("inf")}, "finite"),
        ({"score": True}, "number"),
        ({"score": "4"}, "number"),
        ({"score": 3, "other_id": "j"}, "pairwise"),
        ({"score": 3, "model": ""}, "model"),
        ({"score": 3, "created_at": "yesterday"}, "ISO 8601"),
        ({"score": 3, "created_at": "2025-01-31T12:00:00+01:00"}, "UTC"),
        ({"score": 3, "created_at": "2025-01-31T12:00:00"}, "UTC"),
        ({"score": 3, "meta": {1: "x"}}, "meta"),
        ({"score": 3, "meta": {"t": (1, 2)}}, "meta"),
        ({"score": 3, "meta": {"t": float("nan")}}, "meta"),
        ({"score": 3, "meta": {"f": object()}}, "meta"),
    ],
)
def test_invalid_ratings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rating("i", "r1", "realism", **kwargs)


@pytest.mark.parametrize("field", ["item_id", "rater_id", "question"])
def test_ids_must_be_non_empty(field: str) -> None:
    args = {"item_id": "i", "rater_id": "r", "question": "q", "score": 1.0, field: " "}
    with pytest.raises(ValueError, match=field):
        Rating(**args)


def test_a_valid_rating() -> None:
    r = Rating("i", "r1", "realism", score=4, model="real", created_at="2025-01-31T12:00:00Z")
    assert r.score == 4.0 and isinstance(r.score, float)
    assert Rating("i", "r1", "q", choice="j", other_id="j").choice == "j"
    now = Rating("i", "r1", "q", score=1).created_at
    assert now.endswith("+00:00")
    assert len({r, r}) == 1  # hashable although meta is a dict
    with pytest.raises(ValueError, match="unknown rating field"):
        Rating.from_dict({**r.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="rater_id"):
        Rating.from_dict({"item_id": "i", "question": "q", "score": 1})


def test_scales() -> None:
    assert REALISM.validate(4) == 4.0
    for bad in (0, 6, 4.5, float("nan"), True):
        with pytest.raises(ValueError, match="realism"):
            REALISM.validate(bad)
    assert RatingScale("quality", 0, 1).validate(0.25) == 0.25
    with pytest.raises(ValueError, match="low < high"):
        RatingScale("quality", 1, 1)
    with pytest.raises(ValueError, match="labels"):
        RatingScale("quality", 0, 1, ("only one",))


def test_store_checks_ratings_against_its_scales(tmp_path: Path) -> None:
    store = RatingStore(tmp_path / "r.jsonl", scales=[REALISM])
    store.add(score("i", "r1", 5))
    with pytest.raises(ValueError, match="outside"):
        store.add(score("i", "r1", 7))
    with pytest.raises(ValueError, match="no scale declared"):
        store.add(score("i", "r1", 3, question="diversity"))
    with pytest.raises(ValueError, match="on a scale"):
        store.add(pair("i", "j", "i", question="realism"))
    store.add(pair("i", "j", "i"))  # pairwise questions need no scale
    with pytest.raises(ValueError, match="outside"):  # a bad rating in a batch writes none of it
        store.extend([score("k", "r2", 4), score("k", "r3", 9)])
    assert len(store) == 2
    with pytest.raises(ValueError, match="two scales"):
        RatingStore(tmp_path / "x.jsonl", scales=[REALISM, REALISM])


# --- storage ----------------------------------------------------------------------------------------

def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ratings.jsonl"
    ratings = [
        Rating("run1/0/3", "r1", "realism", score=4, model="run1", meta={"seconds": 2.5, "page": "v1"}),
        Rating("real/17", "r2", "realism", score=5, model="real"),
        pair("run1/0/3", "run2/0/3", "run2/0/3", model="run1", other_model="run2"),
    ]
    store = RatingStore(path)
    assert store.load() == [] and len(store) == 0
    store.add(ratings[0])
    store.extend(ratings[1:])
    assert len(path.read_text().splitlines()) == 3
    assert all(json.loads(line)["item_id"] for line in path.read_text().splitlines())
    again = RatingStore(path)
    assert again.load() == ratings
    assert list(again) == ratings and len(again) == 3


def test_a_corrupt_line_in_the_middle_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ratings.jsonl"
    store = RatingStore(path)
    store.extend([score("a", "r1", 1), score("b", "r1", 2), score("c", "r1", 3)])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"ratings\.jsonl:2: not a valid rating"):
        store.load()
    lines[1] = json.dumps({"item_id": "b", "rater_id": "r1", "question": "q"})  # valid JSON, not a rating
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r":2: .*exactly one of score and choice"):
        store.load()


def test_a_truncated_last_line_is_skipped_then_repaired(tmp_path: Path) -> None:
    path = tmp_path / "ratings.jsonl"
    store = RatingStore(path)
    store.extend([score("a", "r1", 1), score("b", "r1", 2)])
    full = path.read_bytes()
    path.write_bytes(full + full[: len(full) // 3])  # a crash in the middle of the third write
    with pytest.warns(UserWarning, match=r"ratings\.jsonl:3: skipping an incomplete last line"):
        assert [r.item_id for r in store.load()] == ["a", "b"]
    with pytest.warns(UserWarning, match="dropping an incomplete last line"):
        store.add(score("c", "r1", 3))
    assert [r.item_id for r in store.load()] == ["a", "b", "c"]  # no warning now: the file is whole
    assert path.read_bytes().startswith(full)


# --- aggregation ------------------------------------------------------------------------------------

def _scored() -> list[Rating]:
    a = [score(f"a{i}", f"r{i}", s, "A") for i, s in enumerate([4, 5, 4, 5])]
    b = [score(f"b{i}", f"r{i % 2}", s, "B") for i, s in enumerate([1, 2, 3])]
    return a + b


def test_summarize_scores_known_values() -> None:
    summary = summarize_scores(_scored())
    a, b = summary["A"], summary["B"]
    assert (a.mean, a.n, a.n_raters) == (4.5, 4, 4)
    assert a.std == pytest.approx(math.sqrt(1 / 3))  # sample standard deviation of 4, 5, 4, 5
    assert (b.mean, b.std, b.n, b.n_raters) == (2.0, 1.0, 3, 2)
    assert summarize_scores([score("x", "r1", 3, None)])[None].n == 1  # no model: grouped under None


def test_bootstrap_interval_contains_the_mean_and_is_seeded() -> None:
    values = [int(v) for v in np.random.default_rng(0).integers(1, 6, size=30)]
    ratings = [score(f"i{i}", f"r{i % 6}", v, "A") for i, v in enumerate(values)]
    for resample in ("raters", "ratings"):
        s = summarize_scores(ratings, seed=3, resample=resample)["A"]
        assert s.ci_low < s.mean < s.ci_high
        assert summarize_scores(ratings, seed=3, resample=resample)["A"] == s
    # resampling raters is unaffected by other models being present
    mixed = ratings + [score("j", "r9", 2, "B"), score("k", "r8", 5, "B")]
    assert summarize_scores(mixed, seed=3)["A"] == summarize_scores(ratings, seed=3)["A"]
    one_rater = summarize_scores([score("a", "r1", 4), score("b", "r1", 5)])["A"]
    assert math.isnan(one_rater.ci_low) and math.isnan(one_rater.ci_high)
    with pytest.raises(ValueError, match="resample"):
        summarize_scores(ratings, resample="items")  # type: ignore[arg-type]


def test_questions_are_not_mixed() -> None:
    ratings = _scored() + [score("a0", "r0", 1, "A", question="diversity")]
    with pytest.raises(ValueError, match="several questions"):
        summarize_scores(ratings)
    assert summarize_scores(ratings, "realism")["A"].mean == 4.5
    assert summarize_scores(ratings, "diversity")["A"].mean == 1.0
    assert summarize_scores(ratings, "nothing") == {}


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def test_preference_win_rates_with_wilson_bounds() -> None:
    ratings = [
        pair("a1", "b1", "a1"),
        pair("b2", "a2", "a2", model="B", other_model="A"),  # either side of the pair can be A
        pair("a3", "b3", "a3", rater="r2"),
        pair("a4", "b4", "b4", rater="r2"),
        pair("a5", "a6", "a5", model="A", other_model="A"),  # A against A: says nothing, left out
        score("a1", "r1", 5),  # scores are not choices
    ]
    rates = preference_win_rates(ratings)
    a, b = rates["A"], rates["B"]
    assert (a.wins, a.comparisons, a.rate) == (3, 4, 0.75)
    assert (b.wins, b.comparisons, b.rate) == (1, 4, 0.25)
    assert (a.ci_low, a.ci_high) == pytest.approx(_wilson(3, 4), abs=1e-12)
    assert (b.ci_low, b.ci_high) == pytest.approx(_wilson(1, 4), abs=1e-12)
    assert a.ci_low == pytest.approx(0.30064, abs=1e-5) and a.ci_high == pytest.approx(0.95441, abs=1e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    # an unknown other model still credits the known side, under None for the other
    half_known = preference_win_rates([pair("a1", "x", "a1", other_model=None)])
    assert half_known["A"].wins == 1 and half_known[None].wins == 0
