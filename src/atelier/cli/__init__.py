"""``atelier <command>``: parses arguments, calls the Python API, prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atelier.cli.protect import add_model_key_flags


def _cmd_sample(args) -> int:
    from atelier.cli.errors import warnings_to_stderr
    from atelier.cli.limits import check_float, check_int
    from atelier.creative.sampling import check_sample_output, write_samples
    from atelier.models.pretrained import NonFiniteWeightsWarning
    from atelier.models.sampling import MAX_SAMPLES, NonFiniteSamplesWarning
    from atelier.cli.protect import model_key
    from atelier.pipelines import Pipeline

    check_int(args.n, "--n", high=MAX_SAMPLES)
    check_float(args.truncation, "--truncation")
    check_sample_output(args.out, args.n, overwrite=args.overwrite)  # before the model is loaded
    from atelier.signals import Stopped, stop_on_signals

    # Ctrl-C / SIGTERM stop between batches, with nothing written (the output appears whole at the end)
    with warnings_to_stderr(NonFiniteWeightsWarning, NonFiniteSamplesWarning), stop_on_signals() as stop:
        pipe = Pipeline.load(args.run_dir, allow_nonfinite=args.allow_nonfinite, key=model_key(args))
        if args.label is not None:
            args.label = pipe.class_index(args.label, "--label")
        options = {"steps": args.steps, "sampler": args.sampler, "guidance": args.guidance}
        batches = pipe.sample_batches(args.n, seed=args.seed, label=args.label, truncation=args.truncation, **options)
        from atelier.data.provenance import Provenance, weights_sha256

        # what each PNG says of its making: the model's family and weights' hash, the seed and settings;
        # never the run's path, which may name the user
        made = Provenance.from_mapping({"operation": "sample", "model_family": pipe.family, "seed": args.seed,
                                        "n": args.n, "label": args.label, "truncation": args.truncation,
                                        "weights_sha256": weights_sha256(pipe.path),
                                        **{k: v for k, v in options.items() if v is not None},
                                        **({"nfe": pipe.model.planned_nfe(**options)}
                                           if hasattr(pipe.model, "planned_nfe") else {})})
        try:
            path = write_samples(batches, args.out, args.n, class_names=pipe.class_names, overwrite=args.overwrite,
                                 allow_nonfinite=args.allow_nonfinite, progress=not args.quiet, should_stop=stop,
                                 provenance=made)
        except Stopped as exc:
            print(f"stopped by {stop.name} ({exc.where})", file=sys.stderr)
            return stop.exit_code
    print(f"wrote {args.n} samples to {path}" + (f" ({pipe.nfe} network evaluations per sample)" if pipe.nfe else ""))
    if stop.requested:
        print(f"{stop.name} came as the last samples were written; {path} is complete", file=sys.stderr)
    return stop.exit_code


def _cmd_demo(args) -> int:
    from atelier.demo import run_demo

    steps = {k: getattr(args, k) for k in ("steps", "vae_steps", "flow_steps") if getattr(args, k) is not None}
    page = run_demo(args.out, data=args.data, data_dir=args.data_dir, minutes=args.minutes, seed=args.seed, **steps)
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
    from atelier.cli.errors import warnings_to_stderr
    from atelier.data.base import ConversionNote
    from atelier.signals import Stopped, stop_on_signals

    # Ctrl-C / SIGTERM stop between batches and metrics with nothing written (a second signal acts at once);
    # what evaluation changed about the samples is said as note: lines.
    with warnings_to_stderr(ConversionNote, prefix="note: "), stop_on_signals() as stop:
        try:
            result = evaluate_source(args.input, EvalConfig(**kwargs), progress=not args.quiet, should_stop=stop)
        except Stopped as exc:
            print(f"stopped by {stop.name} ({exc.where}): the evaluation was abandoned and nothing was written",
                  file=sys.stderr)
            return stop.exit_code
        if stop.requested:
            print(f"stopped by {stop.name} before the report was written: nothing was written", file=sys.stderr)
            return stop.exit_code
        print(result.table())
        if args.ratings_db:
            print(_human_ratings(args.ratings_db, Path(args.input).name))
        page = write_evaluation_report(result, args.out)  # a signal now waits for the report to be complete
    print(f"metrics: {Path(args.out) / 'metrics.json'}   report: {page}")
    if stop.requested:
        print(f"{stop.name} came while the report was written; it is complete", file=sys.stderr)
    return stop.exit_code


def _human_ratings(db_url: str, name: str) -> str:
    """The studio's human numbers (Bradley-Terry leaderboard, fraction judged real) as text, ``name`` marked."""
    from atelier.serve.db import Database
    from atelier.serve.ratings import board, realness

    db = Database(db_url)
    rows, real = board(db, n_boot=500), realness(db)
    lines = [f"human ratings ({db.describe()}): Bradley-Terry score [95% interval], votes"]
    for r in rows:
        mark = "  <- this model" if r["model"] == name else ""
        lines.append(f"  {r['rank']:2d}. {r['model']:24s} {r['score']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] "
                     f"{r['votes']:5d}{mark}")
    for source, v in sorted(real["sources"].items()):
        lines.append(f"  judged real: {source:22s} {v['fraction']:.3f} [{v['low']:.3f}, {v['high']:.3f}] of {v['n']}")
    if len(lines) == 1:
        lines.append("  no votes yet")
    return "\n".join(lines)


def _add_evaluate(sub) -> None:
    from atelier.metrics.evaluate import METRIC_GROUPS

    e = sub.add_parser("evaluate", help="FID, KID, IS, precision/recall, two-sample test and memorisation",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("input", help="run directory (sampled here), .npz with an 'images' array, or a folder of images")
    e.add_argument("--data", default=None,
                   help="real data: digits | mnist | cifar10 | folder:PATH (default: the run's own)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--split", default=None, help="real split to compare against (default: test)")
    e.add_argument("--n", type=int, default=None, help="samples to draw from a run, and the most real images used "
                   "(default: 10000)")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--out", default="evaluation", help="folder for metrics.json and the HTML report")
    e.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRIC_GROUPS)}")
    e.add_argument("--extractor", default=None,
                   help="mnist-cnn | digits-cnn | cifar10-cnn | folder-cnn:HASH | inception-v3 (default: the "
                        "dataset's own; for folder:PATH the extractor fitted for it by `atelier metrics "
                        "fit-classifier`, else inception-v3 when its weights are at hand)")
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
    e.add_argument("--ratings-db", default=None,
                   help="the studio's database (path or URL): show its human ratings beside the metrics")
    e.set_defaults(func=_cmd_evaluate)

    from atelier.cli.metrics import add_metrics_parser

    add_metrics_parser(sub)  # metrics fit-classifier | extractors


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

    from atelier.models.sampling import MAX_SAMPLES
    from atelier.report.grid import MAX_GRID_IMAGES

    s = sub.add_parser(
        "sample", help="draw samples from a trained model",
        description="Draw --n samples, reproducible from --seed, in batches of 500 with a progress bar. A .png "
                    f"--out is one grid (at most {MAX_GRID_IMAGES} images); an .npz or a folder is streamed batch "
                    f"by batch, so memory stays bounded for any --n (at most {MAX_SAMPLES:,}). Every output appears "
                    "whole when done: an interrupted run leaves nothing behind. A model whose weights hold NaN/Inf, "
                    "or samples that do, are refused unless --allow-nonfinite.")
    s.add_argument("run_dir", help="run directory, checkpoint or saved model")
    s.add_argument("--n", type=int, default=64, help=f"samples to draw, 1..{MAX_SAMPLES:,} (default: 64)")
    s.add_argument("--out", required=True,
                   help=f"output: .png (one grid, at most {MAX_GRID_IMAGES} samples), .npz (images N x H x W x C "
                        "uint8, labels; streamed) or a folder (one PNG per sample, a sub-folder per class of a "
                        "conditional model; streamed)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", default=None, help="class to draw, by name (e.g. airplane) or index (conditional "
                   "models; default: every class in turn)")
    s.add_argument("--truncation", type=float, default=None,
                   help="draw latents from the normal truncated to +-T (T a finite number above 0)")
    s.add_argument("--steps", type=int, default=None,
                   help="flow models: solver steps (default: the model's; the network evaluations per sample are "
                        "printed)")
    s.add_argument("--sampler", default=None, help="flow models: euler | heun | dpm++2m | ab2 (default: the model's)")
    s.add_argument("--guidance", type=float, default=None,
                   help="flow models, conditional: classifier-free guidance w (0 unconditional, 1 conditional, "
                        "above 1 stronger; default: the model's)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    s.add_argument("--allow-nonfinite", action="store_true",
                   help="sample from a model whose weights hold NaN/Inf and write samples holding NaN/Inf (as "
                        "black or white pixels) anyway, with a warning")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_key_flags(s)
    s.set_defaults(func=_cmd_sample)

    d = sub.add_parser("demo", help="train a small conditional GAN, VAE and flow model on the bundled digits and "
                       "show them")
    d.add_argument("--out", default="atelier-demo")
    d.add_argument("--data", default="digits", help="what the GAN and VAE learn: digits | mnist | cifar10 | "
                   "folder:PATH (class folders under train/ and test/; default: the bundled digits)")
    d.add_argument("--data-dir", default=None, help="local files for --data (e.g. CIFAR-10's archive or image tree)")
    d.add_argument("--steps", type=int, default=None, help="GAN training steps (default: 3000, about 75 s on 2 cores)")
    d.add_argument("--vae-steps", type=int, default=None, help="VAE training steps (default: 1500, about 30 s)")
    d.add_argument("--flow-steps", type=int, default=None, help="flow model training steps (default: 600, about 90 s)")
    d.add_argument("--minutes", type=float, default=4.0, help="wall-clock cap on training")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    _add_evaluate(sub)
    from atelier.cli.explore import add_explore_parser

    add_explore_parser(sub)
    from atelier.cli.reflow import add_reflow_parser

    add_reflow_parser(sub)  # reflow (flow models: 1-2-step sampling)
    from atelier.cli.augment import add_augment_parser

    add_augment_parser(sub)  # augment (classic pipelines, generative augmentation)
    from atelier.cli.style import add_style_parsers

    add_style_parsers(sub)  # stylize, style train, style weights

    from atelier.cli.serve import add_serve_parser

    add_serve_parser(sub)  # serve, serve token|worker|ratings
    from atelier.cli.protect import add_protect_parser

    add_protect_parser(sub)  # protect keygen|encrypt|decrypt|rotate|inspect

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
