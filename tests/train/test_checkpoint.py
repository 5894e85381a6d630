"""Checkpoint files: tensor/JSON splitting, atomic writes, the ``latest`` pointer, pruning, corruption."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from atelier import io as atelier_io
from atelier.io import atomic_write_bytes, load_tensors, save_tensors
from atelier.train.checkpoint import (
    join_tensors,
    load_train_state,
    prune_checkpoints,
    save_checkpoint,
    set_latest,
    split_tensors,
)
from atelier.models.pretrained import latest_checkpoint


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def _adam_step(net: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
    opt.zero_grad()
    nn.functional.mse_loss(net(x), y).backward()
    opt.step()


def _write_state(tmp_path: Path, state: dict) -> dict:
    """split -> (safetensors file, JSON text) -> join, as a checkpoint does it."""
    tensors: dict[str, torch.Tensor] = {}
    plain = split_tensors(state, "state", tensors)
    text = json.dumps(plain)  # must be plain JSON
    save_tensors(tensors, tmp_path / "t.safetensors")
    return join_tensors(json.loads(text), load_tensors(tmp_path / "t.safetensors"))


@pytest.mark.parametrize("fused", [False, True])
def test_split_join_round_trips_an_adam_state(tmp_path: Path, fused: bool) -> None:
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=fused)  # the trainer uses fused
    for seed in range(3):
        _adam_step(net, opt, seed)
    snapshot = copy.deepcopy(net)
    restored = _write_state(tmp_path, opt.state_dict())
    original = opt.state_dict()
    assert set(restored["state"]) == set(original["state"]) == {0, 1, 2, 3}  # int keys come back as ints
    # JSON has no tuples: betas come back as a list, which Adam accepts; everything else is equal
    assert [{**g, "betas": tuple(g["betas"])} for g in restored["param_groups"]] == original["param_groups"]

    fresh = torch.optim.Adam(snapshot.parameters(), lr=1.0, fused=fused)  # hyper-parameters come from the state
    fresh.load_state_dict(restored)
    for seed in (10, 11):
        _adam_step(net, opt, seed)
        _adam_step(snapshot, fresh, seed)
    for a, b in zip(net.parameters(), snapshot.parameters()):
        assert torch.equal(a, b)
    # and the round trip really mattered: a fresh optimiser without the moments ends elsewhere
    other = copy.deepcopy(snapshot)
    naive = torch.optim.Adam(other.parameters(), lr=1e-2, betas=(0.5, 0.999))
    _adam_step(other, naive, 12)
    _adam_step(snapshot, fresh, 12)
    assert not all(torch.equal(a, b) for a, b in zip(other.parameters(), snapshot.parameters()))


def test_split_join_nested_values() -> None:
    state = {"step": 3, "lr": 0.5, "name": "x", "none": None, "flag": True, 7: [torch.arange(3), (1, 2)],
             "nested": {"t": torch.ones(2, 2)}}
    tensors: dict[str, torch.Tensor] = {}
    plain = split_tensors(state, "s", tensors)
    assert len(tensors) == 2
    back = join_tensors(json.loads(json.dumps(plain)), tensors)
    assert back["step"] == 3 and back["lr"] == 0.5 and back["name"] == "x" and back["none"] is None
    assert back["flag"] is True
    assert torch.equal(back[7][0], torch.arange(3)) and back[7][1] == [1, 2]
    assert torch.equal(back["nested"]["t"], torch.ones(2, 2))
    with pytest.raises(TypeError, match="object"):
        split_tensors({"bad": object()}, "s", {})


def _save(directory: Path, step: int) -> Path:
    return save_checkpoint(
        directory,
        model_state={"w": torch.full((2, 3), float(step)), "b": torch.arange(4)},
        train_state={"step": step, "rng": torch.get_rng_state(), "opt": {0: {"m": torch.ones(3) * step}}},
        config={"model": {"name": "toy"}, "step": step},
    )


def test_save_checkpoint_writes_four_files_and_no_temporaries(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    path = _save(checkpoints / "step_0000001", 1)
    assert path == checkpoints / "step_0000001"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "model.safetensors", "state.json", "state.safetensors"
    ]
    assert [p.name for p in checkpoints.iterdir()] == ["step_0000001"]
    model = load_tensors(path / "model.safetensors")
    assert torch.equal(model["w"], torch.full((2, 3), 1.0)) and torch.equal(model["b"], torch.arange(4))
    state = load_train_state(path)
    assert state["step"] == 1 and torch.equal(state["opt"][0]["m"], torch.ones(3))
    assert torch.equal(state["rng"], torch.get_rng_state())
    assert json.loads((path / "config.json").read_text()) == {"model": {"name": "toy"}, "step": 1}
    # writing the same checkpoint again replaces it, still without leftovers
    _save(path, 2)
    assert load_train_state(path)["step"] == 2
    assert [p.name for p in checkpoints.iterdir()] == ["step_0000001"]
    assert not list(tmp_path.rglob(".*"))


def test_save_checkpoint_failure_leaves_no_temporary_directory(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path / "step_0000001", 1)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atelier_io, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "step_0000001", 2)
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000001"]
    assert load_train_state(tmp_path / "step_0000001")["step"] == 1  # the old one is untouched


def test_atomic_write_failure_keeps_old_content_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "file.json"
    atomic_write_bytes(target, b"old")
    assert target.read_bytes() == b"old"

    def failing_replace(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(target, b"new content")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_atomic_write_creates_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x"


def test_latest_checkpoint_follows_the_pointer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    assert latest_checkpoint(run) is None
    for step in (1, 2, 3):
        _save(checkpoints / f"step_{step:07d}", step)
    assert latest_checkpoint(run) is None  # no pointer yet
    set_latest(checkpoints, "step_0000002")  # not the newest by name: the pointer decides
    assert latest_checkpoint(run) == checkpoints / "step_0000002"
    assert latest_checkpoint(checkpoints) == checkpoints / "step_0000002"
    assert latest_checkpoint(checkpoints / "step_0000003") == checkpoints / "step_0000003"  # a checkpoint itself
    assert (checkpoints / "latest").read_text().strip() == "step_0000002"
    set_latest(checkpoints, "step_0000009")  # dangling pointer
    assert latest_checkpoint(run) is None


def test_prune_keeps_the_newest_n(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20, 25):
        _save(tmp_path / f"step_{step:07d}", step)
    (tmp_path / "latest").write_text("step_0000025\n")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_0000020", "step_0000025"]
    prune_checkpoints(tmp_path, keep=1, protect={"step_0000020"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_0000020", "step_0000025"]
    prune_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_0000025"]


@pytest.mark.parametrize("content", [b"", b"this is not a safetensors file", b"\xff" * 8 + b"{" * 40])
def test_corrupt_model_file_raises_value_error_naming_it(tmp_path: Path, content: bytes) -> None:
    from atelier.models import GAN
    from atelier.models.registry import create_model

    directory = create_model("dcgan", g_width=8, d_width=8, latent_dim=8).save_pretrained(tmp_path / "m")
    bad = directory / "model.safetensors"
    bad.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_tensors(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(ValueError) as info:
        GAN.from_pretrained(directory)
    assert str(bad) in str(info.value)


def test_truncated_model_file_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_tensors({"w": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError) as info:
        load_tensors(path)
    assert str(path) in str(info.value)


def test_missing_and_unreadable_training_state(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_tensors(tmp_path / "model.safetensors")
    path = _save(tmp_path / "step_0000001", 1)
    (path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="state.json"):
        load_train_state(path)
