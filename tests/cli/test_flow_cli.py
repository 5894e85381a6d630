"""The flow family through the CLI and the pipeline façade: sampling settings and their NFE, editing and
inpainting, and the refusals (a GAN asked for --steps, --guidance on an unconditional model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.pipelines import Pipeline

TINY = ["--data", "digits", "--batch-size", "8", "--width", "8", "--blocks-per-level", "1", "--levels", "2",
        "--steps", "3", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-cli")
    out = {}
    for name, extra in (("flow", []), ("cflow", ["--conditional"])):
        assert main(["train", "flow", *TINY, *extra, "--out", str(root / name)]) == 0
        out[name] = root / name
    assert main(["train", "gan", "--data", "digits", "--batch-size", "8", "--g-width", "8", "--d-width", "8",
                 "--latent-dim", "8", "--steps", "2", "--no-progress", "--no-tensorboard", "--out", str(root / "gan")]) == 0
    out["gan"] = root / "gan"
    sketch = np.zeros((40, 40), dtype=np.uint8)
    sketch[8:32, 18:22] = 255  # a stroke: a rough "1"
    Image.fromarray(sketch).save(root / "sketch.png")
    out["sketch"] = root / "sketch.png"
    return out


def _provenance(path: Path) -> dict:
    with Image.open(path) as im:
        return json.loads(im.info["atelier:provenance"])


def test_sample_prints_and_records_the_network_evaluations(runs, tmp_path, capsys) -> None:
    out = tmp_path / "g.png"
    assert main(["sample", str(runs["flow"]), "--n", "4", "--steps", "3", "--sampler", "heun", "--out", str(out),
                 "--quiet"]) == 0
    assert "(6 network evaluations per sample)" in capsys.readouterr().out
    record = _provenance(out)
    assert (record["steps"], record["sampler"], record["nfe"]) == (3, "heun", 6)
    out2 = tmp_path / "c.png"
    assert main(["sample", str(runs["cflow"]), "--n", "4", "--steps", "2", "--guidance", "2", "--label", "7",
                 "--out", str(out2), "--quiet"]) == 0
    assert "(4 network evaluations per sample)" in capsys.readouterr().out  # guided: two passes a step
    assert _provenance(out2)["guidance"] == 2.0


@pytest.mark.parametrize("args,message", [
    (["--steps", "4"], "steps applies to flow models"),
    (["--sampler", "euler"], "sampler applies to flow models"),
])
def test_gans_refuse_flow_settings(runs, tmp_path, capsys, args, message) -> None:
    assert main(["sample", str(runs["gan"]), "--n", "2", *args, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_flow_settings_are_checked(runs, tmp_path, capsys) -> None:
    for args, message in ((["--guidance", "2"], "unconditional"), (["--sampler", "rk4"], "unknown sampler"),
                          (["--steps", "0"], "steps")):
        assert main(["sample", str(runs["flow"]), "--n", "2", *args, "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err


def test_explore_edit_and_inpaint_write_grids(runs, tmp_path, capsys) -> None:
    edit = tmp_path / "edit.png"
    assert main(["explore", "edit", str(runs["cflow"]), "--image", str(runs["sketch"]), "--image", str(runs["sketch"]),
                 "--strength", "0,0.5,1", "--label", "1", "--steps", "2", "--out", str(edit)]) == 0
    assert "edited 2 image(s)" in capsys.readouterr().out
    with Image.open(edit) as im:
        assert 1.8 * im.size[1] < im.size[0] < 2.2 * im.size[1]  # 2 rows of 4 (the input, 3 strengths)
    fill = tmp_path / "fill.png"
    assert main(["explore", "inpaint", str(runs["flow"]), "--image", str(runs["sketch"]), "--box", "0.25,0.25,0.75,0.75",
                 "--n", "2", "--steps", "2", "--out", str(fill)]) == 0
    assert "filled" in capsys.readouterr().out and fill.is_file()
    for args, message in ((["--box", "0.5,0.5,0.2,0.9"], "--box"), (["--box", "0,0,1"], "--box")):
        assert main(["explore", "inpaint", str(runs["flow"]), "--image", str(runs["sketch"]), *args,
                     "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    assert main(["explore", "edit", str(runs["gan"]), "--image", str(runs["sketch"]), "--out", str(tmp_path / "x.png")]) == 2
    assert "edit needs a flow model" in capsys.readouterr().err
    assert main(["explore", "edit", str(runs["flow"]), "--image", str(tmp_path / "missing.png"),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_pipeline_edit_and_inpaint(runs) -> None:
    pipe = Pipeline.load(runs["cflow"])
    assert {"sample", "interpolate", "edit", "inpaint"} <= set(pipe.operations)
    images = pipe.sample(3, seed=0, steps=2)
    assert images.dtype == torch.uint8 and pipe.nfe == 2
    assert torch.equal(pipe.edit(images, strength=0.0), images)
    edited = pipe.edit(images, strength=0.7, labels="3", steps=2, guidance=2.0)
    assert edited.shape == images.shape and pipe.nfe == 4
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., :14, :] = 1
    filled = pipe.inpaint(images, mask, labels=[0, 1, 2], steps=2)
    assert torch.equal(filled[..., 14:, :], images[..., 14:, :])  # the kept half, exactly
    with pytest.raises(ValueError, match="not a class"):
        pipe.edit(images, strength=0.5, labels="unicorn")
    frames = pipe.interpolate(classes=(1, 7), steps=4)
    assert frames.shape == (4, 1, 28, 28)


def test_reflow_writes_a_student_that_samples_in_two_steps(runs, tmp_path, capsys) -> None:
    out = tmp_path / "student"
    assert main(["reflow", str(runs["cflow"]), "--out", str(out), "--pairs", "16", "--teacher-steps", "2",
                 "--steps", "3", "--batch-size", "8", "--guidance", "2", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 3 and report["student"] == "euler, 2 steps"
    saved = json.loads((out / "reflow.json").read_text())
    assert saved["config"]["guidance"] == 2.0 and saved["config"]["pairs"] == 16
    pipe = Pipeline.load(out)
    images = pipe.sample(10, seed=0)
    assert images.shape == (10, 1, 28, 28) and pipe.nfe == 2  # guidance is baked in: one pass a step
    # an existing folder is kept unless --overwrite; a GAN is refused by name
    assert main(["reflow", str(runs["cflow"]), "--out", str(out), "--pairs", "4", "--steps", "1", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "reflow.json").is_file()
    assert main(["reflow", str(runs["gan"]), "--out", str(tmp_path / "x"), "--pairs", "4", "--steps", "1",
                 "--quiet"]) == 2
    assert "needs a flow model" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_traversal_of_a_flow_model_is_refused_by_name(runs, tmp_path, capsys) -> None:
    assert main(["explore", "traverse", str(runs["flow"]), "--out", str(tmp_path / "t.png")]) == 2
    assert "has none" in capsys.readouterr().err and not (tmp_path / "t.png").exists()


def test_a_preset_made_for_32_px_trains_at_32_px_unless_told(tmp_path) -> None:
    """flow-cifar's four levels need a side divisible by 8: the data follows the preset (it used to load
    digits at 28 px and stop), and an explicit --resolution still wins."""
    small = ["--data", "digits", "--batch-size", "4", "--width", "8", "--blocks-per-level", "1", "--steps", "1",
             "--no-progress", "--no-tensorboard"]
    assert main(["train", "flow", "--model", "flow-cifar", *small, "--out", str(tmp_path / "a")]) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["data"]["resolution"] == saved["model"]["config"]["resolution"] == 32
    assert main(["train", "flow", "--model", "flow-cifar", *small, "--resolution", "40", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"]["resolution"] == 40
