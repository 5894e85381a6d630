"""Bounds on the numbers commands take, checked in the words of the command line before any work.

Every command whose cost grows with a number a user types (samples, frames, grid cells, copies) either
streams its output or refuses that number above a documented limit: the limits live beside the code
that would do the work (``MAX_SAMPLES``, ``MAX_GRID_IMAGES``, ...), the ``--help`` of each flag names
its own, and :func:`check_int` / :func:`check_float` raise ValueError naming the flag (-> ``atelier:
error: ...``, exit status 2).
"""

from __future__ import annotations

from typing import Annotated

import annotated_types as at

from atelier.config import check_value


def comma_list(kind: type, what: str):
    """An argparse ``type`` for "0,1, 2" -> [0, 1, 2] of ``kind`` (int or float); ``what`` names the
    items in the error ("integers", "numbers")."""
    import argparse

    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
        return values

    return parse

__all__ = ["check_float", "check_int"]

# The checks are the config validation layer's (atelier.config.check_value), so a flag and a config field
# with the same range refuse the same values in the same words.


def check_int(value: int | None, flag: str, *, low: int = 1, high: int | None = None) -> int | None:
    """``value`` (None passes) when ``low <= value <= high``, else ValueError naming ``flag`` and the range."""
    if value is None:
        return None
    return check_value(value, Annotated[int, at.Interval(ge=low, le=high)], flag)


def check_float(value: float | None, flag: str, *, low: float = 0.0, high: float | None = None,
                low_inclusive: bool = False) -> float | None:
    """``value`` (None passes) when finite and within (``low``, ``high``] (``[low, high]`` with
    ``low_inclusive``), else ValueError naming ``flag``."""
    if value is None:
        return None
    bound = at.Interval(ge=low, le=high) if low_inclusive else at.Interval(gt=low, le=high)
    return check_value(value, Annotated[float, bound], flag)
