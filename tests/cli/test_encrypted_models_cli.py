"""Commands that load a model open an encrypted one with its key, in memory, and say how when none is given."""

from __future__ import annotations

import pytest
import torch

from atelier.cli import main
from atelier.data.images import read_image
from atelier.models.registry import create_model
from atelier.protect.envelope import KEY_ENV, Key, seal_model_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def sealed(tmp_path):
    torch.manual_seed(0)
    plain = create_model("dcgan", g_width=8, d_width=8, latent_dim=8).save_pretrained(tmp_path / "plain")
    key = Key.generate()
    (tmp_path / "model.key").write_text(key.to_text())
    seal_model_dir(plain, tmp_path / "sealed", key)
    return plain, tmp_path / "sealed", tmp_path / "model.key"


def test_sample_and_explore_open_an_encrypted_model_with_its_key(sealed, tmp_path, capsys, monkeypatch) -> None:
    plain, model, key_file = sealed
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["sample", str(model), "--n", "4", "--out", str(tmp_path / "no-key.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "encrypted" in err and "--key-file" in err and not (tmp_path / "no-key.png").exists()
    assert main(["sample", str(model), "--n", "4", "--out", str(tmp_path / "a.png"), "--quiet",
                 "--key-file", str(key_file)]) == 0
    assert main(["sample", str(plain), "--n", "4", "--out", str(tmp_path / "b.png"), "--quiet"]) == 0
    assert torch.equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png"))  # the same weights
    monkeypatch.setenv(KEY_ENV, key_file.read_text().strip())
    assert main(["explore", "interpolate", str(model), "--seeds", "1", "2", "--out", str(tmp_path / "i.png")]) == 0
    assert read_image(tmp_path / "i.png").shape[0] in (1, 3)
    monkeypatch.setenv("WRONG_KEY", Key.generate().to_text())
    assert main(["sample", str(model), "--n", "4", "--out", str(tmp_path / "c.png"), "--quiet",
                 "--key-env", "WRONG_KEY"]) == 2
    assert not (tmp_path / "c.png").exists()


def test_error_messages_escape_control_characters(capsys) -> None:
    assert main(["sample", "run\r\x1b[2Jx", "--n", "1", "--out", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and "run\\r\\x1b[2Jx': no such run" in err
