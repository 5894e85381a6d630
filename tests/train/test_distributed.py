"""Every family under torchrun with DistributedDataParallel (gloo, 2 CPU processes).

Each rank runs ``atelier train <family>`` with the family's smallest arguments (the ``family_args``
fixture); the script saves each rank's final weights beside the run, and a Python audit hook records
every file each rank opened for writing. The ranks must end with identical weights (DDP averaged
their gradients, the trainer their batch-norm statistics) and rank 1 must have written nothing.

Slow (two processes start torch and DDP per family): run with ``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.io import load_tensors
from atelier.models.pretrained import latest_checkpoint
from atelier.models.registry import list_families
from atelier.train import steps  # noqa: F401 - registers every family

SCRIPT = """
import json, os, sys
from pathlib import Path

run, side = Path(sys.argv[1]), Path(sys.argv[2])
rank = int(os.environ["RANK"])
written = []


def audit(event, args):
    if event == "open" and args[0] is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & 3):
            written.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(audit)

from safetensors.torch import save_file
from atelier.cli import main
from atelier.train.trainer import Trainer

fit = Trainer.fit


def fit_then_save_weights(self, *args, **kwargs):  # each rank's final weights, beside the run
    result = fit(self, *args, **kwargs)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in self.step_fn.model.state_dict().items()}
    save_file(state, str(side / f"rank{rank}.safetensors"))
    return result


Trainer.fit = fit_then_save_weights
code = main(["train", *json.loads(sys.argv[3]), "--out", str(run)])
(side / f"writes_rank{rank}.json").write_text(json.dumps(written))
sys.exit(code)
"""
TRAIN = ["--steps", "4", "--checkpoint-every", "2", "--sample-every", "2", "--log-every", "1", "--no-progress",
         "--no-tensorboard", "--device", "cpu", "--precision", "fp32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("family", list_families())
def test_torchrun_two_processes(tmp_path: Path, family: str, family_args) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.fail("torchrun not found next to the Python interpreter")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out, side = tmp_path / "run", tmp_path / "side"
    side.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "OMP_NUM_THREADS": "1",
           "ATELIER_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(script), str(out), str(side), json.dumps([family, *family_args(family), *TRAIN])],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_0000004"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["s:step"] == 4
    # the two ranks end with identical weights, equal to rank 0's checkpoint
    w0, w1 = load_tensors(side / "rank0.safetensors"), load_tensors(side / "rank1.safetensors")
    saved = load_tensors(ckpt / "model.safetensors")
    assert w0.keys() == w1.keys() == saved.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], saved[k]), k
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    # only rank 0 wrote into the run directory
    run_dir = str(out.resolve())
    rank0 = [p for p in json.loads((side / "writes_rank0.json").read_text()) if p.startswith(run_dir)]
    rank1 = [p for p in json.loads((side / "writes_rank1.json").read_text()) if p.startswith(run_dir)]
    assert rank0 and not rank1, rank1[:5]
    assert (out / "samples" / "latest.png").is_file()
    if family == "vae":  # rank 0 alone scores the test split at the end
        assert json.loads((out / "metrics.json").read_text())["iw_k"] == 2
