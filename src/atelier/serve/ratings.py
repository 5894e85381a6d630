"""Human ratings in the studio's database: the questions put to raters, their answers, the numbers.

Two modes. *Pairwise*: two samples from two models side by side; the rater answers left better,
right better, both good or both bad (the last two count as ties for Bradley–Terry). *Real or
generated*: one image, either a real test image of the model's dataset or a sample; the rater says
which (HYPE's fraction of samples judged real). Items are drawn again from ``model + seed`` when
shown, so nothing but the question is stored until the answer comes.

The records are :class:`atelier.metrics.ratings.Rating` in a table: a JSON-lines file written by
:class:`~atelier.metrics.ratings.RatingStore` imports into it (:func:`import_jsonl`) and every answer
exports back to that format (:func:`export_jsonl`); the statistics are the library's
(:func:`~atelier.metrics.ratings.leaderboard`, :func:`~atelier.metrics.ratings.real_fraction`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import secrets
from collections.abc import Iterable, Iterator
from functools import lru_cache

import sqlalchemy as sa
import torch

from atelier.metrics.ratings import Rating, leaderboard, real_fraction
from atelier.serve.db import Database, RatingRow, RatingTask, utcnow

PAIR_ANSWERS = ("left", "right", "both_good", "both_bad")
REAL_ANSWERS = ("real", "generated")
QUESTION = "quality"
REAL_QUESTION = "realism"


class NotEnoughModels(ValueError):
    pass


def pair_key(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


def _generative(catalog, allowed) -> list[str]:
    return sorted(name for name in catalog.entries if "sample" in catalog.operations(name) and allowed(name))


def new_pair(db: Database, catalog, owner_id: int, *, models: tuple[str, str] | None = None,
             allowed=lambda name: True, rng: random.Random | None = None) -> RatingTask:
    """A pair of samples from two different generative models (chosen at random unless given)."""
    rng = rng or random.SystemRandom()
    if models is None:
        names = _generative(catalog, allowed)
        if len(names) < 2:
            raise NotEnoughModels("pairwise rating needs at least two generative models; this studio serves "
                                  f"{len(names)}")
        models = tuple(rng.sample(names, 2))  # type: ignore[assignment]
    a, b = models
    if a == b:
        raise ValueError("a pair needs two different models")
    task = RatingTask(id=secrets.token_urlsafe(24), owner_id=owner_id, kind="pair", question=QUESTION,
                      left_model=a, left_item=f"{a}:{rng.randrange(2**31)}", right_model=b,
                      right_item=f"{b}:{rng.randrange(2**31)}")
    with db.session() as s:
        s.add(task)
    return task


def new_real_task(db: Database, catalog, owner_id: int, *, model: str | None = None,
                  allowed=lambda name: True, rng: random.Random | None = None, real_share: float = 0.5) -> RatingTask:
    """One image: with probability ``real_share`` a real test image of ``model``'s dataset, else a sample."""
    rng = rng or random.SystemRandom()
    if model is None:
        names = _generative(catalog, allowed)
        if not names:
            raise NotEnoughModels("real-or-generated rating needs a generative model")
        model = rng.choice(names)
    if rng.random() < real_share:
        item, source = f"real:{model}:{rng.randrange(2**31)}", "real"
    else:
        item, source = f"{model}:{rng.randrange(2**31)}", model
    task = RatingTask(id=secrets.token_urlsafe(24), owner_id=owner_id, kind="real", question=REAL_QUESTION,
                      left_model=source, left_item=item)
    with db.session() as s:
        s.add(task)
    return task


@lru_cache(maxsize=16)
def _real_images(data_spec: str, resolution: int, channels: int | None, data_dir: str | None) -> torch.Tensor:
    from atelier.data import load_dataset

    return load_dataset(data_spec, resolution=resolution, split="test", data_dir=data_dir, channels=channels,
                        progress=False, download=False).images


def item_image(catalog, item: str) -> torch.Tensor:
    """(C, H, W) uint8 of ``model:seed`` (a sample) or ``real:model:index`` (a test image of its dataset)."""
    if item.startswith("real:"):
        _, model, index = item.split(":")
        entry = catalog.get(model)
        data = entry.config.get("data") or {}
        images = _real_images(str(data.get("name", "digits")), int(data.get("resolution") or entry.resolution or 28),
                              data.get("channels"), data.get("data_dir"))
        return images[int(index) % images.shape[0]]
    model, seed = item.rsplit(":", 1)
    return catalog.pipeline(model).sample(1, seed=int(seed))[0]


def vote(db: Database, task: RatingTask, rater_id: int, rater: str, answer: str) -> RatingRow:
    """Record the answer to ``task``; ValueError for a wrong answer, KeyError when already answered."""
    allowed = PAIR_ANSWERS if task.kind == "pair" else REAL_ANSWERS
    if answer not in allowed:
        raise ValueError(f"answer must be one of {', '.join(allowed)}, got {answer!r}")
    if task.kind == "pair":
        key = pair_key(task.left_item, task.right_item or "")
        row = RatingRow(rater_id=rater_id, rater=rater, kind="pair", question=task.question, item_id=task.left_item,
                        model=task.left_model, other_id=task.right_item, other_model=task.right_model, answer=answer,
                        pair_key=key, meta={"task": task.id})
    else:
        row = RatingRow(rater_id=rater_id, rater=rater, kind="real", question=task.question, item_id=task.left_item,
                        model=task.left_model, answer=answer, pair_key=task.left_item, meta={"task": task.id})
    with db.session() as s:
        done = s.execute(sa.update(RatingTask).where(RatingTask.id == task.id, RatingTask.answered.is_(False))
                         .values(answered=True)).rowcount
        if not done:
            raise KeyError("this question has been answered already")
        exists = s.scalar(sa.select(RatingRow.id).where(RatingRow.rater == rater, RatingRow.kind == row.kind,
                                                        RatingRow.question == row.question,
                                                        RatingRow.pair_key == row.pair_key))
        if exists is not None:
            raise KeyError("you have rated this pair already")
        s.add(row)
    return row


def _comparisons(rows: Iterable[RatingRow]) -> Iterator[tuple[str, str, str]]:
    for r in rows:
        if r.model is None or r.other_model is None or r.model == r.other_model:
            continue
        outcome = {"left": "left", "right": "right", "both_good": "tie", "both_bad": "tie"}.get(r.answer or "")
        if outcome:
            yield r.model, r.other_model, outcome


def board(db: Database, *, question: str = QUESTION, n_boot: int = 1000) -> list[dict]:
    """Bradley–Terry scores with bootstrap 95% intervals and vote counts, best first."""
    with db.session() as s:
        rows = list(s.scalars(sa.select(RatingRow).where(RatingRow.kind == "pair", RatingRow.question == question)))
    return [dataclasses.asdict(r) for r in leaderboard(list(_comparisons(rows)), n_boot=n_boot)]


def realness(db: Database) -> dict:
    """Per source, the fraction judged real (Wilson 95% interval), and HYPE error rates per model."""
    with db.session() as s:
        rows = list(s.scalars(sa.select(RatingRow).where(RatingRow.kind == "real")))
    result = real_fraction([(r.model or "?", r.answer == "real") for r in rows if r.answer in REAL_ANSWERS])
    return {"sources": {k: vars(v) for k, v in result.sources.items()},
            "hype": {k: vars(v) for k, v in result.hype.items()}}


def to_rating(row: RatingRow) -> Rating:
    """The library's record of an answer (choice for left/right; ties and real/generated in ``meta``)."""
    meta = dict(row.meta or {}) | {"kind": row.kind, "answer": row.answer}
    created = row.created_at.isoformat(timespec="milliseconds")
    if row.kind == "score":
        return Rating(item_id=row.item_id, rater_id=row.rater, question=row.question, score=row.score,
                      model=row.model, created_at=created, meta=meta)
    if row.kind == "pair" and row.answer in ("left", "right"):
        return Rating(item_id=row.item_id, rater_id=row.rater, question=row.question,
                      choice=row.item_id if row.answer == "left" else row.other_id, other_id=row.other_id,
                      model=row.model, other_model=row.other_model, created_at=created, meta=meta)
    # ties and real/generated verdicts: a score (1 = both good / judged real, 0 = both bad / generated)
    score = 1.0 if row.answer in ("both_good", "real") else 0.0
    if row.other_id is not None:
        meta |= {"other_id": row.other_id, "other_model": row.other_model}
    return Rating(item_id=row.item_id, rater_id=row.rater, question=row.question, score=score, model=row.model,
                  created_at=created, meta=meta)


def export_jsonl(db: Database) -> Iterator[str]:
    """Every answer as a line of the JSON-lines ratings format (RatingStore can read it back)."""
    with db.session() as s:
        rows = list(s.scalars(sa.select(RatingRow).order_by(RatingRow.id)))
    for row in rows:
        yield json.dumps(to_rating(row).to_dict(), sort_keys=True, allow_nan=False) + "\n"


def import_jsonl(db: Database, ratings: Iterable[Rating]) -> int:
    """Import ratings (e.g. ``RatingStore(path).load()``); answers already present are skipped. Returns how
    many were added."""
    from datetime import datetime

    added = 0
    with db.session() as s:
        for r in ratings:
            meta = dict(r.meta)
            kind, answer = meta.pop("kind", None), meta.pop("answer", None)
            other_id, other_model = r.other_id or meta.pop("other_id", None), r.other_model or meta.pop(
                "other_model", None)
            if r.choice is not None:
                kind, answer = "pair", "left" if r.choice == r.item_id else "right"
                key = pair_key(r.item_id, other_id or "")
            elif kind == "pair":  # an exported tie
                key = pair_key(r.item_id, other_id or "")
            elif kind == "real":
                key = r.item_id
            else:
                kind, answer, key = "score", None, None
            if key is not None and s.scalar(sa.select(RatingRow.id).where(
                    RatingRow.rater == r.rater_id, RatingRow.kind == kind, RatingRow.question == r.question,
                    RatingRow.pair_key == key)) is not None:
                continue
            s.add(RatingRow(rater=r.rater_id, kind=kind, question=r.question, item_id=r.item_id, model=r.model,
                            other_id=other_id, other_model=other_model, answer=answer,
                            score=r.score if kind == "score" else None, pair_key=key, meta=meta,
                            created_at=datetime.fromisoformat(r.created_at) if r.created_at else utcnow()))
            s.flush()
            added += 1
    return added
