"""Never lose work: run directories are not clobbered, resume finds a usable checkpoint, and SIGTERM
stops a run like Ctrl-C (a checkpoint at a step boundary, a non-zero exit, an exact resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atelier.cli import main
from atelier.io import load_tensors
from atelier.models.pretrained import latest_checkpoint
from atelier.train import DataConfig, GANTrainConfig, train_model
from atelier.train.checkpoint import RunExistsError, remove_stale_temporaries, resumable_checkpoint
from atelier.signals import stop_on_signals

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(g_width=8, d_width=8, latent_dim=8)
SRC = Path(__file__).resolve().parents[2] / "src"
CLI_TINY = ["--data", "digits", "--batch-size", "8", "--g-width", "8", "--d-width", "8", "--latent-dim", "8",
            "--no-tensorboard", "--no-progress", "--precision", "fp32", "--log-every", "1"]


def _train(out: Path, steps: int, **kw):
    cfg = GANTrainConfig(steps=steps, batch_size=8, progress=False, tensorboard=False, precision="fp32",
                         checkpoint_every=kw.pop("checkpoint_every", 1000))
    return train_model("dcgan", data=DataConfig(), train=cfg, out=out, model_kwargs=TINY, **kw)


def test_a_new_run_into_a_run_directory_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    _train(out, 2)
    before = load_tensors(latest_checkpoint(out) / "model.safetensors")
    with pytest.raises(RunExistsError, match="resume=True.*overwrite=True"):
        _train(out, 3)
    assert torch.equal(load_tensors(latest_checkpoint(out) / "model.safetensors")["generator.project.0.weight"],
                       before["generator.project.0.weight"])  # nothing was touched
    # the CLI names its own flags
    assert main(["train", "gan", *CLI_TINY, "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and "resume=True" not in err
    # --overwrite starts again: the old checkpoints are gone, other files stay
    (out / "notes.txt").write_text("mine")
    assert main(["train", "gan", *CLI_TINY, "--steps", "3", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_0000003"]
    assert (out / "notes.txt").read_text() == "mine"
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]  # the old run's log was not appended to
    # any non-empty folder is refused too: a run never mixes with other files by accident
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.png").write_bytes(b"x")
    with pytest.raises(RunExistsError, match="other files"):
        _train(other, 1)


def test_resume_without_the_latest_pointer_uses_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(out, 4, checkpoint_every=2)
    (out / "checkpoints" / "latest").unlink()
    assert resumable_checkpoint(out).name == "step_0000004"
    (out / "checkpoints" / "step_0000004" / "state.json").unlink()  # a half-gone newest checkpoint
    assert resumable_checkpoint(out).name == "step_0000002"
    result = train_model("dcgan", data=DataConfig(), train=GANTrainConfig(steps=5, batch_size=8, progress=False,
                         tensorboard=False, precision="fp32"), out=out, model_kwargs=TINY, resume=True)
    assert result.steps == 5
    (out / "checkpoints" / "step_0000005" / "state.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint.*step_0000005 lacks state.safetensors; "
                                                "step_0000004 lacks state.json"):
        resumable_checkpoint(out)


def test_stale_temporary_checkpoints_are_removed_at_start(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(out, 2)
    stale = [out / "checkpoints" / ".step_0000009.tmpab12", out / "checkpoints" / ".best.old-4242"]
    for s in stale:
        s.mkdir()
        (s / "model.safetensors").write_bytes(b"half")
    assert sorted(p.name for p in remove_stale_temporaries(out)) == sorted(p.name for p in stale)
    assert latest_checkpoint(out).name == "step_0000002" and not any(s.exists() for s in stale)


def test_the_first_signal_sets_a_flag_and_the_second_acts_at_once() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM" and stop.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second one would end the process
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_checkpoints_exits_non_zero_and_resume_is_bit_identical(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "atelier.cli", "train", "gan", *CLI_TINY, "--steps", "100000",
                             "--checkpoint-every", "100000", "--out", str(run)], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    history = run / "history.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not history.is_file() or len(history.read_text().splitlines()) < 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "--resume" in err
    stopped_at = int(latest_checkpoint(run).name.split("_")[1])
    assert 5 <= stopped_at < 100000
    total = stopped_at + 3
    assert main(["train", "gan", "--out", str(run), "--resume", "--steps", str(total), "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "gan", *CLI_TINY, "--steps", str(total), "--checkpoint-every", "100000",
                 "--out", str(straight)]) == 0
    a = load_tensors(latest_checkpoint(run) / "model.safetensors")
    b = load_tensors(latest_checkpoint(straight) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
