"""The trainer under torchrun with DistributedDataParallel (gloo, 2 CPU processes).

Slow (two processes start torch and DDP): run with ``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.train.checkpoint import latest_checkpoint, load_tensors

SCRIPTS = {
    "gan": """
import sys
from atelier.train import DataConfig, TrainConfig, train_model
train_model("dcgan", data=DataConfig(name="digits", resolution=28),
            train=TrainConfig(batch_size=8, steps=4, seed=0, tensorboard=False, progress=False, device="cpu",
                              precision="fp32", checkpoint_every=2, sample_every=2),
            out=sys.argv[1], model_kwargs=dict(g_width=8, d_width=8, latent_dim=16), conditional=True)
""",
    "vae": """
import sys
from atelier.train import DataConfig, TrainConfig, train_model
train_model("vae", data=DataConfig(name="digits", resolution=28),
            train=TrainConfig.for_family("vae", batch_size=8, steps=4, seed=0, tensorboard=False, progress=False,
                                         device="cpu", precision="fp32", checkpoint_every=2, sample_every=2,
                                         iw_samples=5, iw_images=20),
            out=sys.argv[1], model_kwargs=dict(width=8, hidden=16, latent_dim=4, likelihood="gaussian"),
            conditional=True)
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gan", "vae"])
def test_torchrun_two_processes(tmp_path: Path, family: str) -> None:
    SCRIPT = SCRIPTS[family]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.fail("torchrun not found next to the Python interpreter")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", "29517",
         str(script), str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_0000004"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["s:step"] == 4
    weights = load_tensors(ckpt / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert (out / "samples" / "latest.png").is_file()
    if family == "vae":  # rank 0 alone scores the test split at the end
        assert json.loads((out / "metrics.json").read_text())["iw_k"] == 5
