"""``atelier train <family>``: one sub-command per registered model family.

Every flag is derived from the family's config dataclasses (:func:`atelier.config.add_dataclass_arguments`):
the data config, the model config (less what the data decides: resolution, channels, classes) and the
training config. A new family gets its command, flags and help from its registration alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from atelier.data.base import DataError
from atelier.config import (
    add_dataclass_arguments,
    check_fields,
    from_dict,
    given_arguments,
    in_flags,
    load_config_file,
)
from atelier.models.registry import Family, get_family, list_families, list_models, model_family

FORMATTER = argparse.RawDescriptionHelpFormatter
#: Model-config fields the data decides, never set by a flag.
DATA_GIVEN = ("num_classes",)


def _presets(family: Family) -> list[str]:
    return [name for name in list_models() if model_family(name) == family.name]


def add_train_parser(families, family: Family, *, name: str | None = None,
                     out_flags: tuple[str, ...] = ("--out",)) -> argparse.ArgumentParser:
    """``atelier train <family>`` (or ``name``): data, model and training flags from the family's configs."""
    p = families.add_parser(name or family.name, help=family.summary, description=family.summary,
                            formatter_class=FORMATTER)
    p.set_defaults(family=family.name)
    data_fields = {f.name for f in dataclasses.fields(family.data_config)}
    d = p.add_argument_group("data")
    dests = {"data": add_dataclass_arguments(d, family.data_config)}
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None,
                   help=f"registry name: {', '.join(_presets(family))} (default: {family.default_model})")
    if family.conditional:
        m.add_argument("--conditional", action="store_true", default=None, help="condition on the dataset's labels")
    dests["model"] = add_dataclass_arguments(m, family.model_config, exclude=data_fields | set(DATA_GIVEN))
    t = p.add_argument_group("training")
    dests["train"] = add_dataclass_arguments(t, family.train_config)
    seen: dict[str, str] = {}
    for section, names in dests.items():
        for n in names:
            if n in seen:  # one flag cannot set two fields: the family's configs must not share a field name
                raise RuntimeError(f"family {family.name}: field {n!r} is in both its {seen[n]} and {section} configs")
            seen[n] = section
    p.add_argument("--config", default=None, help="TOML/JSON file with [data], [model], [train] sections (and "
                   "model_name, conditional); flags given on the command line override it")
    p.add_argument(*out_flags, dest="out", required=True, help="run directory (checkpoints, samples, logs)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="start a new run in --out even though it holds one "
                   "(its checkpoints, samples and logs are deleted first)")
    p.set_defaults(func=_cmd_train, config_dests=dests)
    return p


def add_parsers(sub) -> None:
    from atelier.train import steps  # noqa: F401 - registers every family

    train = sub.add_parser("train", help="train a model (one command per model family)")
    families = train.add_subparsers(dest="family_command", required=True, metavar="FAMILY")
    for name in list_families():
        add_train_parser(families, get_family(name))


def _explicit_schedule_note(family: Family, file_train: dict, train: dict) -> None:
    """A family whose default learning-rate schedule needs a known run length, run for --minutes only:
    keep the rate constant and say so (rather than refuse the run)."""
    default = {f.name: f.default for f in dataclasses.fields(family.train_config)}["lr_schedule"]
    if "lr_schedule" in train or default == "constant":
        return
    if file_train.get("steps") is None and file_train.get("epochs") is None and train.get("steps") is None \
            and train.get("epochs") is None and (train.get("minutes") or file_train.get("minutes")):
        print(f"note: with only --minutes the run length is unknown, so the learning rate stays constant "
              f"(give --steps or --epochs for the {default} schedule)", file=sys.stderr)
        train["lr_schedule"] = "constant"


def _build(cls: type, values: dict):
    """``cls`` from flag and config-file values; a validation error names the flags."""
    try:
        return from_dict(cls, values)
    except (ValueError, TypeError) as exc:
        raise ValueError(in_flags(str(exc), cls)) from None


def _cmd_train(args) -> int:
    from atelier.train.run import describe, resume_run, saved_run_config, train_model

    family = get_family(args.family)
    dests = args.config_dests
    overrides = given_arguments(args, dests["train"])
    if args.resume and saved_run_config(args.out) is not None:
        result = resume_run(args.out, overrides)
    else:
        if args.resume:
            print(f"note: {args.out} has no checkpoint yet; starting a new run", file=sys.stderr)
        file = load_config_file(args.config) if args.config else {}
        for section, cls in (("data", family.data_config), ("model", family.model_config), ("train", family.train_config)):
            check_fields(cls, file.get(section) or {}, f"{args.config} [{section}]")  # named as in the file, not as flags
        train = {**(file.get("train") or {}), **overrides}
        _explicit_schedule_note(family, file.get("train") or {}, train)
        data = {**(file.get("data") or {}), **given_arguments(args, dests["data"])}
        model_kwargs = {**(file.get("model") or {}), **given_arguments(args, dests["model"])}
        model_name = args.model or file.get("model_name", family.default_model)
        if model_family(model_name) != family.name:
            raise ValueError(f"--model {model_name} is a {model_family(model_name)} model; use "
                             f"atelier train {model_family(model_name)}")
        given_conditional = getattr(args, "conditional", None)
        conditional = given_conditional if given_conditional is not None else bool(file.get("conditional", False))
        data_cfg, train_cfg = _build(family.data_config, data), _build(family.train_config, train)
        try:
            result = train_model(model_name, data=data_cfg, train=train_cfg, out=args.out, model_kwargs=model_kwargs,
                                 conditional=conditional, overwrite=args.overwrite)
        except DataError:  # names its own settings (see atelier.cli.errors)
            raise
        except ValueError as exc:  # e.g. the model config's checks: name the flags
            raise ValueError(in_flags(str(exc), family.model_config, family.train_config)) from None
    print(describe(result))
    print(f"samples: {Path(args.out) / 'samples' / 'latest.png'}   curves: {Path(args.out) / 'loss_curve.png'}")
    if result.interrupted:
        print(f"stopped early by {result.interrupted}; continue with: atelier train {family.name} --out {args.out} "
              "--resume", file=sys.stderr)
    return result.exit_code
