"""``atelier <command>``: parses arguments, calls the Python API, prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_sample(args) -> int:
    from atelier.creative import SampleSet, save_samples
    from atelier.pipelines import Pipeline

    images, labels = Pipeline.load(args.run_dir).sample(args.n, seed=args.seed, label=args.label,
                                                        truncation=args.truncation, with_labels=True)
    path = save_samples(SampleSet(images, labels), args.out)
    print(f"wrote {args.n} samples to {path}")
    return 0


def _cmd_demo(args) -> int:
    from atelier.demo import run_demo

    steps = {k: getattr(args, k) for k in ("steps", "vae_steps") if getattr(args, k) is not None}
    page = run_demo(args.out, minutes=args.minutes, seed=args.seed, **steps)
    print(f"demo page: {page.resolve()}")
    return 0


def _cmd_evaluate(args) -> int:
    from atelier.config import given_arguments
    from atelier.metrics.evaluate import EvalConfig, evaluate_source
    from atelier.report.evaluation import write_evaluation_report

    fields = ("data", "data_dir", "split", "n", "seed", "extractor", "inception_weights", "resize", "c2st_space",
              "copy_quantile", "copy_threshold", "batch_size", "device", "verify_weights")
    kwargs = given_arguments(args, fields)
    if args.metrics:
        kwargs["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.no_cache:
        kwargs["cache"] = False
    result = evaluate_source(args.input, EvalConfig(**kwargs), progress=not args.quiet)
    print(result.table())
    page = write_evaluation_report(result, args.out)
    print(f"metrics: {Path(args.out) / 'metrics.json'}   report: {page}")
    return 0


def _cmd_fit_classifier(args) -> int:
    from atelier.metrics.classifier import DOMAIN_CLASSIFIERS, classifier_path, fit_domain_classifier

    fitted = fit_domain_classifier(args.data, data_dir=args.data_dir, seed=args.seed, progress=not args.quiet)
    print(f"{DOMAIN_CLASSIFIERS[args.data]}: test accuracy {fitted.test_accuracy:.4f}, "
          f"weights sha256 {fitted.sha256[:16]}..., saved to {classifier_path(DOMAIN_CLASSIFIERS[args.data])}")
    return 0


def _cmd_list_extractors(args) -> int:
    from atelier.metrics.classifier import DOMAIN_CLASSIFIERS, load_classifier
    from atelier.metrics.extractors import list_extractors

    fitted = {name: load_classifier(name) for name in DOMAIN_CLASSIFIERS.values()}
    for name in list_extractors():
        if name in fitted:
            f = fitted[name]
            state = f"fitted, test accuracy {f.test_accuracy:.4f}, sha256 {f.sha256[:12]}" if f else "not fitted yet"
        else:
            state = "needs the TF InceptionV3 weights file (--inception-weights or the cache)"
        print(f"{name:14s} {state}")
    return 0


def _add_evaluate(sub) -> None:
    from atelier.metrics.evaluate import METRIC_GROUPS

    e = sub.add_parser("evaluate", help="FID, KID, IS, precision/recall, two-sample test and memorisation",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("input", help="run directory (sampled here), .npz with an 'images' array, or a folder of images")
    e.add_argument("--data", default=None, help="real data: digits | mnist | folder:PATH (default: the run's own)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--split", default=None, help="real split to compare against (default: test)")
    e.add_argument("--n", type=int, default=None, help="samples to draw from a run, and the most real images used "
                   "(default: 10000)")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--out", default="evaluation", help="folder for metrics.json and the HTML report")
    e.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRIC_GROUPS)}")
    e.add_argument("--extractor", default=None, help="mnist-cnn | digits-cnn | inception-v3 (default: per dataset)")
    e.add_argument("--inception-weights", default=None, help="local pt_inception-2015-12-05-6726825d.pth")
    e.add_argument("--no-verify-weights", dest="verify_weights", action="store_false", default=None,
                   help="accept an InceptionV3 file whose SHA-256 differs (e.g. converted weights)")
    e.add_argument("--resize", default=None, help="inception-v3 resize: tf-bilinear | bilinear | bicubic-antialias")
    e.add_argument("--c2st-space", choices=("features", "pixels"), default=None)
    e.add_argument("--copy-quantile", type=float, default=None)
    e.add_argument("--copy-threshold", type=float, default=None, help="fixed RMS pixel distance for near-copies")
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--device", default=None)
    e.add_argument("--no-cache", action="store_true", help="recompute the real reference statistics")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_evaluate)

    m = sub.add_parser("metrics", help="feature extractors for evaluation")
    msub = m.add_subparsers(dest="metrics_command", required=True)
    f = msub.add_parser("fit-classifier", help="fit and cache the domain classifier of a dataset")
    f.add_argument("--data", choices=("mnist", "digits"), default="mnist")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_cmd_fit_classifier)
    x = msub.add_parser("extractors", help="list feature extractors and whether they are ready")
    x.set_defaults(func=_cmd_list_extractors)


def _cmd_models(args) -> int:
    from atelier.models.registry import get_family, list_families, list_models, model_family
    from atelier.train import steps  # noqa: F401 - registers every family

    for family in list_families():
        presets = [name for name in list_models() if model_family(name) == family]
        print(f"{family:12s} {' '.join(presets):48s} atelier train {family}: {get_family(family).summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from atelier import __version__

    parser = argparse.ArgumentParser(prog="atelier", description="Image generation and creativity on PyTorch.")
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from atelier.cli import train as train_cli
    from atelier.cli.translate import add_translate_parsers

    train_cli.add_parsers(sub)  # train <family>, for every registered family
    add_translate_parsers(sub)  # translate, data mnist-domains

    s = sub.add_parser("sample", help="draw samples from a trained model")
    s.add_argument("run_dir", help="run directory, checkpoint or saved model")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True, help="output .png (grid) or .npz (images N x H x W x C, labels)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, default=None, help="class to draw (conditional models)")
    s.add_argument("--truncation", type=float, default=None, help="resample latents beyond +-T")
    s.set_defaults(func=_cmd_sample)

    d = sub.add_parser("demo", help="train a small conditional GAN on the bundled digits and show it")
    d.add_argument("--out", default="atelier-demo")
    d.add_argument("--steps", type=int, default=None, help="GAN training steps (default: 3000, about 75 s on 2 cores)")
    d.add_argument("--vae-steps", type=int, default=None, help="VAE training steps (default: 1500, about 30 s)")
    d.add_argument("--minutes", type=float, default=4.0, help="wall-clock cap on training")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    _add_evaluate(sub)
    from atelier.cli.explore import add_explore_parser

    add_explore_parser(sub)
    from atelier.cli.augment import add_augment_parser

    add_augment_parser(sub)  # augment (classic pipelines, generative augmentation)
    from atelier.cli.style import add_style_parsers

    add_style_parsers(sub)  # stylize, style train, style weights

    m = sub.add_parser("models", help="list the model families and their registered models (presets)")
    m.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from atelier.data import DataError
    from atelier.train import TrainingDiverged

    try:
        return args.func(args)
    except (DataError, TrainingDiverged, FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        from atelier.cli.errors import error_text

        print(f"atelier: error: {error_text(exc, args)}", file=sys.stderr)  # settings named as this command's flags
        return 2


if __name__ == "__main__":
    sys.exit(main())
