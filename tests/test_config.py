"""Config dataclasses: the command-line flags derived from them, and errors spelled as flags."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from atelier.config import (
    add_dataclass_arguments,
    cli_flag,
    field_help,
    from_dict,
    given_arguments,
    in_flags,
    parse_mapping,
    split_settings,
)
from atelier.models.registry import get_family, list_families
import atelier.train  # noqa: F401 - registers every family


@dataclass
class Example:
    """A config with one field of each kind the CLI supports."""

    size: int = 8  # side of the crops
    rate: float | None = None  # a learning rate;
    # continued on the next line
    mode: Literal["fast", "slow"] = "fast"
    verbose: bool = False  # say more
    check: bool = True  # check the files
    layers: dict[str, float] = field(default_factory=lambda: {"a": 1.0})
    blend: list[float] | None = None
    images: list[str] = field(default_factory=list)
    pair: tuple[float, float] = (0.5, 0.9)
    steps: int | None = None
    epochs: float | None = None

    cli_flags: ClassVar[dict[str, str]] = {"size": "--crop"}
    cli_exclusive: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)


def parse(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    dests = add_dataclass_arguments(parser, Example)
    return given_arguments(parser.parse_args(list(argv)), dests)


def test_flags_types_choices_and_defaults_come_from_the_dataclass() -> None:
    assert parse() == {}  # nothing given: nothing overrides the config's own defaults
    given = parse("--crop", "16", "--rate", "0.1", "--mode", "slow", "--verbose", "--no-check", "--layers",
                  "relu1_1,relu2_1:0.5", "--blend", "1,2", "--images", "a.png", "b.png", "--pair", "0.1", "0.2")
    assert given == {"size": 16, "rate": 0.1, "mode": "slow", "verbose": True, "check": False,
                     "layers": {"relu1_1": 1.0, "relu2_1": 0.5}, "blend": [1.0, 2.0], "images": ["a.png", "b.png"],
                     "pair": [0.1, 0.2]}  # a tuple once the config is built
    cfg = from_dict(Example, given)
    assert cfg.pair == (0.1, 0.2) and cfg.layers["relu2_1"] == 0.5
    with pytest.raises(SystemExit):
        parse("--mode", "medium")  # Literal -> choices
    with pytest.raises(SystemExit):
        parse("--steps", "2", "--epochs", "1")  # cli_exclusive
    with pytest.raises(SystemExit):
        parse("--layers", "relu1_1:x")


def test_help_is_the_trailing_comment_with_its_continuation() -> None:
    helps = field_help(Example)
    assert helps["size"] == "side of the crops"
    assert helps["rate"] == "a learning rate; continued on the next line"
    assert "mode" not in helps
    assert cli_flag(Example, "check") == "--no-check" and cli_flag(Example, "size") == "--crop"
    assert parse_mapping('{"a": 2}') == {"a": 2.0}


@pytest.mark.parametrize("family", list_families())
def test_every_family_config_field_has_a_flag(family: str) -> None:
    fam = get_family(family)
    parser = argparse.ArgumentParser()
    for cls in (fam.data_config, fam.train_config):
        dests = add_dataclass_arguments(parser, cls)
        assert set(dests) == {f.name for f in dataclasses.fields(cls)}, cls  # no field lacks a flag
    assert field_help(fam.train_config)["steps"]  # help text reaches derived classes


def test_validation_errors_are_spelled_as_flags() -> None:
    from atelier.train import GANTrainConfig

    assert in_flags("give either steps or epochs, not both", GANTrainConfig) == \
        "give either --steps or --epochs, not both"
    assert in_flags("eval_n must be at least 10, got 3", GANTrainConfig) == "--eval-n must be at least 10, got 3"
    # words that are not the subject, and paths, stay as they are
    text = "the steps of /tmp/eval_n/x took 3 minutes"
    assert in_flags(text, GANTrainConfig) == text


def test_split_settings_by_field_name() -> None:
    from atelier.train.steps.fast_style import FastStyleDataConfig, FastStyleTrainConfig

    data, train = split_settings({"size": 64, "steps": 3, "content_dir": "x"}, FastStyleDataConfig,
                                 FastStyleTrainConfig)
    assert data == {"size": 64, "content_dir": "x"} and train == {"steps": 3}
    with pytest.raises(TypeError, match="unknown setting 'sizes'"):
        split_settings({"sizes": 1}, FastStyleDataConfig, FastStyleTrainConfig)
