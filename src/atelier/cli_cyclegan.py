"""``atelier train cyclegan``, ``atelier translate`` and ``atelier data mnist-domains``: unpaired
image-to-image translation. Parses, calls :mod:`atelier.train.translation`, :mod:`atelier.style.translate`
and :mod:`atelier.data.domains`, prints.

Wire it in with ``add_cyclegan_parsers(subparsers, train_subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
_MODEL_FIELDS = ("g_width", "d_width", "n_blocks", "n_downsampling", "d_layers", "lambda_cycle", "lambda_identity")
_DATA_FIELDS = ("domain_a", "domain_b", "resolution", "channels_a", "channels_b", "data_dir", "strict", "verify")


def add_cyclegan_parsers(sub, train_families) -> None:
    _add_train_cyclegan(train_families)
    _add_translate(sub)
    _add_data(sub)


# -- atelier train cyclegan ---------------------------------------------------------------------
def _add_train_cyclegan(families) -> None:
    from atelier.cli import add_training_args

    p = families.add_parser("cyclegan", help="train a CycleGAN on two unpaired image folders",
                            formatter_class=FORMATTER)
    d = p.add_argument_group("data")
    d.add_argument("--domain-a", default=None, help="folder of domain A images (or any dataset spec: folder:PATH, "
                   "mnist, digits); with train/ and test/ sub-folders, train/ is used")
    d.add_argument("--domain-b", default=None, help="folder of domain B images")
    d.add_argument("--resolution", type=int, default=None, help="side of the square training images (default: 28)")
    d.add_argument("--channels-a", type=int, choices=(1, 3), default=None, help="force grey or RGB for domain A")
    d.add_argument("--channels-b", type=int, choices=(1, 3), default=None, help="force grey or RGB for domain B")
    d.add_argument("--data-dir", default=None, help="MNIST's IDX files, for a domain given as mnist")
    d.add_argument("--strict", action="store_true", default=None, help="fail on any unreadable image")
    d.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                   help="skip SHA-256 checks of dataset files")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, help="registry name (default: cyclegan)")
    m.add_argument("--g-width", type=int, default=None, help="generator channels at full resolution (default: 32; "
                   "the paper: 64)")
    m.add_argument("--d-width", type=int, default=None, help="discriminator channels of the first layer (default: 32)")
    m.add_argument("--n-blocks", type=int, default=None, help="residual blocks (default: 9 at >= 256 px, 6 at >= 128, "
                   "else 4)")
    m.add_argument("--n-downsampling", type=int, default=None, help="generator downsamplings (default: 2 when the "
                   "resolution allows it)")
    m.add_argument("--d-layers", type=int, default=None, help="PatchGAN stride-2 layers: receptive field 16/34/70 px "
                   "for 1/2/3 (default: 1 below 64 px, 2 below 128, else 3)")
    m.add_argument("--lambda-cycle", type=float, default=None, help="cycle-consistency weight (default: 10)")
    m.add_argument("--lambda-identity", type=float, default=None,
                   help="identity weight as a fraction of lambda-cycle (default: 0.5; 0: off; only when both "
                   "domains have the same channels)")
    add_training_args(p, evaluation=False)
    p.add_argument("--config", default=None, help="TOML/JSON file with [data], [model], [train] sections; "
                   "flags given on the command line override it")
    p.add_argument("--out", required=True, help="run directory (checkpoints, samples, logs)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.set_defaults(func=_cmd_train_cyclegan)


def _cmd_train_cyclegan(args) -> int:
    from atelier.cli import _TRAIN_FIELDS, _given
    from atelier.config import from_dict, load_config_file
    from atelier.train.config import FAMILY_DEFAULTS, TrainConfig
    from atelier.train.run import describe, saved_run_config
    from atelier.train.translation import UnpairedDataConfig, resume_translation, train_translation

    overrides = _given(args, [f for f in _TRAIN_FIELDS if hasattr(args, f)])
    if args.resume and saved_run_config(args.out) is not None:
        result = resume_translation(args.out, overrides)
    else:
        if args.resume:
            print(f"note: {args.out} has no checkpoint yet; starting a new run", file=sys.stderr)
        file = load_config_file(args.config) if args.config else {}
        data = {**file.get("data", {}), **_given(args, _DATA_FIELDS)}
        if not data.get("domain_a") or not data.get("domain_b"):
            raise ValueError("give both --domain-a and --domain-b (folders of unpaired images)")
        train = {**FAMILY_DEFAULTS["cyclegan"], **file.get("train", {}), **overrides}
        explicit_schedule = "lr_schedule" in overrides or "lr_schedule" in file.get("train", {})
        if train.get("steps") is None and train.get("epochs") is None and train.get("minutes") is not None \
                and not explicit_schedule:
            print("note: with only --minutes the run length is unknown, so the learning rate stays constant "
                  "(give --steps or --epochs for CycleGAN's linear decay)", file=sys.stderr)
            train["lr_schedule"] = "constant"
        model_kwargs = {**file.get("model", {}), **_given(args, _MODEL_FIELDS)}
        result = train_translation(args.model or file.get("model_name", "cyclegan"),
                                   data=from_dict(UnpairedDataConfig, data), train=from_dict(TrainConfig, train),
                                   out=args.out, model_kwargs=model_kwargs)
    print(describe(result))
    print(f"samples: {Path(args.out) / 'samples' / 'latest.png'} (rows: A, A->B, A->B->A, B, B->A, B->A->B)   "
          f"curves: {Path(args.out) / 'loss_curve.png'}")
    return 0


# -- atelier translate --------------------------------------------------------------------------
def _add_translate(sub) -> None:
    t = sub.add_parser("translate", help="translate images with a trained CycleGAN", formatter_class=FORMATTER)
    t.add_argument("run_dir", help="run directory, checkpoint or saved model")
    t.add_argument("input", help="an image file, or a folder (searched recursively; sub-folders are kept)")
    t.add_argument("-o", "--out", required=True, help="output folder for the PNGs")
    t.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    t.add_argument("--size", type=int, default=None, help="square side the images are brought to "
                   "(default: the training resolution)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--no-ema", dest="use_ema", action="store_false",
                   help="use the raw generator weights instead of their moving average")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_translate)


def _cmd_translate(args) -> int:
    from atelier.models import load_pretrained
    from atelier.style.translate import translate_paths

    model = load_pretrained(args.run_dir)
    if getattr(model, "family", None) != "cyclegan":
        raise ValueError(f"{args.run_dir} holds a {model.family} model; translate needs a CycleGAN run")
    report = translate_paths(model, args.input, args.out, direction=args.direction, size=args.size,
                             batch_size=args.batch_size, use_ema=args.use_ema, progress=not args.quiet)
    for path, why in report.failed:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not report.written:
        print(f"atelier: error: none of the {len(report.failed)} input files could be read", file=sys.stderr)
        return 1
    skipped = f"; skipped {len(report.failed)} unreadable" if report.failed else ""
    print(f"translated {len(report.written)} images ({args.direction}) to {args.out}{skipped}")
    return 0


# -- atelier data mnist-domains ------------------------------------------------------------------
def _add_data(sub) -> None:
    d = sub.add_parser("data", help="build datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    m = dsub.add_parser("mnist-domains", help="unpaired translation domains from MNIST: plain digits (a) and "
                        "other digits in a style (b), as PNG folders", formatter_class=FORMATTER)
    m.add_argument("out", help="output folder: OUT/{a,b}/{train,test}/<digit>/*.png")
    m.add_argument("--style", default="thick", help="thick | inverted | colour, or a combination such as thick+colour")
    m.add_argument("--n", type=int, default=5000, help="training images per domain (at most 30000)")
    m.add_argument("--n-test", type=int, default=2000, help="test images per domain (at most 5000)")
    m.add_argument("--resolution", type=int, default=28)
    m.add_argument("--data-dir", default=None, help="MNIST's IDX files (default: the download cache)")
    m.add_argument("--seed", type=int, default=0, help="seed of the split into disjoint halves")
    m.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    m.set_defaults(func=_cmd_mnist_domains)


def _cmd_mnist_domains(args) -> int:
    from atelier.data.domains import mnist_domains, write_domain_folders

    domains = mnist_domains(args.style, n=args.n, n_test=args.n_test, data_dir=args.data_dir,
                            resolution=args.resolution, seed=args.seed, progress=True)
    out = write_domain_folders(domains, args.out, overwrite=args.overwrite)
    print(f"wrote {len(domains.a_train)} + {len(domains.b_train)} training and {len(domains.a_test)} + "
          f"{len(domains.b_test)} test images to {out}/a and {out}/b (style {domains.style})")
    print(f"train: atelier train cyclegan --domain-a {out}/a --domain-b {out}/b --resolution {args.resolution} "
          f"--steps 2000 --out runs/mnist-{domains.style.replace('+', '-')}")
    return 0
