"""``atelier translate`` and ``atelier data mnist-domains``: unpaired image-to-image translation with a
trained CycleGAN (``atelier train cyclegan``), and the MNIST domains to train one on. Parses, calls
:mod:`atelier.style.translate` and :mod:`atelier.data.domains`, prints."""

from __future__ import annotations

import argparse
import sys

from atelier.cli.protect import add_model_key_flags

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
#: The largest --size (square side) and --batch-size translate takes.
MAX_SIZE, MAX_BATCH = 2048, 1024
#: Pixels translated at once: --batch-size is lowered so batch x size x size stays within this.
MAX_BATCH_PIXELS = 2**26


def add_translate_parsers(sub) -> None:
    _add_translate(sub)
    _add_data(sub)


# -- atelier translate --------------------------------------------------------------------------
def _add_translate(sub) -> None:
    t = sub.add_parser("translate", help="translate images with a trained CycleGAN", formatter_class=FORMATTER)
    t.add_argument("run_dir", help="run directory, checkpoint or saved model")
    t.add_argument("input", help="an image file, or a folder (searched recursively; sub-folders are kept)")
    t.add_argument("-o", "--out", required=True, help="output folder for the PNGs")
    t.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    t.add_argument("--size", type=int, default=None, help=f"square side the images are brought to, at most "
                   f"{MAX_SIZE} (default: the training resolution)")
    t.add_argument("--batch-size", type=int, default=32, help=f"images translated at once (1..{MAX_BATCH}; lowered "
                   f"so that a batch holds at most {MAX_BATCH_PIXELS // 2**20}M pixels)")
    t.add_argument("--allow-nonfinite", action="store_true",
                   help="use a model whose weights hold NaN/Inf anyway (with a warning); refused otherwise")
    t.add_argument("--no-ema", dest="use_ema", action="store_false",
                   help="use the raw generator weights instead of their moving average")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_key_flags(t)
    t.set_defaults(func=_cmd_translate)


def _cmd_translate(args) -> int:
    from atelier.cli.errors import warnings_to_stderr
    from atelier.cli.limits import check_int
    from atelier.cli.protect import model_key
    from atelier.models.pretrained import NonFiniteWeightsWarning
    from atelier.pipelines import Pipeline
    from atelier.style.translate import translate_paths

    check_int(args.size, "--size", low=8, high=MAX_SIZE)
    check_int(args.batch_size, "--batch-size", high=MAX_BATCH)
    with warnings_to_stderr(NonFiniteWeightsWarning):
        pipe = Pipeline.load(args.run_dir, allow_nonfinite=args.allow_nonfinite, key=model_key(args))
    if "translate" not in pipe.operations:
        raise ValueError(f"{args.run_dir} holds a {pipe.family} model; translate needs a CycleGAN run")
    side = args.size or pipe.model.config.resolution
    batch_size = min(args.batch_size, max(1, MAX_BATCH_PIXELS // (side * side)))
    from atelier.signals import stop_on_signals

    with stop_on_signals() as stop:  # Ctrl-C / SIGTERM stop between batches; a second signal acts at once
        report = translate_paths(pipe.model, args.input, args.out, direction=args.direction, size=args.size,
                                 batch_size=batch_size, use_ema=args.use_ema, progress=not args.quiet,
                                 should_stop=stop)
    for path, why in report.failed:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if report.stopped:
        done = len(report.written) + len(report.failed)
        print(f"stopped by {stop.name} after {done} of {report.total} images: wrote {len(report.written)} complete "
              f"PNGs to {args.out}; run again to translate the rest", file=sys.stderr)
        return stop.exit_code
    if not report.written:
        print(f"atelier: error: none of the {len(report.failed)} input files could be read", file=sys.stderr)
        return 1
    skipped = f"; skipped {len(report.failed)} unreadable" if report.failed else ""
    print(f"translated {len(report.written)} images ({args.direction}) to {args.out}{skipped}")
    if stop.requested:
        print(f"{stop.name} came during the last batch; every image was translated", file=sys.stderr)
    return stop.exit_code


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
