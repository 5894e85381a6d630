"""``atelier protect``: keys, sealing, rotation, signing and verification through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.cli import main
from atelier.models.registry import create_model
from atelier.pipelines import Pipeline
from atelier.protect.envelope import Key

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def model(tmp_path) -> Path:
    torch.manual_seed(0)
    return create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(tmp_path / "model")


def test_encrypt_rotate_decrypt_round_trip(tmp_path, model, capsys) -> None:
    assert main(["protect", "keygen", str(tmp_path / "k1")]) == 0
    assert main(["protect", "keygen", str(tmp_path / "k2")]) == 0
    assert (tmp_path / "k1").stat().st_mode & 0o777 == 0o600
    assert main(["protect", "keygen", str(tmp_path / "k1")]) == 2  # never overwritten
    assert main(["protect", "encrypt", str(model), "--out", str(tmp_path / "sealed"), "--key-file",
                 str(tmp_path / "k1")]) == 0
    assert main(["protect", "inspect", str(tmp_path / "sealed")]) == 0
    assert Key.from_file(tmp_path / "k1").key_id() in capsys.readouterr().out
    assert main(["protect", "rotate", str(tmp_path / "sealed"), "--key-file", str(tmp_path / "k1"),
                 "--new-key-file", str(tmp_path / "k2")]) == 0
    assert main(["protect", "decrypt", str(tmp_path / "sealed"), "--out", str(tmp_path / "plain"), "--key-file",
                 str(tmp_path / "k1")]) == 2  # the old key no longer opens it
    assert "not with the key given" in capsys.readouterr().err
    assert main(["protect", "decrypt", str(tmp_path / "sealed"), "--out", str(tmp_path / "plain"), "--key-file",
                 str(tmp_path / "k2")]) == 0
    assert (tmp_path / "plain" / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    sealed = Pipeline.load(tmp_path / "sealed", key=Key.from_file(tmp_path / "k2"))
    assert torch.equal(sealed.sample(3, seed=1), Pipeline.load(model).sample(3, seed=1))


def test_passphrases_come_from_the_environment_or_a_terminal(tmp_path, model, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MODEL_PASS", "a long enough passphrase")
    assert main(["protect", "encrypt", str(model), "--out", str(tmp_path / "s"), "--passphrase-env", "MODEL_PASS",
                 "--kdf", "scrypt"]) == 0
    assert main(["protect", "inspect", str(tmp_path / "s")]) == 0 and "scrypt" in capsys.readouterr().out
    # --passphrase with no terminal (a script): a clear error, not a hang
    assert main(["protect", "decrypt", str(tmp_path / "s"), "--out", str(tmp_path / "p"), "--passphrase"]) == 2
    assert "passphrase-env" in capsys.readouterr().err
    assert main(["protect", "decrypt", str(tmp_path / "s"), "--out", str(tmp_path / "p"), "--key-file",
                 str(tmp_path / "s" / "model.atlenc"), "--passphrase-env", "MODEL_PASS"]) == 2  # two keys given
    assert main(["protect", "decrypt", str(tmp_path / "s"), "--out", str(tmp_path / "p")]) == 2
    assert "no key" in capsys.readouterr().err


def test_sign_and_verify(tmp_path, model, capsys) -> None:
    assert main(["protect", "keygen", "--signing", str(tmp_path / "signer")]) == 0
    assert main(["protect", "keygen", "--signing", str(tmp_path / "other")]) == 0
    assert main(["protect", "sign", str(model), "--key", str(tmp_path / "signer"), "--signer", "alice"]) == 0
    assert main(["protect", "verify", str(model), "--trusted", str(tmp_path / "signer.pub")]) == 0
    assert "alice" in capsys.readouterr().out
    assert main(["protect", "verify", str(model), "--trusted", str(tmp_path / "other.pub")]) == 2
    assert "untrusted" in capsys.readouterr().err
    with open(model / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    assert main(["protect", "verify", str(model), "--trusted", str(tmp_path / "signer.pub")]) == 2
    assert "file changed: model.safetensors" in capsys.readouterr().err


def test_audit_data_reports_on_a_trained_run_and_needs_a_sealed_ones_key(tmp_path, family_args, capsys) -> None:
    import json

    run = tmp_path / "run"
    assert main(["train", "gan", *family_args("gan"), "--out", str(run), "--steps", "2", "--no-progress",
                 "--no-tensorboard"]) == 0
    capsys.readouterr()
    fast = ["--n", "40", "--samples", "40", "--bootstrap", "50"]
    assert main(["protect", "audit-data", str(run), *fast]) == 0
    table = capsys.readouterr().out
    assert "discriminator logit" in table and "40 training vs 40 held-out (of 1438 and 359)" in table
    assert "AUC" in table and "near-copies" in table and "disjoint by split (digits: train vs test)" in table
    assert table.strip().splitlines()[-1].startswith(("advantage", "WARNING"))  # the verdict comes last
    path = tmp_path / "audit.json"
    assert main(["protect", "audit-data", str(run), *fast, "--json", "--out", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(path.read_text())
    assert printed["membership"]["n_members"] == 40 and printed["provenance"]["sources"]["members"] == "digits:train"
    assert main(["protect", "keygen", str(tmp_path / "key")]) == 0
    assert main(["protect", "encrypt", str(run), "--out", str(tmp_path / "sealed"), "--key-file",
                 str(tmp_path / "key")]) == 0
    capsys.readouterr()
    assert main(["protect", "audit-data", str(tmp_path / "sealed"), *fast]) == 2
    assert "encrypted" in capsys.readouterr().err
    assert main(["protect", "audit-data", str(tmp_path / "sealed"), *fast, "--key-file", str(tmp_path / "key")]) == 0
    assert capsys.readouterr().out == table  # the same model, data and seed: the same report
    assert main(["protect", "audit-data", str(run), "--n", "1"]) == 2
    assert "--n" in capsys.readouterr().err
    assert main(["protect", "audit-data", str(run), "--split", "all", *fast]) == 2
    assert "unseen" in capsys.readouterr().err
