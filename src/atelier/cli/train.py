"""``atelier train <family>``: one sub-command per registered model family.

Every flag is derived from the family's config dataclasses (:func:`atelier.config.add_dataclass_arguments`):
the data config, the model config (less what the data decides: resolution, channels, classes) and the
training config. A new family gets its command, flags and help from its registration alone, and with them
the flags every run shares: --resume, --overwrite, and --init-from MODEL (with the key flags of an
encrypted MODEL) to fine-tune a saved model of the family instead of starting from scratch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from atelier.cli.protect import add_model_key_flags
from atelier.data.base import DataError
from atelier.config import (
    add_dataclass_arguments,
    check_fields,
    cli_flag,
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
        m.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=None,
                       help="condition on the dataset's labels (default: as the --init-from model is, else not)")
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
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    start.add_argument("--init-from", default=None, metavar="MODEL",
                       help="start from the weights of a saved model of this family (a run, checkpoint or model "
                       "directory, or an encrypted model with its key) instead of from scratch: every tensor whose "
                       "name and shape match is loaded, the rest (e.g. label embeddings for a new class count) "
                       "starts fresh and is named; its settings are the default model flags; optimisers start "
                       "fresh at step 0")
    i = p.add_argument_group("init-from")
    i.add_argument("--init-force", action="store_true", help="--init-from even when less than half of the model's "
                   "parameters fit (the rest is trained from scratch)")
    add_model_key_flags(i)
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


def _key_flags_given(args) -> list[str]:
    """The key flags on the command line (they open an encrypted --init-from model and nothing else here)."""
    return [f"--{dest.replace('_', '-')}" for dest in ("key_file", "key_env", "passphrase_env", "passphrase")
            if getattr(args, dest, None)]


def _init_source(args, family: Family, data: dict, file_data: dict):
    """The opened --init-from model (an encrypted one opened once, in memory), and the data settings that
    are plain defaults (e.g. --resolution) taken from it: a 64 px model fine-tunes at 64 px unless told."""
    from atelier.cli.protect import model_key
    from atelier.train.init_from import data_given, load_init_source

    source = load_init_source(args.init_from, model_key(args))
    defaults = {f.name: f.default for f in dataclasses.fields(family.data_config)}
    for name in sorted(data_given(family) & set(defaults)):
        # a data setting the data itself decides (channels: None, the images' own) stays with the data; the
        # resolution (None: the model's) is the --init-from model's
        follows_model = defaults[name] is not None or name == "resolution"
        if follows_model and name not in data and name not in file_data and name in source.config:
            data[name] = source.config[name]
            if data[name] != defaults[name]:
                print(f"note: {cli_flag(family.data_config, name)} {data[name]} as the --init-from model has it "
                      f"(give {cli_flag(family.data_config, name)} to choose)", file=sys.stderr)
    return source


def _cmd_train(args) -> int:
    from atelier.cli.errors import warnings_to_stderr
    from atelier.data.base import ConversionNote
    from atelier.train.run import describe, resume_run, saved_run_config, train_model

    family = get_family(args.family)
    dests = args.config_dests
    overrides = given_arguments(args, dests["train"])
    if args.init_from is None and _key_flags_given(args):
        raise ValueError(f"{', '.join(_key_flags_given(args))}: the key opens an encrypted --init-from model; "
                         "give --init-from MODEL, or leave the key out")
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
        conditional = given_conditional if given_conditional is not None else file.get("conditional")
        conditional = None if conditional is None else bool(conditional)
        source = _init_source(args, family, data, file.get("data") or {}) if args.init_from is not None else None
        if conditional is None and source is None:
            conditional = False
        data_cfg, train_cfg = _build(family.data_config, data), _build(family.train_config, train)
        try:
            # what --init-from loaded and kept fresh is said as a note: line before training starts
            with warnings_to_stderr(ConversionNote, prefix="note: "):
                result = train_model(model_name, data=data_cfg, train=train_cfg, out=args.out,
                                     model_kwargs=model_kwargs, conditional=conditional, overwrite=args.overwrite,
                                     init_from=source, init_force=args.init_force)
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
