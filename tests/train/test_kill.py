"""SIGKILL while a checkpoint is being written: ``atelier train`` (a real process, a checkpoint every step)
is killed at once, with no chance to clean up, at the moment a checkpoint's temporary folder appears, and
then at random moments. After every kill: each checkpoint present is complete and loads (the model through
the pipeline façade, the training state), the ``latest`` pointer names one of them, every checkpoint seen
before the kill is still there byte for byte, and ``--resume`` continues the run to its end. At least one
kill must have left a half-written temporary behind, or the test proves nothing and fails."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atelier.cli import main
from atelier.pipelines import Pipeline
from atelier.train.checkpoint import (load_train_state, remove_stale_temporaries, resumable_checkpoint,
                                     save_checkpoint, set_latest)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SRC = Path(__file__).resolve().parents[2] / "src"
# widths of 32 make each checkpoint ~1.4 MB in four fsync'd files: a write lasts long enough to be hit
CLI = ["--data", "digits", "--batch-size", "8", "--g-width", "32", "--d-width", "32", "--latent-dim", "8",
       "--no-tensorboard", "--no-progress", "--precision", "fp32", "--log-every", "1000", "--sample-every", "100000",
       "--checkpoint-every", "1", "--keep-checkpoints", "10000"]
FILES = ("config.json", "model.safetensors", "state.json", "state.safetensors")


def _checkpoints(run: Path) -> list[Path]:
    folder = run / "checkpoints"
    return sorted(p for p in folder.glob("step_*") if p.is_dir()) if folder.is_dir() else []


def _leftovers(run: Path) -> list[str]:
    """What a write cut short leaves: hidden temporaries (``.step_N.tmpXYZ/``, a pointer's temporary file)."""
    folder = run / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def _digests(checkpoint: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(checkpoint.iterdir())}


def _start(run: Path, *, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "atelier.cli", "train", "gan", *CLI, "--steps", "100000", "--out", str(run)]
    return subprocess.Popen(argv + (["--resume"] if resume else []), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_while_writing(proc: subprocess.Popen, run: Path, *, after: int, delay: float) -> dict[str, dict]:
    """Once ``after`` more checkpoints are complete, SIGKILL ``proc`` ``delay`` s after the next checkpoint's
    temporary folder appears. Returns the digests of the checkpoints complete before the kill."""
    start = len(_checkpoints(run))
    deadline = time.monotonic() + 120
    while len(_checkpoints(run)) < start + after:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoints written"
        time.sleep(0.01)
    before = {c.name: _digests(c) for c in _checkpoints(run)}
    folder = run / "checkpoints"
    while not any(n.startswith(".step_") for n in os.listdir(folder)):  # a write has begun
        assert proc.poll() is None and time.monotonic() < deadline
    if delay:
        time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    proc.stderr.close()
    return before


def _check_after_kill(run: Path, earlier: dict[str, dict]) -> None:
    present = _checkpoints(run)
    for name, digests in earlier.items():  # nothing saved before was lost or changed
        assert _digests(run / "checkpoints" / name) == digests, name
    for checkpoint in present:  # every checkpoint there is whole and loads
        assert sorted(f.name for f in checkpoint.iterdir()) == sorted(FILES), checkpoint
        assert load_train_state(checkpoint)["step"] == int(checkpoint.name.split("_")[1])
        assert Pipeline.load(checkpoint).sample(1, seed=0).shape == (1, 1, 28, 28)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert run / "checkpoints" / latest in present
    assert resumable_checkpoint(run) == present[-1]  # resume takes up the newest complete checkpoint


def _kill_and_resume(run: Path, delays: list[float]) -> int:
    """Start, kill while writing, resume, kill again... (one run per delay); returns how many kills cut a
    write short. Then ``--resume`` to a few steps past the last checkpoint, in this process."""
    earlier: dict[str, dict] = {}
    cut_short = 0
    rng = random.Random(0)
    for k, delay in enumerate(delays):
        proc = _start(run, resume=k > 0)
        earlier |= _kill_while_writing(proc, run, after=rng.randint(1, 3), delay=delay)
        cut_short += bool(_leftovers(run))
        _check_after_kill(run, earlier)
    last = int(_checkpoints(run)[-1].name.split("_")[1])
    assert main(["train", "gan", "--out", str(run), "--resume", "--steps", str(last + 2), "--no-progress"]) == 0
    assert _leftovers(run) == []  # the half-written temporaries were cleared away
    _check_after_kill(run, earlier)
    assert _checkpoints(run)[-1].name == f"step_{last + 2:07d}"
    return cut_short


def test_sigkill_while_a_checkpoint_is_written_loses_nothing_and_resumes(tmp_path: Path) -> None:
    # the first kill comes the moment a write begins; the second at a random moment near one
    cut_short = _kill_and_resume(tmp_path / "run", [0.0, random.Random(1).uniform(0.0, 0.05)])
    assert cut_short >= 1  # a kill did land in the middle of a write


@pytest.mark.slow
def test_sigkill_at_many_random_moments(tmp_path: Path) -> None:
    rng = random.Random(2)
    cut_short = _kill_and_resume(tmp_path / "run", [0.0] + [rng.uniform(0.0, 0.1) for _ in range(9)])
    assert cut_short >= 3


# -- the moments a random kill rarely hits, set up by hand ----------------------------------------------


def _save(folder: Path, step: int) -> Path:
    import torch

    return save_checkpoint(folder, model_state={"w": torch.full((4,), float(step))}, train_state={"step": step},
                           config={"step": step})


def test_a_checkpoint_moved_aside_for_its_replacement_is_put_back(tmp_path: Path) -> None:
    """Killed between the two renames that replace ``checkpoints/best``: the old one is whole, aside."""
    checkpoints = tmp_path / "run" / "checkpoints"
    best = _save(checkpoints / "best", 10)
    kept = _digests(best)
    os.replace(best, checkpoints / ".best.old-4242")  # the first rename happened ...
    _save(checkpoints / ".best.tmpab12", 20)  # ... the second (the new one into place) did not
    (checkpoints / ".latest.x1y2.tmp").write_bytes(b"step_")  # and a pointer's write was cut short
    removed = remove_stale_temporaries(tmp_path / "run")
    assert sorted(p.name for p in removed) == [".best.tmpab12", ".latest.x1y2.tmp"]
    assert _digests(checkpoints / "best") == kept and _leftovers(tmp_path / "run") == []
    # with its replacement in place (killed before deleting the old one), the old one goes
    os.replace(_save(checkpoints / "best-new", 30), checkpoints / ".best.old-77")
    assert [p.name for p in remove_stale_temporaries(tmp_path / "run")] == [".best.old-77"]
    assert _digests(checkpoints / "best") == kept


def test_resume_takes_the_newest_complete_checkpoint_and_only_this_runs_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (2, 4):
        _save(run / "checkpoints" / f"step_{step:07d}", step)
    set_latest(run / "checkpoints", "step_0000002")  # killed after writing step 4, before moving the pointer
    assert resumable_checkpoint(run).name == "step_0000004"
    _save(tmp_path / "elsewhere", 99)
    set_latest(run / "checkpoints", "../../elsewhere")  # a pointer never leads out of the run
    assert resumable_checkpoint(run).name == "step_0000004"
    set_latest(run / "checkpoints", "step_0000004")
    _save(run / "checkpoints" / "best", 3)
    assert resumable_checkpoint(run).name == "step_0000004"
