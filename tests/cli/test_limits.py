"""Every number that sizes a command's work is bounded: refused at once, by its flag, before any work.

The run given to each command does not exist: a refusal that names the flag (not the missing run) shows
the number was checked before the model was even loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atelier.cli import main
from atelier.cli.limits import check_float, check_int
from atelier.models.registry import create_model

RUN = "no_such_run"

CASES = [  # (command line after the run, what the error says)
    (["sample", RUN, "--n", "2000000", "--out", "x.npz"], "--n must be between 1 and 1,000,000"),
    (["sample", RUN, "--n", "5000", "--out", "x.png"], "at most 1024 images"),
    (["explore", "interpolate", RUN, "--seeds", "1", "2", "--steps", "100000000", "--out", "x.png"],
     "--steps must be between 2 and 1,024"),
    (["explore", "interpolate", RUN, "--seeds", "1", "2", "--steps", "1", "--out", "x.png"], "--steps must be"),
    (["explore", "interpolate", RUN, "--seeds", "1", "2", "--duration-ms", "0", "--out", "x.png"], "--duration-ms"),
    (["explore", "interpolate", RUN, "--seeds", "1", "2", "--truncation", "1e400", "--out", "x.png"],
     "--truncation must be a finite number"),
    (["explore", "traverse", RUN, "--steps", "1000000000", "--out", "x.png"], "--steps must be between 1 and 1,024"),
    (["explore", "traverse", RUN, "--max-rows", "2000", "--out", "x.png"], "--max-rows must be between 1 and 1,024"),
    (["explore", "traverse", RUN, "--dims", ",".join(["0"] * 200), "--out", "x.png"],
     "200 --dims (rows) x 9 --steps is 1,800 images; a grid holds at most 1024"),
    (["explore", "traverse", RUN, "--range", "nan", "--out", "x.png"], "--range must be a finite number, got nan"),
    (["explore", "traverse", RUN, "--range", "1e400", "--out", "x.png"], "--range must be a finite number"),
    (["explore", "arithmetic", RUN, "--a-seeds", "1", "--b-seeds", "2", "--c-seeds", ",".join(map(str, range(600))),
      "--out", "x.png"], "--c-seeds: at most 512 values, got 600"),
    (["explore", "arithmetic", RUN, "--a-seeds", ",".join(map(str, range(10_001))), "--b-seeds", "2", "--c-seeds",
      "3", "--out", "x.png"], "--a-seeds: at most 10,000 values"),
    (["explore", "reconstruct", RUN, "--data", "digits", "--n", "100000", "--out", "x.png"],
     "--n must be between 1 and 512"),
    (["explore", "latent-map", RUN, "--data", "digits", "--method", "tsne", "--n", "20000", "--out", "x.png"],
     "--n must be between 4 and 10,000"),
    (["explore", "novelty", RUN, "--data", "digits", "--n", "1000000000", "--out", "x.png"],
     "--n must be between 1 and 10,000"),
    (["explore", "novelty", RUN, "--data", "digits", "--k", "5000", "--out", "x.png"], "--k must be between 1 and 512"),
    (["translate", RUN, "in", "-o", "out", "--size", "100000"], "--size must be between 8 and 2,048"),
    (["translate", RUN, "in", "-o", "out", "--batch-size", "0"], "--batch-size must be between 1 and 1,024"),
    (["augment", "--generate", RUN, "--per-class", "10000000", "-o", "out"], "--per-class must be between 1 and 10,000"),
    (["augment", "--generate", RUN, "--per-class", "2", "--max-oversample", "0", "-o", "out"], "--max-oversample"),
    (["augment", "--generate", RUN, "--per-class", "2", "--min-confidence", "nan", "-o", "out"], "--min-confidence"),
    (["augment", "--generate", RUN, "--per-class", "2", "--truncation", "0", "-o", "out"], "--truncation must be"),
    (["augment", "in", "--copies", "1000000", "-o", "out"], "--copies must be between 1 and 1,000"),
    (["augment", "in", "--size", "100000", "-o", "out"], "--size must be between 1 and 4,096"),
]


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[" ".join(a[:2] + a[3:4]) for a, _ in CASES])
def test_a_number_beyond_its_limit_is_refused_at_once(tmp_path: Path, monkeypatch, capsys, argv, says) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert err.startswith("atelier: error: ") and says in err, err
    assert RUN not in err  # the run was never looked at
    assert not list(tmp_path.iterdir())  # nothing written


@settings(max_examples=25, deadline=None)
@given(low=st.integers(-10, 10), span=st.integers(0, 10**6), value=st.integers(-10**7, 10**7))
def test_check_int_accepts_exactly_the_range(low: int, span: int, value: int) -> None:
    high = low + span
    if low <= value <= high:
        assert check_int(value, "--x", low=low, high=high) == value
    else:
        with pytest.raises(ValueError, match=r"^--x must be between"):
            check_int(value, "--x", low=low, high=high)


@settings(max_examples=25, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True), high=st.one_of(st.none(), st.floats(1, 1e6)))
def test_check_float_accepts_exactly_finite_positive_values(value: float, high) -> None:
    ok = value == value and abs(value) != float("inf") and value > 0 and (high is None or value <= high)
    if ok:
        assert check_float(value, "--x", high=high) == value
    else:
        with pytest.raises(ValueError, match=r"^--x must be (a finite number|greater than 0|at most)"):
            check_float(value, "--x", high=high)


@pytest.fixture(scope="module")
def nan_gan(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("dcgan", g_width=8, d_width=8, latent_dim=8)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.startswith("generator_ema.")).view(-1)[0] = float("inf")
    return model.save_pretrained(tmp_path_factory.mktemp("nan") / "gan")


def test_explore_refuses_nan_weights_unless_allowed(nan_gan: Path, tmp_path: Path, capsys) -> None:
    argv = ["explore", "interpolate", str(nan_gan), "--seeds", "1", "2", "--steps", "3", "--no-gif",
            "--out", str(tmp_path / "i.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "infinite values in 1 tensor" in err and "--allow-nonfinite" in err
    assert main([*argv, "--allow-nonfinite"]) == 0
    assert "atelier: warning: " in capsys.readouterr().err and (tmp_path / "i.png").exists()


def test_traverse_bounds_the_rows_it_would_draw(nan_gan: Path, tmp_path: Path, capsys) -> None:
    """--max-rows counts only the dimensions there are (8 here); beyond one grid, traverse() refuses."""
    argv = ["explore", "traverse", str(nan_gan), "--allow-nonfinite", "--out", str(tmp_path / "t.png")]
    assert main([*argv, "--max-rows", "1000", "--steps", "100"]) == 0  # 8 rows x 100
    assert main([*argv, "--max-rows", "1000", "--steps", "200"]) == 2  # 8 rows x 200
    assert "8 dimensions x 200 values is 1,600 images; at most 1024" in capsys.readouterr().err
