"""The validation layer: every config field's type, range, choices and finiteness, declared once beside the
field, refuse bad values however the config is built (Python, config file, CLI flag), with a message that
names the field. Written as properties over generated values: the classes of bad input, not examples."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atelier.augment.pipeline  # noqa: F401 - the config classes are found by subclassing Config
import atelier.metrics.evaluate  # noqa: F401
import atelier.style.gatys  # noqa: F401
import atelier.train  # noqa: F401 - registers every family
from atelier.config import Config, ConfigError, check_value, from_dict, load_config_file, validate
from atelier.device import TooLargeError, ensure_fits, format_bytes, parse_bytes
from atelier.models.registry import create_model, model_size


def config_classes() -> list[type]:
    """Every config dataclass in Atelier (each subclasses Config)."""
    found, todo = [], list(Config.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found and cls.__module__.startswith("atelier."):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__qualname__)


CLASSES = config_classes()
REQUIRED = {"OpConfig": {"name": "blur"}}  # fields without a default

#: Any JSON-like value: what a config file, a flag or an HTTP body can hold.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def test_every_config_class_is_found() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"GANConfig", "VAEConfig", "CycleGANConfig", "TransformerNetConfig", "DataConfig", "GANTrainConfig",
            "VAETrainConfig", "FastStyleTrainConfig", "GatysConfig", "EvalConfig", "OpConfig"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_are_valid(cls: type) -> None:
    cfg = from_dict(cls, REQUIRED.get(cls.__name__, {}))
    validate(cfg)  # idempotent: a built config passes its own checks again


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_of_any_field_is_accepted_or_refused_by_name(cls: type, data: st.DataObject) -> None:
    """A value of any type for any field: either the built config holds a value of the declared type that
    passes its checks, or ConfigError/ValueError names the field. Never TypeError, never a traceback."""
    field = data.draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
    value = data.draw(json_values)
    try:
        cfg = from_dict(cls, {**REQUIRED.get(cls.__name__, {}), field: value})
    except ConfigError as exc:
        assert field in str(exc) and exc.field is not None and exc.field.split(".")[0].split("[")[0] == field
        return
    except ValueError as exc:  # a rule relating several fields (e.g. augment_policy needs augment)
        assert str(exc)
        return
    got = getattr(cfg, field)
    assert check_value(got, typing.get_type_hints(cls, include_extras=True)[field], field) == got
    _assert_finite(got)


def _assert_finite(value: object) -> None:
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _assert_finite(v)
    elif isinstance(value, dict):
        for v in value.values():
            _assert_finite(v)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_non_finite_numbers_are_refused_in_every_numeric_field(cls: type) -> None:
    hints = typing.get_type_hints(cls)
    numeric = [f.name for f in dataclasses.fields(cls) if _base(hints[f.name]) in (int, float)]
    for name in numeric:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ConfigError, match=name):
                from_dict(cls, {**REQUIRED.get(cls.__name__, {}), name: bad})


def _base(hint: object) -> object:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) and len(args) == 1 \
        else hint


@given(st.integers(min_value=-(2**40), max_value=2**40))
@settings(max_examples=60, deadline=None)
def test_sizes_are_checked_against_their_declared_range(width: int) -> None:
    from atelier.models.gan import GANConfig

    if 1 <= width <= 2**16:
        assert GANConfig(g_width=width).g_width == width
    else:
        with pytest.raises(ConfigError, match=r"g_width must be between 1 and 65,536") as info:
            GANConfig(g_width=width)
        assert info.value.field == "g_width"


def test_conversions_that_lose_nothing_and_refusals_that_name_the_problem() -> None:
    from atelier.train import GANTrainConfig

    cfg = from_dict(GANTrainConfig, {"steps": 1e3, "lr": 1, "betas": [0.0, 0.9]})  # TOML/JSON spellings
    assert cfg.steps == 1000 and isinstance(cfg.steps, int) and cfg.lr == 1.0 and cfg.betas == (0.0, 0.9)
    cases = {
        "steps": (2.5, "whole number"), "lr": ("fast", "must be a number"), "betas": ([0.5], "2 entries"),
        "seed": (-1, "between 0 and"), "batch_size": (True, "whole number"), "augment": ("all", "one of"),
        "precision": (None, "one of"), "ema_decay": (1.0, "less than 1"), "eval_n": (10**9, "between 10"),
    }
    for name, (value, words) in cases.items():
        with pytest.raises(ConfigError, match=words) as info:
            from_dict(GANTrainConfig, {name: value})
        assert str(info.value).startswith(name) and info.value.field == name


def test_subclasses_that_change_a_default_keep_the_declared_range() -> None:
    from atelier.train import VAETrainConfig

    assert VAETrainConfig().batch_size == 128
    with pytest.raises(ConfigError, match="batch_size must be between 1"):
        VAETrainConfig(batch_size=0)


def test_nested_and_non_mapping_configs_are_refused_with_the_path() -> None:
    from atelier.train import GANTrainConfig

    with pytest.raises(ConfigError, match="mapping of field names"):
        from_dict(GANTrainConfig, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown GANTrainConfig field"):
        from_dict(GANTrainConfig, {"stpes": 3})


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", "holds a mapping"),
    ('{"train": null}', "section 'train' must be a mapping"),
    ('{"model": [1]}', "section 'model' must be a mapping"),
    ('{"model_name": 3}', "model_name must be a string"),
    ('{"conditional": "yes"}', "conditional must be true or false"),
    ('{"extra": {}}', "unknown section"),
])
def test_config_files_of_the_wrong_shape_are_refused(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_config_file(path)


def test_json_infinity_and_nan_in_a_config_file_are_refused(tmp_path: Path) -> None:
    from atelier.train import GANTrainConfig

    for text in ('{"train": {"steps": 1e400}}', '{"train": {"steps": NaN}}', '{"train": {"minutes": Infinity}}'):
        path = tmp_path / "run.json"
        path.write_text(text)
        loaded = load_config_file(path)
        with pytest.raises(ConfigError, match="steps|minutes"):
            from_dict(GANTrainConfig, loaded["train"])
        json.loads(text)  # Python's JSON reader accepts them: the check must be ours


# -- sizes beyond the machine ---------------------------------------------------------------------------

def test_bytes_are_parsed_and_shown_in_binary_units() -> None:
    assert parse_bytes("8G") == 8 * 2**30 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("100") == 100
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(3 * 2**40) == "3.0 TiB"
    with pytest.raises(ValueError, match="ATELIER_MEMORY_LIMIT"):
        parse_bytes("lots")


def test_a_model_beyond_the_memory_is_refused_with_what_it_would_take(monkeypatch: pytest.MonkeyPatch) -> None:
    count, nbytes = model_size("dcgan", g_width=4096)  # built on the meta device: no memory, no time
    assert count > 10**9 and 4 * count <= nbytes < 4.01 * count  # float32 weights (and a few int64 counters)
    monkeypatch.setenv("ATELIER_MEMORY_LIMIT", "1G")
    with pytest.raises(TooLargeError, match=r"would need \d+\.\d GiB of memory; this machine has 1\.0 GiB") as info:
        create_model("dcgan", g_width=4096)
    assert info.value.needed == nbytes and info.value.available == 2**30
    assert create_model("dcgan", g_width=8) is not None  # a small one still builds


@given(st.integers(1, 2**16), st.integers(1, 2**16))
@settings(max_examples=30, deadline=None)
def test_model_size_grows_with_width_and_never_allocates(g_width: int, d_width: int) -> None:
    count, nbytes = model_size("dcgan", g_width=g_width, d_width=d_width)
    smaller, _ = model_size("dcgan", g_width=max(1, g_width // 2), d_width=max(1, d_width // 2))
    assert 4 * count <= nbytes < 4.1 * count and smaller <= count


def test_data_beyond_the_memory_is_refused_before_resizing(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.data import load_dataset

    monkeypatch.setenv("ATELIER_MEMORY_LIMIT", "256M")
    with pytest.raises(TooLargeError, match=r"images of 2048x2048 would need .* GiB"):
        load_dataset("digits", resolution=2048)
    ensure_fits(100, "a little")  # under the limit: nothing said


def test_a_saved_config_describing_a_giant_model_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """config.json is user data: a model folder whose config was edited to g_width 60000 (hundreds of GB)
    is refused by size, and one that merely disagrees with its weights file is refused as a mismatch."""
    from atelier.io import FileFormatError
    from atelier.models.pretrained import load_pretrained

    saved = create_model("dcgan", g_width=8, d_width=8, latent_dim=8).save_pretrained(tmp_path / "m")
    config = json.loads((saved / "config.json").read_text())
    config["model"]["config"]["g_width"] = 60000
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(TooLargeError, match="the model its config describes"):
        load_pretrained(saved)
    config["model"]["config"]["g_width"] = 512  # fits in memory, but not in the file
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileFormatError, match="do not belong together"):
        load_pretrained(saved)
    for broken in ({"model": None}, [], {"model": {"family": 3, "config": {}}}):
        (saved / "config.json").write_text(json.dumps(broken))
        with pytest.raises(FileFormatError, match="not an Atelier model config"):
            load_pretrained(saved)
