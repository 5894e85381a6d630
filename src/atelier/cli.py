"""``atelier <command>``: parses arguments, calls the Python API, prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _model_args(p, family: str) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--conditional", action="store_true", default=None, help="condition on the dataset's labels")
    m.add_argument("--latent-dim", type=int, default=None)
    if family == "gan":
        m.add_argument("--model", default=None, help="registry name: dcgan (default), or the classic preset dcgan64")
        m.add_argument("--g-width", type=int, default=None)
        m.add_argument("--d-width", type=int, default=None)
        m.add_argument("--d-norm", choices=("batch", "spectral", "none"), default=None)
        m.add_argument("--loss", choices=("nonsaturating", "hinge"), default=None)
    else:
        m.add_argument("--model", default=None, help="registry name: vae (default), or beta-vae (beta 4, 10-d latent)")
        m.add_argument("--width", type=int, default=None, help="channels of the first encoder stage (default: 32)")
        m.add_argument("--hidden", type=int, default=None, help="fully connected layer size (default: 512; 0: none)")
        m.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None,
                       help="bernoulli (default; binary-ish data such as MNIST) or gaussian")
        m.add_argument("--beta", type=float, default=None, help="weight of the KL term (default: 1)")
        m.add_argument("--kl-warmup-steps", type=int, default=None, help="ramp the KL weight from 0 over these steps")
        m.add_argument("--binarize", action="store_true", default=None,
                       help="bernoulli: train and test on binarised pixels (comparable with published NLLs)")
        m.add_argument("--sigma", type=float, default=None, help="gaussian: initial (or fixed) pixel std on [-1, 1]")
        m.add_argument("--prior", choices=("normal", "vamp"), default=None,
                       help="normal: N(0, I) (default); vamp: VampPrior over learned pseudo-inputs")
        m.add_argument("--vamp-components", type=int, default=None, help="VampPrior pseudo-inputs (default: 100)")
        m.add_argument("--fixed-sigma", dest="learn_sigma", action="store_false", default=None,
                       help="gaussian: keep sigma fixed instead of learning it")


_MODEL_FIELDS = {"gan": ("latent_dim", "g_width", "d_width", "d_norm", "loss"),
                 "vae": ("latent_dim", "width", "hidden", "likelihood", "beta", "kl_warmup_steps", "binarize", "sigma",
                         "learn_sigma", "prior", "vamp_components")}
_DEFAULT_MODEL = {"gan": "dcgan", "vae": "vae"}


def _add_train(sub, family: str, help_text: str) -> None:
    p = sub.add_parser(family, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None, help="digits | mnist | folder:PATH (default: digits)")
    d.add_argument("--data-dir", default=None, help="local files for the dataset (e.g. MNIST's IDX .gz files)")
    d.add_argument("--resolution", type=int, default=None, help="28, 32, 64 or 128 (default: 28)")
    d.add_argument("--channels", type=int, choices=(1, 3), default=None, help="force grayscale or RGB")
    d.add_argument("--strict", action="store_true", default=None, help="fail on any unreadable image")
    d.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                   help="skip SHA-256 checks of dataset files")
    _model_args(p, family)
    t = add_training_args(p)
    p.add_argument("--config", default=None, help="TOML/JSON file with [data], [model], [train] sections; "
                   "flags given on the command line override it")
    p.add_argument("--out", required=True, help="run directory (checkpoints, samples, logs)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    if family == "gan":
        t.add_argument("--augment", choices=("none", "diffaugment", "ada"), default=None,
                       help="augment what the discriminator sees, for little data: diffaugment (Zhao et al. 2020) "
                       "or ada (adaptive strength p, Karras et al. 2020) (default: none)")
        t.add_argument("--augment-policy", default=None,
                       help="comma-separated ops; diffaugment: color,translation,cutout (default: all three); "
                       "ada: any of xflip,rotate90,xint,scale,rotate,aniso,xfrac,brightness,contrast,saturation "
                       "(default: all but xflip,rotate90)")
        t.add_argument("--ada-target", type=float, default=None,
                       help="ada: the E[sign(D(real))] that p is steered to (default: 0.6)")
        t.add_argument("--ada-kimg", type=float, default=None,
                       help="ada: thousands of real images for p to go from 0 to 1 (default: 100; the paper: 500)")
        t.add_argument("--ada-interval", type=int, default=None, help="ada: steps between updates of p (default: 4)")
    if family == "vae":
        t.add_argument("--iw-samples", type=int, default=None, help="k of the importance-weighted test NLL (default: 100)")
        t.add_argument("--iw-images", type=int, default=None, help="test images for that NLL (default: 1000)")
    p.set_defaults(func=_cmd_train)


def add_training_args(p, *, evaluation: bool = True):
    """The "training" argument group every ``atelier train <family>`` shares (TrainConfig fields);
    ``evaluation`` adds the FID/KID flags. Returns the group."""
    t = p.add_argument_group("training")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None)
    length.add_argument("--epochs", type=float, default=None)
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget (ends at whichever comes first)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--lr-d", type=float, default=None)
    t.add_argument("--lr-schedule", choices=("constant", "cosine", "linear"), default=None,
                   help="cosine decays the learning rate to 0 by the last step; linear keeps it for the first "
                   "half, then decays it linearly to 0 (CycleGAN); both need --steps or --epochs")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear learning-rate warm-up")
    t.add_argument("--ema-decay", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32 (default)")
    t.add_argument("--channels-last", action="store_true", default=None)
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks")
    t.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    t.add_argument("--log-every", type=int, default=None)
    t.add_argument("--sample-every", type=int, default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    if evaluation:
        t.add_argument("--eval-every", type=int, default=None,
                       help="measure FID/KID every K steps and keep checkpoints/best by FID (default: off)")
        t.add_argument("--eval-n", type=int, default=None, help="images per evaluation (default: 2000)")
        t.add_argument("--eval-split", default=None, help="real split evaluated against (default: test)")
    t.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    return t


_TRAIN_FIELDS = ("steps", "epochs", "minutes", "batch_size", "lr", "lr_d", "lr_schedule", "warmup_steps", "ema_decay",
                 "seed", "precision",
                 "channels_last", "compile", "device", "log_every", "sample_every", "checkpoint_every",
                 "eval_every", "eval_n", "eval_split", "tensorboard", "progress", "iw_samples", "iw_images",
                 "augment", "augment_policy", "ada_target", "ada_kimg", "ada_interval")
_DATA_FIELDS = {"data": "name", "data_dir": "data_dir", "resolution": "resolution", "channels": "channels",
                "strict": "strict", "verify": "verify"}


def _given(args, names) -> dict:
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _cmd_train(args) -> int:
    from atelier.train import DataConfig, TrainConfig, resume_configs, train_model
    from atelier.train.run import describe, saved_run_config

    from atelier.config import from_dict, load_config_file
    from atelier.train.config import FAMILY_DEFAULTS

    overrides = _given(args, [f for f in _TRAIN_FIELDS if hasattr(args, f)])
    if args.resume and saved_run_config(args.out) is not None:
        name, model_cfg, data, train = resume_configs(args.out, overrides)
        result = train_model(name, data=data, train=train, out=args.out, model_kwargs=model_cfg, resume=True)
    else:
        if args.resume:
            print(f"note: {args.out} has no checkpoint yet; starting a new run", file=sys.stderr)
        file = load_config_file(args.config) if args.config else {}
        data = {**file.get("data", {}), **{v: getattr(args, k) for k, v in _DATA_FIELDS.items()
                                           if getattr(args, k) is not None}}
        train = from_dict(TrainConfig, {**FAMILY_DEFAULTS[args.family], **file.get("train", {}), **overrides})
        model_kwargs = {**file.get("model", {}), **_given(args, _MODEL_FIELDS[args.family])}
        model_name = args.model or file.get("model_name", _DEFAULT_MODEL[args.family])
        conditional = args.conditional if args.conditional is not None else bool(file.get("conditional", False))
        result = train_model(model_name, data=from_dict(DataConfig, data), train=train, out=args.out,
                             model_kwargs=model_kwargs, conditional=conditional)
    print(describe(result))
    print(f"samples: {Path(args.out) / 'samples' / 'latest.png'}   curves: {Path(args.out) / 'loss_curve.png'}")
    return 0


def _cmd_sample(args) -> int:
    from atelier.creative import sample_images, save_samples
    from atelier.models import load_pretrained

    model = load_pretrained(args.run_dir)
    samples = sample_images(model, args.n, seed=args.seed, label=args.label, truncation=args.truncation)
    path = save_samples(samples, args.out)
    print(f"wrote {args.n} samples to {path}")
    return 0


def _cmd_demo(args) -> int:
    from atelier.demo import run_demo

    steps = {k: getattr(args, k) for k in ("steps", "vae_steps") if getattr(args, k) is not None}
    page = run_demo(args.out, minutes=args.minutes, seed=args.seed, **steps)
    print(f"demo page: {page.resolve()}")
    return 0


def _cmd_evaluate(args) -> int:
    from atelier.metrics.evaluate import EvalConfig, evaluate_source
    from atelier.report.evaluation import write_evaluation_report

    fields = ("data", "data_dir", "split", "n", "seed", "extractor", "inception_weights", "resize", "c2st_space",
              "copy_quantile", "copy_threshold", "batch_size", "device", "verify_weights")
    kwargs = _given(args, fields)
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
    from atelier.registry import list_models

    print("\n".join(list_models()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from atelier import __version__

    parser = argparse.ArgumentParser(prog="atelier", description="Image generation and creativity on PyTorch.")
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model")
    families = train.add_subparsers(dest="family", required=True)
    _add_train(families, "gan", "train a DCGAN")
    _add_train(families, "vae", "train a (beta-, conditional) convolutional VAE")
    from atelier.cli_cyclegan import add_cyclegan_parsers

    add_cyclegan_parsers(sub, families)  # train cyclegan, translate, data mnist-domains

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
    from atelier.cli_explore import add_explore_parser

    add_explore_parser(sub)
    from atelier.cli_augment import add_augment_parser

    add_augment_parser(sub)  # augment (classic pipelines, generative augmentation)
    from atelier.cli_style import add_style_parsers

    add_style_parsers(sub)  # stylize, style train, style weights

    m = sub.add_parser("models", help="list registered models")
    m.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from atelier.data import DataError
    from atelier.train import TrainingDiverged

    try:
        return args.func(args)
    except (DataError, TrainingDiverged, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"atelier: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
