"""Safe loading: safetensors headers are validated before reading, and pickles are refused unopened."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

from atelier.io import FileFormatError, MAX_SAFETENSORS_TENSORS, load_tensors, save_tensors
from atelier.models.registry import create_model


def _raw(header: dict, body: bytes) -> bytes:
    data = json.dumps(header).encode()
    return struct.pack("<Q", len(data)) + data + body


def test_a_valid_file_loads_whatever_its_header_length(tmp_path) -> None:
    # header lengths whose first byte is 0x80 (a pickle's protocol opcode) are still safetensors
    for pad in range(0, 700, 37):
        tensors = {"w" + "x" * pad: torch.arange(6, dtype=torch.float32).reshape(2, 3)}
        save_tensors(tensors, tmp_path / "ok.safetensors")
        assert torch.equal(load_tensors(tmp_path / "ok.safetensors")["w" + "x" * pad], tensors["w" + "x" * pad])


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


@pytest.mark.parametrize("maker", ["pickle", "torch.save"])
def test_a_pickle_disguised_as_weights_is_refused_without_unpickling(tmp_path, maker) -> None:
    path = tmp_path / "model.safetensors"
    if maker == "pickle":
        path.write_bytes(pickle.dumps({"w": Boom()}))
    else:
        torch.save({"w": torch.zeros(2), "boom": Boom()}, path)
    with pytest.raises(FileFormatError, match="refused without loading"):
        load_tensors(path)


@pytest.mark.parametrize("header,body,message", [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "outside the file"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16, "declares shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"a": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "malformed"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "malformed"),
    ({"a": "nonsense"}, b"", "malformed"),
])
def test_inconsistent_headers_are_refused_before_reading(tmp_path, header, body, message) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_raw(header, body))
    with pytest.raises(FileFormatError, match=message):
        load_tensors(path)


def test_a_huge_header_or_tensor_count_is_refused(tmp_path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(FileFormatError, match="header declares"):
        load_tensors(path)
    many = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(MAX_SAFETENSORS_TENSORS + 1)}
    path.write_bytes(_raw(many, b""))
    with pytest.raises(FileFormatError, match="tensors"):
        load_tensors(path)


def test_a_latest_pointer_leading_out_of_the_run_is_not_followed(tmp_path) -> None:
    from atelier.models.pretrained import latest_checkpoint

    torch.manual_seed(0)
    outside = create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(tmp_path / "outside" / "evil")
    run = tmp_path / "run" / "checkpoints"
    inside = create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(run / "step_0000001")
    for pointer in ("../../outside/evil", str(outside), "..", "step_0000001/../../../outside/evil"):
        (run / "latest").write_text(pointer)
        assert latest_checkpoint(tmp_path / "run") is None, pointer
    (run / "latest").write_text("step_0000001\n")
    assert latest_checkpoint(tmp_path / "run") == inside
