"""Every family under torchrun with DistributedDataParallel (gloo, 2 CPU processes).

Each rank trains through :func:`atelier.train.train_model`; a hook saves each rank's final weights
beside the run, and a Python audit hook records every file each rank opened for writing. The ranks
must end with identical weights (DDP averaged their gradients) and rank 1 must have written nothing.

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

import numpy as np
import pytest
import torch
from PIL import Image

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

import torch
from safetensors.torch import save_file
from atelier.train import train_model
from atelier.train.run import family_train_config
from atelier.models.registry import get_family


class SaveWeights:
    def __call__(self, trainer, step):
        return None

    def on_end(self, trainer):
        state = {k: v.detach().cpu().contiguous().clone() for k, v in trainer.step_fn.model.state_dict().items()}
        save_file(state, str(side / f"rank{rank}.safetensors"))


spec = json.loads(sys.argv[3])
family = get_family(spec["family"])
train = family_train_config(spec["family"], batch_size=spec["batch_size"], steps=4, seed=0, tensorboard=False,
                            progress=False, device="cpu", precision="fp32", checkpoint_every=2, sample_every=2,
                            log_every=1, **spec.get("train", {}))
train_model(spec["model"], data=family.data_config(**spec["data"]), train=train, out=run,
            model_kwargs=spec["model_kwargs"], conditional=spec.get("conditional", False), hooks=[SaveWeights()])
(side / f"writes_rank{rank}.json").write_text(json.dumps(written))
"""


def _photos(folder: Path, n: int, size: int, seed: int, colour: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3) if colour else (size, size), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


def spec(family: str, root: Path) -> dict:
    """The smallest torchrun run of each family; a new family adds its own here."""
    specs = {
        "gan": dict(model="dcgan", batch_size=8, data={"name": "digits"}, conditional=True,
                    model_kwargs=dict(g_width=8, d_width=8, latent_dim=16)),
        "vae": dict(model="vae", batch_size=8, data={"name": "digits"}, conditional=True,
                    train=dict(iw_samples=5, iw_images=20),
                    model_kwargs=dict(width=8, hidden=16, latent_dim=4, likelihood="gaussian")),
        "cyclegan": dict(model="cyclegan", batch_size=2,
                         data={"domain_a": str(_photos(root / "a", 8, 16, 0, colour=False)),
                               "domain_b": str(_photos(root / "b", 8, 16, 1)), "resolution": 16},
                         model_kwargs=dict(g_width=4, d_width=4, n_blocks=1)),
        "fast-style": dict(model="transformer-net", batch_size=2,
                           data={"style": [str(_photos(root / "style", 1, 32, 2) / "00.png")],
                                 "content_dir": str(_photos(root / "content", 8, 40, 3)), "size": 32},
                           train={"fallback": True, "download": False},
                           model_kwargs=dict(width=4, n_res_blocks=1)),
    }
    return {"family": family, **specs[family]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("family", list_families())
def test_torchrun_two_processes(tmp_path: Path, family: str) -> None:
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
         str(script), str(out), str(side), json.dumps(spec(family, tmp_path / "data"))],
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
        assert json.loads((out / "metrics.json").read_text())["iw_k"] == 5
