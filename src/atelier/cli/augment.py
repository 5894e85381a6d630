"""``atelier augment``: classic augmentation of an image folder, and generative augmentation from a
trained conditional model. A thin layer over :mod:`atelier.augment`.

    atelier augment INPUT_DIR -o OUT_DIR --copies K [--config aug.yaml] [--seed S]
    atelier augment --generate RUN_DIR --per-class K -o OUT_DIR [--min-confidence 0.9]
    atelier augment INPUT_DIR --generate RUN_DIR --per-class K -o OUT_DIR   # both into one labelled folder
    atelier augment --list-ops | --print-config [--config aug.yaml]

With both, OUT_DIR receives the K augmentations of every real image (``<stem>_aug<k>.png``) and the
generated samples (``gen_00000.png``, ...) side by side in the same class folders, whose names must
match the model's classes; ``--with-originals`` adds the real images themselves, making OUT_DIR a
complete training set. Nothing is written when the generation filter keeps too few samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atelier.cli.limits import check_float, check_int
from atelier.creative.generative import MAX_PER_CLASS

#: Bounds on the numbers augment takes: augmented copies per real image (written one image at a time),
#: draws per kept sample, and --size; and MAX_PER_CLASS samples kept per class (held in memory).
MAX_COPIES, MAX_OVERSAMPLE, MAX_SIZE = 1000, 1000, 4096


def _print_ops() -> int:
    from atelier.augment.ops import get_op, list_ops

    for name in list_ops():
        spec = get_op(name)
        params = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in spec.defaults.items())
        aliases = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(f"{name:13s} {spec.kind:11s} p={spec.p:<4} {params}{aliases}\n{'':13s} {spec.help}")
    return 0


def _pipeline(args):
    from atelier.augment.pipeline import Pipeline

    return Pipeline.from_file(args.config) if args.config else None


def _print_config(args) -> int:
    import yaml

    from atelier.augment.pipeline import default_pipeline

    pipe = _pipeline(args)
    if pipe is None:
        print("# the default pipeline (sized for 64 px colour images; grey images get brightness and contrast only)")
        pipe = default_pipeline(3, 64)
    print(yaml.safe_dump(pipe.config.to_dict(), sort_keys=False, default_flow_style=None).rstrip())
    return 0


def _input_classes(root: Path) -> list[str]:
    from atelier.data.images import scan_images

    names = set()
    for f in scan_images(root):
        parts = f.relative_to(root).parts
        if len(parts) < 2:
            raise ValueError(f"{root} has images at its top level ({parts[0]}), so it has no labels; combining "
                             f"real and generated images needs class sub-folders")
        names.add(parts[0])
    return sorted(names)


def _fail(message: str) -> None:
    raise ValueError(f"augment: {message}")


def _check_flags(args) -> None:
    """Flag combinations argparse cannot express; a bad one raises ValueError (-> atelier: error:, rc 2)."""
    if args.generate is None:
        for flag, value in (("--per-class", args.per_class), ("--min-confidence", args.min_confidence),
                            ("--classifier", args.classifier), ("--truncation", args.truncation)):
            if value is not None:
                _fail(f"{flag} needs --generate RUN_DIR")
    elif args.per_class is None:
        _fail("--generate needs --per-class K (samples kept per class)")
    if args.input_dir is None:
        if args.generate is None:
            _fail("give INPUT_DIR (augment real images), --generate RUN_DIR (add generated samples), or both")
        for flag, value in (("--copies", args.copies), ("--config", args.config), ("--contact-sheet", args.contact_sheet),
                            ("--size", args.size)):
            if value is not None:
                _fail(f"{flag} applies to the real images of INPUT_DIR; none was given")
        if args.with_originals:
            _fail("--with-originals applies to the real images of INPUT_DIR; none was given")
    if args.out is None:
        _fail("-o/--out OUT_DIR is required")
    check_int(args.copies, "--copies", high=MAX_COPIES)
    check_int(args.size, "--size", high=MAX_SIZE)
    check_int(args.per_class, "--per-class", high=MAX_PER_CLASS)
    check_int(args.max_oversample, "--max-oversample", high=MAX_OVERSAMPLE)
    check_float(args.min_confidence, "--min-confidence", high=1.0, low_inclusive=True)
    check_float(args.truncation, "--truncation")


def _cmd_augment(args) -> int:
    if args.list_ops:
        return _print_ops()
    if args.print_config:
        return _print_config(args)
    _check_flags(args)
    out = Path(args.out)
    pipe = _pipeline(args) if args.input_dir is not None else None
    generated = None
    if args.generate is not None:
        from atelier.creative.generative import generate_labelled, planned_paths

        if args.input_dir is not None:
            from atelier.creative.generative import load_conditional
            from atelier.augment.folder import check_dirs

            check_dirs(Path(args.input_dir), out)
            _, classes, _ = load_conditional(args.generate, device=args.device)
            real = _input_classes(Path(args.input_dir))
            if sorted(real) != sorted(classes):
                raise ValueError(f"the class folders of {args.input_dir} ({', '.join(real)}) differ from the classes "
                                 f"of the model in {args.generate} ({', '.join(classes)}); they must match to combine")
            if args.with_originals:
                clash = [p for p in planned_paths(classes, args.per_class, Path(args.input_dir)) if p.exists()]
                if clash:
                    raise ValueError(f"{clash[0]} would be overwritten by a generated sample of the same name; rename "
                                     f"it or leave out --with-originals")
        generated = generate_labelled(args.generate, args.per_class, min_confidence=args.min_confidence,
                                      classifier=args.classifier, seed=args.seed, max_oversample=args.max_oversample,
                                      truncation=args.truncation, device=args.device)
    from atelier.signals import stop_on_signals

    # From here on files are written: Ctrl-C / SIGTERM stop between images (every PNG is written atomically)
    # and the command says what was written; a second signal acts at once. (Before, nothing was written, so
    # a signal during the generation above simply ends the command.)
    with stop_on_signals() as stop:
        if args.input_dir is not None:
            from atelier.augment.folder import augment_folder

            copies = 4 if args.copies is None else args.copies
            sheet = False if args.no_contact_sheet else (args.contact_sheet or True)
            result = augment_folder(args.input_dir, out, pipe, copies, seed=args.seed, size=args.size,
                                    with_originals=args.with_originals, contact_sheet=sheet, progress=args.progress,
                                    should_stop=stop)
            if result.stopped:
                _say_stopped(stop.name, result, out, generated is not None)
                return stop.exit_code
            extra = f" and copied the {result.copied} originals" if args.with_originals else ""
            print(f"augmented {result.images} images x {copies}: wrote {result.written} PNGs{extra} to {out} "
                  f"(same sub-folders as {args.input_dir})")
            if result.contact_sheet is not None:
                print(f"contact sheet: {result.contact_sheet}")
            if result.failures:
                print(f"atelier: warning: {result.failure_message()}", file=sys.stderr)
        if generated is not None:
            generated.save(out)  # quick, so it is finished even when a signal comes meanwhile
            how = (f", kept when {generated.info['classifier']} gives >= {args.min_confidence} "
                   f"({sum(generated.drawn)} drawn)" if args.min_confidence is not None else "")
            print(f"generated {args.per_class} per class x {len(generated.classes)} classes from {args.generate}"
                  f"{how}: wrote {len(generated.labels)} PNGs to {out}")
    return stop.exit_code


def _say_stopped(signal_name: str, result, out: Path, had_generated: bool) -> None:
    """What an augmentation stopped by a signal wrote, on stderr."""
    done = result.images + len(result.failures)
    copied = f" and copied {result.copied} originals" if result.copied else ""
    skipped = "; no contact sheet" + ("; the generated samples were not written" if had_generated else "")
    print(f"stopped by {signal_name} after {done} of {result.total} images: wrote {result.written} complete PNGs"
          f"{copied} to {out}{skipped}; run the same command again to redo it in full", file=sys.stderr)


def add_augment_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``augment`` on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "augment",
        help="augment an image folder (kornia pipelines) and/or add samples of a conditional GAN/VAE",
        description="Write K augmented PNGs per image of INPUT_DIR into OUT_DIR, keeping the sub-folders (labels), "
                    "and/or add --per-class samples of a trained conditional model. Unreadable images are named "
                    "and skipped. See --list-ops for the ops a --config file (YAML/TOML/JSON) can use.")
    p.add_argument("input_dir", nargs="?", default=None, metavar="INPUT_DIR", help="folder of images to augment")
    p.add_argument("-o", "--out", default=None, metavar="OUT_DIR", help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="makes the output reproducible (default: 0)")
    real = p.add_argument_group("real images (INPUT_DIR)")
    real.add_argument("--copies", type=int, default=None, help=f"augmented PNGs per image (1..{MAX_COPIES}; "
                      f"default: 4)")
    real.add_argument("--config", default=None, help="pipeline file (.yaml/.toml/.json); default: a label-safe "
                      "pipeline (affine, resized crop, colour jitter, blur, noise, cutout; no flips)")
    real.add_argument("--size", type=int, default=None, help=f"resize so the longer side is SIZE (at most "
                      f"{MAX_SIZE}; default: keep)")
    real.add_argument("--with-originals", action="store_true", help="also copy the original files into OUT_DIR")
    sheet = real.add_mutually_exclusive_group()
    sheet.add_argument("--contact-sheet", default=None, metavar="PATH",
                       help="where to write the contact sheet PNG (default: OUT_DIR-contact-sheet.png beside OUT_DIR)")
    sheet.add_argument("--no-contact-sheet", action="store_true", help="do not write a contact sheet")
    real.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    gen = p.add_argument_group("generated images (--generate)")
    gen.add_argument("--generate", default=None, metavar="RUN_DIR", help="a trained class-conditional GAN or VAE")
    gen.add_argument("--per-class", type=int, default=None, metavar="K", help=f"samples kept per class "
                     f"(1..{MAX_PER_CLASS:,})")
    gen.add_argument("--min-confidence", type=float, default=None, metavar="P",
                     help="keep a sample only if the classifier predicts its class with probability >= P")
    gen.add_argument("--classifier", default=None, help="filtering classifier: an extractor name (digits-cnn, "
                     "mnist-cnn) or a classifier .safetensors file (default: the run dataset's domain classifier)")
    gen.add_argument("--max-oversample", type=int, default=20, help=f"give up after K x this many draws per class "
                     f"(1..{MAX_OVERSAMPLE}; default: 20)")
    gen.add_argument("--truncation", type=float, default=None,
                     help="draw latents from the normal truncated to +-T (T > 0)")
    gen.add_argument("--device", default="cpu", help="device for the model and classifier (default: cpu)")
    info = p.add_argument_group("information")
    info.add_argument("--list-ops", action="store_true", help="list the ops, their defaults and exit")
    info.add_argument("--print-config", action="store_true", help="print the resolved pipeline (--config or the "
                      "default) as YAML and exit")
    p.set_defaults(func=_cmd_augment)
    return p
