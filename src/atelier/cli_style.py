"""``atelier stylize`` and ``atelier style ...``: style transfer from the command line.

A thin layer over :mod:`atelier.style`:

    atelier stylize CONTENT STYLE [STYLE ...] -o OUT.png      # Gatys optimisation (several styles blend)
    atelier stylize --model MODEL_DIR CONTENT... -o OUT_DIR   # a trained fast-style network, files or folders
    atelier style train --style STYLE --content-dir DIR -o MODEL_DIR
    atelier style weights [--arch vgg19] [--weights FILE]     # fetch / import the VGG weights into the cache

Wire it into a parser with ``add_style_parsers(subparsers)``.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import asdict
from pathlib import Path

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _layers(text: str) -> dict[str, float]:
    """"relu1_1,relu2_1:0.5" -> {"relu1_1": 1.0, "relu2_1": 0.5} (for argparse)."""
    out: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition(":")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad layer weight in {item!r}; expected NAME or NAME:WEIGHT") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one layer name")
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _save_rgb(image, path: Path) -> Path:
    """(3, H, W) in [0, 1] -> PNG/JPEG/WebP by suffix, written atomically."""
    from PIL import Image

    from atelier.train.checkpoint import atomic_write_bytes

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"-o {path}: use a .png, .jpg, .webp or .bmp file name")
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    atomic_write_bytes(path, buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------ stylize


def _gatys_config(args):
    from atelier.style.gatys import GatysConfig

    given = {k: getattr(args, k) for k in (
        "size", "steps", "scales", "coarse_steps", "optimizer", "lr", "init", "content_weight", "style_weight",
        "tv_weight", "content_layers", "style_layers", "style_scale", "style_blend", "preserve_colors", "arch",
        "pool", "precision", "seed", "frame_every") if getattr(args, k, None) is not None}
    if args.gif and "frame_every" not in given:
        given["frame_every"] = 5
    return GatysConfig(**given)


def _cmd_stylize(args) -> int:
    out = Path(args.out)
    if args.model is not None:
        return _stylize_fast(args, out)
    if len(args.inputs) < 2:
        raise ValueError("usage: atelier stylize CONTENT STYLE [STYLE ...] -o OUT.png "
                         "(or --model MODEL_DIR CONTENT... -o OUT_DIR for a trained fast-style network)")
    if out.suffix == "":
        raise ValueError(f"-o {out}: give an image file name such as out.png")
    from atelier.style import feature_network, stylize_gatys

    cfg = _gatys_config(args)
    content, styles = args.inputs[0], args.inputs[1:]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback is announced below, in one line
        net = feature_network(cfg, weights=args.weights, download=not args.offline, fallback=not args.no_fallback,
                              device=args.device)
    description = getattr(net, "description", type(net).__name__)
    if not getattr(net, "pretrained", False):
        print(f"atelier: warning: {description}")
    result = stylize_gatys(content, styles, cfg, mask=args.mask, device=args.device, progress=not args.quiet,
                           features=net)
    _save_rgb(result.image, out)
    record = {
        "content": str(content), "styles": [str(s) for s in styles], "mask": args.mask,
        "feature_network": description, "seconds": round(result.seconds, 2),
        "final": result.history[-1] if result.history else None, "config": asdict(cfg),
    }
    from atelier.train.checkpoint import atomic_write_bytes

    atomic_write_bytes(out.with_suffix(out.suffix + ".json"), json.dumps(record, indent=2).encode())
    if args.gif and result.frames is not None:
        from atelier.report.gif import save_gif

        frames = torch_cat_final(result.frames, result.image)
        save_gif(frames, args.gif, boomerang=False, scale=1, duration_ms=100)
        print(f"wrote {args.gif} ({len(frames)} frames)")
    h, w = result.image.shape[-2:]
    loss = f", loss {result.history[-1]['loss']:.4g}" if result.history else ""
    print(f"wrote {out} ({w}x{h}, {len(result.history)} iterations in {result.seconds:.1f} s{loss})")
    return 0


def torch_cat_final(frames, image):
    """Frames in [0, 1] plus the final image -> uint8 (T, 3, H, W) for a GIF."""
    import torch

    return (torch.cat([frames, image[None]]) * 255).round().clamp(0, 255).byte()


def _stylize_fast(args, out: Path) -> int:
    from atelier.style.fast import stylize_paths

    if out.suffix:
        raise ValueError(f"-o {out}: with --model the output is a folder (one image per input)")
    import sys
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped files are reported below, once
        report = stylize_paths(args.model, args.inputs, out, strength=args.strength, size=args.size,
                               batch_size=args.batch_size, precision=args.precision or "fp32", device=args.device,
                               progress=not args.quiet)
    for path, reason in report.skipped:
        print(f"atelier: skipped {path}: {reason}", file=sys.stderr)
    print(f"wrote {len(report.written)} image(s) to {out}" + (f", skipped {len(report.skipped)}" if report.skipped else ""))
    return 0 if report.written else 2


def _add_stylize(sub) -> None:
    p = sub.add_parser("stylize", formatter_class=FORMATTER,
                       help="transfer a style: Gatys optimisation, or a trained fast-style network (--model)",
                       description="atelier stylize CONTENT STYLE [STYLE ...] -o OUT.png  |  "
                                   "atelier stylize --model MODEL_DIR CONTENT... -o OUT_DIR")
    p.add_argument("inputs", nargs="+", help="CONTENT STYLE [STYLE ...]; with --model: content files or folders")
    p.add_argument("-o", "--out", required=True, help="output image (Gatys) or folder (--model)")
    p.add_argument("--model", default=None, help="a fast-style model directory (atelier style train)")
    p.add_argument("--size", type=int, default=None,
                   help="longer side of the output in pixels (Gatys default: 512; --model: the input's size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    f = p.add_argument_group("fast style (--model)")
    f.add_argument("--strength", type=float, default=1.0, help="1: the network's output; 0: the content")
    f.add_argument("--batch-size", type=int, default=1, help="images of equal size stylised together")
    g = p.add_argument_group("Gatys optimisation")
    g.add_argument("--weights", default=None, help="VGG weight file (vgg19-dcbb9e9d.pth or .safetensors)")
    g.add_argument("--offline", action="store_true", help="never download the VGG weights")
    g.add_argument("--no-fallback", action="store_true",
                   help="fail instead of using random features when the VGG weights are unavailable")
    g.add_argument("--arch", choices=("vgg19", "vgg16"), default=None, help="feature network (default vgg19)")
    g.add_argument("--steps", type=int, default=None, help="iterations at the output size (default 100)")
    g.add_argument("--scales", type=int, default=None, help="coarse-to-fine levels (default 3; 1: single scale)")
    g.add_argument("--coarse-steps", type=int, default=None, help="iterations at each coarser level (default 150)")
    g.add_argument("--optimizer", choices=("lbfgs", "adam"), default=None)
    g.add_argument("--lr", type=float, default=None, help="default: 1 for L-BFGS, 0.02 for Adam")
    g.add_argument("--init", choices=("content", "noise"), default=None)
    g.add_argument("--content-weight", type=float, default=None)
    g.add_argument("--style-weight", type=float, default=None, help="relative to the content weight (default 10)")
    g.add_argument("--tv-weight", type=float, default=None, help="total-variation smoothing (default 1e-3)")
    g.add_argument("--content-layers", type=_layers, default=None, help="e.g. relu4_2 or relu4_2:1,relu3_1:0.5")
    g.add_argument("--style-layers", type=_layers, default=None, help="e.g. relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    g.add_argument("--style-scale", type=float, default=None, help="style image size relative to the output")
    g.add_argument("--style-blend", type=_floats, default=None, help="weights of several styles, e.g. 1,2")
    g.add_argument("--preserve-colors", choices=("none", "luminance", "histogram"), default=None,
                   help="luminance: transfer luma only; histogram: recolour the style to the content first")
    g.add_argument("--mask", default=None, help="image: white where the style applies, black where the content stays")
    g.add_argument("--pool", choices=("avg", "max"), default=None)
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--gif", default=None, help="also write the optimisation as an animated GIF")
    g.add_argument("--frame-every", type=int, default=None, help="GIF frame every K iterations (default 5)")
    p.set_defaults(func=_cmd_stylize)


# ------------------------------------------------------------------------------------- style ...


def _cmd_style_train(args) -> int:
    from atelier.models.transformer_net import TransformerNetConfig
    from atelier.style.fast import FastStyleConfig, train_fast_style

    given = {k: getattr(args, k) for k in (
        "size", "batch_size", "steps", "epochs", "minutes", "lr", "content_weight", "style_weight", "tv_weight",
        "content_layers", "style_layers", "style_blend", "style_size", "arch", "precision", "seed")
        if getattr(args, k) is not None}
    net = {k: v for k, v in (("width", args.width), ("n_res_blocks", args.res_blocks)) if v is not None}
    if args.preset or net:
        given["net"] = TransformerNetConfig.from_preset(args.preset or "fast", **net)
    if args.content_dir is None:
        from atelier.data.photos import skimage_data_dir

        content_dir = str(skimage_data_dir())
        print(f"atelier: training on the photos bundled with scikit-image ({content_dir})")
    else:
        content_dir = args.content_dir
    cfg = FastStyleConfig(style=args.style, content_dir=content_dir, **given)
    result = train_fast_style(cfg, args.out, resume=args.resume, progress=not args.quiet, weights=args.weights,
                              download=not args.offline, fallback=not args.no_fallback, device=args.device)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s with {result.feature_network}; "
          f"model in {result.model_dir}")
    print(f"use it: atelier stylize --model {result.model_dir} PHOTO_OR_FOLDER -o OUT_DIR")
    return 0


def _cmd_style_weights(args) -> int:
    from atelier.models.vgg_weights import load_vgg

    net = load_vgg(args.arch, ["relu1_1"], weights=args.weights, download=not args.offline, fallback=False)
    print(getattr(net, "description", "VGG weights ready"))
    return 0


def _add_style(sub) -> None:
    p = sub.add_parser("style", help="fast-style training and the VGG weights")
    ssub = p.add_subparsers(dest="style_command", required=True)
    t = ssub.add_parser("train", formatter_class=FORMATTER,
                        help="train a feed-forward network for one style on a folder of content photos")
    t.add_argument("--style", required=True, nargs="+", help="style image(s); several are blended (--style-blend)")
    t.add_argument("--content-dir", default=None,
                   help="folder of content photos, searched recursively (default: the photos bundled with "
                   "scikit-image; real use: COCO or your own photos)")
    t.add_argument("-o", "--out", required=True, help="model directory (weights, config, checkpoints, previews)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimisation steps (default 2000)")
    length.add_argument("--epochs", type=float, default=None, help="passes over the content photos")
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget (ends at whichever comes first)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--size", type=int, default=None, help="training crop size (default 256; 128 is 4x cheaper)")
    t.add_argument("--batch-size", type=int, default=None, help="default 4")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--content-weight", type=float, default=None)
    t.add_argument("--style-weight", type=float, default=None)
    t.add_argument("--tv-weight", type=float, default=None)
    t.add_argument("--content-layers", type=_layers, default=None, help="default relu2_2 (Johnson et al.)")
    t.add_argument("--style-layers", type=_layers, default=None, help="default relu1_2,relu2_2,relu3_3,relu4_3")
    t.add_argument("--style-blend", type=_floats, default=None)
    t.add_argument("--style-size", type=int, default=None, help="longer side of the style image (default: --size)")
    t.add_argument("--arch", choices=("vgg16", "vgg19"), default=None, help="loss network (default vgg16)")
    t.add_argument("--preset", choices=("fast", "johnson"), default=None,
                   help="transformation network: fast (default, about 10x cheaper) or johnson (the paper's)")
    t.add_argument("--width", type=int, default=None, help="network channels at full resolution")
    t.add_argument("--res-blocks", type=int, default=None, help="residual blocks")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--weights", default=None, help="VGG weight file (else the cache or a download)")
    t.add_argument("--offline", action="store_true", help="never download the VGG weights")
    t.add_argument("--no-fallback", action="store_true", help="fail instead of using random features")
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_style_train)
    w = ssub.add_parser("weights", formatter_class=FORMATTER,
                        help="download (or import with --weights) the VGG ImageNet weights into the cache")
    w.add_argument("--arch", choices=("vgg19", "vgg16"), default="vgg19")
    w.add_argument("--weights", default=None, help="a local vgg19-dcbb9e9d.pth / vgg16-397923af.pth to import")
    w.add_argument("--offline", action="store_true", help="only check the cache")
    w.set_defaults(func=_cmd_style_weights)


def add_style_parsers(sub) -> None:
    """Add ``stylize`` and ``style`` to an argparse subparsers object."""
    _add_stylize(sub)
    _add_style(sub)
