"""Loading weights that hold NaN or +-inf is never silent: named with counts, refused where asked."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atelier.models.pretrained import (NonFiniteWeightsError, NonFiniteWeightsWarning, load_pretrained,
                                       nonfinite_tensors)
from atelier.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny():
    torch.manual_seed(0)
    return create_model("dcgan", g_width=8, d_width=8, latent_dim=8)


@settings(max_examples=25, deadline=None)
@given(cells=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([math.nan, math.inf, -math.inf])),
                      min_size=1, max_size=6))
def test_nonfinite_tensors_counts_every_bad_value(cells) -> None:
    tensors = {"a": torch.zeros(50), "b": torch.ones(7, 3), "steps": torch.arange(4)}
    expected: dict[str, set[int]] = {}
    for index, value in cells:
        name = "a" if index % 2 else "b"
        flat = tensors[name].view(-1)
        flat[index % flat.numel()] = value
        expected.setdefault(name, set()).add(index % flat.numel())
    found = nonfinite_tensors(tensors)
    assert found == {name: (len(where), tensors[name].numel()) for name, where in expected.items()}


def test_finite_weights_load_silently(tmp_path: Path, recwarn) -> None:
    tiny().save_pretrained(tmp_path / "ok")
    load_pretrained(tmp_path / "ok", allow_nonfinite=False)
    assert not [w for w in recwarn if issubclass(w.category, NonFiniteWeightsWarning)]


def test_nan_weights_warn_or_are_refused_with_names_and_counts(tmp_path: Path) -> None:
    model = tiny()
    name, weight = next((n, p) for n, p in model.named_parameters() if n.startswith("generator_ema."))
    with torch.no_grad():
        weight.view(-1)[:3] = float("nan")
        weight.view(-1)[3] = float("inf")
    model.save_pretrained(tmp_path / "bad")
    with pytest.warns(NonFiniteWeightsWarning, match=rf"{name} \(4 of {weight.numel():,} values\)"):
        load_pretrained(tmp_path / "bad")  # the library default: load, but say so
    with pytest.raises(NonFiniteWeightsError, match=rf"{name} \(4 of .*allow_nonfinite=True") as info:
        load_pretrained(tmp_path / "bad", allow_nonfinite=False)
    assert "model.safetensors" in str(info.value) and isinstance(info.value, ValueError)
