"""``atelier sample`` writes PNGs carrying the allowlisted provenance record: the weights' hash, the seed and the
settings, never the run's path."""

from __future__ import annotations

import hashlib

import pytest
import torch

from atelier.cli import main
from atelier.data.provenance import png_chunks, read_provenance
from atelier.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("conditional", [False, True], ids=["grid", "folder"])
def test_sample_outputs_carry_the_provenance_record(tmp_path, conditional) -> None:
    torch.manual_seed(0)
    run = tmp_path / "secret-user-runs" / "gan"
    create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=3 if conditional else 0).save_pretrained(run)
    sha = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    out = tmp_path / ("samples" if conditional else "samples.png")
    assert main(["sample", str(run), "--n", "4", "--seed", "7", "--out", str(out), "--quiet"]) == 0
    files = sorted(out.rglob("*.png")) if conditional else [out]
    assert len(files) == 4 if conditional else 1
    for path in files:
        data = path.read_bytes()
        record = read_provenance(data)
        expected = {"software", "version", "operation", "model_family", "weights_sha256", "seed", "n"}
        if conditional:
            expected |= {"index", "label"}
        assert set(record) == expected
        assert record["weights_sha256"] == sha and record["seed"] == 7 and record["n"] == 4
        assert record["model_family"] == "gan" and record["operation"] == "sample"
        assert b"secret-user-runs" not in data and str(tmp_path).encode() not in data
        assert {kind for kind, _ in png_chunks(data)} == {"IHDR", "tEXt", "IDAT", "IEND"}
    if conditional:
        assert sorted(read_provenance(p.read_bytes())["index"] for p in files) == [0, 1, 2, 3]
