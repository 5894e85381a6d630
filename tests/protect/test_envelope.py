"""Encrypted envelopes: round trips, keys, rotation, the documented test vector, and tampering."""

from __future__ import annotations

import hashlib
import os
import struct
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atelier.protect.envelope import (ENVELOPE_NAME, SLOT_SIZE, IntegrityError, Key, WrongKeyError, inspect_envelope,
                                      open_envelope, rotate, seal, seal_model_dir)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VECTOR = Path(__file__).resolve().parents[2] / "docs" / "envelope.md"


@pytest.fixture(scope="module")
def keys() -> tuple[Key, Key]:
    return Key.generate(), Key.generate()


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, keys) -> tuple[Path, bytes]:
    """A 5-chunk envelope (64-byte chunks, the last one short)."""
    path = tmp_path_factory.mktemp("env") / "m.atlenc"
    plaintext = os.urandom(300)
    seal(plaintext, keys[0], path, chunk_size=64)
    return path, plaintext


@pytest.mark.parametrize("size", [0, 1, 64, 65, 1000])
def test_round_trip_of_any_length(tmp_path, keys, size) -> None:
    data = os.urandom(size)
    seal(data, keys[0], tmp_path / "x", chunk_size=64)
    assert open_envelope(tmp_path / "x", keys[0]) == data
    assert size < 16 or data not in (tmp_path / "x").read_bytes()  # the body is ciphertext


@pytest.mark.parametrize("kdf", ["argon2id", "scrypt"])
def test_passphrases_through_argon2id_and_scrypt(tmp_path, kdf) -> None:
    key = Key(passphrase=b"correct horse battery", kdf=kdf)
    seal(b"weights", key, tmp_path / "x")
    assert open_envelope(tmp_path / "x", Key(passphrase=b"correct horse battery")) == b"weights"
    assert inspect_envelope(tmp_path / "x").kdf == kdf
    with pytest.raises(WrongKeyError, match="does not open"):
        open_envelope(tmp_path / "x", Key(passphrase=b"wrong horse battery"))
    with pytest.raises(WrongKeyError, match="passphrase"):
        open_envelope(tmp_path / "x", Key.generate())


def test_a_wrong_key_is_refused_by_name(sealed, keys) -> None:
    with pytest.raises(WrongKeyError, match=keys[0].key_id()):
        open_envelope(sealed[0], keys[1])


def test_keys_from_text_files_and_the_environment(tmp_path, monkeypatch) -> None:
    key = Key.generate()
    assert Key.from_text(key.to_text()) == key and Key.from_text(key.raw.hex()) == key
    (tmp_path / "k").write_text(key.to_text() + "\n")
    assert Key.from_file(tmp_path / "k") == key
    monkeypatch.setenv("MY_KEY", key.to_text())
    assert Key.from_env("MY_KEY") == key
    for bad in ("", "zz" * 32, "abc", key.to_text()[:-4]):
        with pytest.raises(ValueError, match="256-bit"):
            Key.from_text(bad)
    assert key.to_text() not in repr(key) and "raw" in repr(key)


def test_rotation_moves_the_file_to_the_new_key(tmp_path, keys) -> None:
    path = tmp_path / "r"
    data = os.urandom(1000)
    seal(data, keys[0], path, chunk_size=100)
    body = path.read_bytes()[-1100:]
    rotate(path, keys[0], keys[1])
    assert open_envelope(path, keys[1]) == data
    with pytest.raises(WrongKeyError):
        open_envelope(path, keys[0])
    assert path.read_bytes()[-1100:] == body  # the weights were not re-encrypted
    with pytest.raises(WrongKeyError):
        rotate(path, keys[0], keys[1])  # the old key cannot rotate it any more


def test_an_interrupted_rotation_is_refused_then_finished(tmp_path, keys) -> None:
    path = tmp_path / "i"
    seal(b"data" * 50, keys[0], path)
    good = path.read_bytes()
    rotate(path, keys[0], keys[1])
    rotated = bytearray(path.read_bytes())
    # a crash after the switch, before the old slot was zeroed: both slots hold a wrap
    h = struct.unpack(">I", good[12:16])[0]
    slots = 16 + h
    rotated[slots:slots + SLOT_SIZE] = good[slots:slots + SLOT_SIZE]
    path.write_bytes(bytes(rotated))
    with pytest.raises(IntegrityError, match="interrupted"):
        open_envelope(path, keys[1])
    rotate(path, keys[0], keys[1])  # run again: finishes
    assert open_envelope(path, keys[1]) == b"data" * 50


def test_rotating_a_large_file_takes_the_time_of_a_small_one(tmp_path, keys) -> None:
    path = tmp_path / "big"
    seal(os.urandom(64 << 20), keys[0], path)  # 64 MiB (the 1 GB case: benchmarks/protect_tamper.py)
    start = time.perf_counter()
    rotate(path, keys[0], keys[1])
    assert time.perf_counter() - start < 1.0


def test_the_documented_test_vector(tmp_path) -> None:
    text = VECTOR.read_text()
    fields = dict(line.split(": ", 1) for line in text.splitlines() if line.startswith("    ") and ": " in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    path = tmp_path / "vector.atlenc"
    plaintext = bytes.fromhex(fields["plaintext (hex)"])
    seal(plaintext, Key(raw=bytes.fromhex(fields["KEK (hex)"])), path, chunk_size=int(fields["chunk size"]),
         data_key=bytes.fromhex(fields["data key (hex)"]), file_id=fields["file id"],
         wrap_nonce=bytes.fromhex(fields["wrap nonce (hex)"]))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fields["envelope SHA-256"]
    assert path.read_bytes().hex() == "".join(fields["envelope (hex)"].split())


# -- tampering ----------------------------------------------------------------------------------------


def _mutations():
    flip = st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(1, 255))
    cut = st.tuples(st.just("truncate"), st.integers(0, 10**9), st.just(0))
    grow = st.tuples(st.just("extend"), st.integers(1, 64), st.just(0))
    swap = st.tuples(st.just("swap"), st.integers(0, 3), st.integers(1, 4))
    return st.one_of(flip, cut, grow, swap)


def mutate(data: bytes, mutation, chunk: int = 64 + 16) -> bytes:
    kind, a, b = mutation
    out = bytearray(data)
    if kind == "flip":
        out[a % len(out)] ^= b
    elif kind == "truncate":
        del out[a % len(out):]
    elif kind == "extend":
        out += os.urandom(a)
    else:  # swap two of the (equal-sized) leading chunks of the body
        h = struct.unpack(">I", data[12:16])[0]
        body = 16 + h + 2 * SLOT_SIZE
        i, j = a, (a + b) % 4
        if i == j:
            j = (i + 1) % 4
        ci, cj = out[body + i * chunk: body + (i + 1) * chunk], out[body + j * chunk: body + (j + 1) * chunk]
        out[body + i * chunk: body + (i + 1) * chunk], out[body + j * chunk: body + (j + 1) * chunk] = cj, ci
    return bytes(out)


@given(mutation=_mutations())
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_mutation_ends_in_one_integrity_error(sealed, keys, tmp_path_factory, mutation) -> None:
    path, plaintext = sealed
    bad = tmp_path_factory.mktemp("bad") / "m.atlenc"
    bad.write_bytes(mutate(path.read_bytes(), mutation))
    with pytest.raises(IntegrityError):
        open_envelope(bad, keys[0])


def test_a_sealed_model_loads_only_in_memory(tmp_path, keys, monkeypatch) -> None:
    """After a full load of an encrypted model, no plaintext of its weights is on disk: not beside it, not
    in the temporary directory (a fresh one for this test, so whatever is in it was written by the load),
    not in ATELIER_HOME."""
    import tempfile

    fresh_tmp = tmp_path / "tmp"
    fresh_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(fresh_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh_tmp))

    from atelier.models.pretrained import KeyRequiredError
    from atelier.models.registry import create_model
    from atelier.pipelines import Pipeline

    plain = tmp_path / "plain"
    model = create_model("dcgan", g_width=8, d_width=8, latent_dim=8)
    model.save_pretrained(plain)
    weights = (plain / "model.safetensors").read_bytes()
    marker = weights[-4096:]  # tensor data, not the header
    seal_model_dir(plain, tmp_path / "sealed", keys[0])
    (plain / "model.safetensors").unlink()
    (plain / "config.json").unlink()
    started = time.time()
    with pytest.raises(KeyRequiredError, match="encrypted"):
        Pipeline.load(tmp_path / "sealed")
    pipe = Pipeline.load(tmp_path / "sealed", key=keys[0])
    assert torch.equal(pipe.sample(2, seed=0), Pipeline.load(tmp_path / "sealed", key=keys[0]).sample(2, seed=0))
    assert sorted(p.name for p in (tmp_path / "sealed").iterdir()) == [ENVELOPE_NAME]
    scanned = 0
    for root in {Path(tempfile.gettempdir()), tmp_path, Path(os.environ.get("ATELIER_HOME", tmp_path))}:
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                if p.stat().st_mtime >= started - 1:
                    assert marker not in p.read_bytes(), f"plaintext weights found in {p}"
                    scanned += 1
    assert scanned >= 0


def test_a_sealed_model_with_a_damaged_magic_is_a_damaged_envelope(tmp_path, keys) -> None:
    from atelier.models.registry import create_model
    from atelier.pipelines import Pipeline

    plain = create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(tmp_path / "plain")
    envelope = seal_model_dir(plain, tmp_path / "sealed", keys[0])
    data = bytearray(envelope.read_bytes())
    data[0] ^= 0xFF
    envelope.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="not an Atelier envelope"):
        Pipeline.load(tmp_path / "sealed", key=keys[0])
