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

from atelier.config import argparse_type, parse_mapping, parse_numbers

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
_mapping = argparse_type(parse_mapping, "mapping")
_numbers = argparse_type(parse_numbers, "numbers")


def _sha256(text: str) -> str:
    """A SHA-256 in hex, full or a prefix of at least 8 digits (for argparse)."""
    import string

    from atelier.weights import MIN_PREFIX

    text = text.strip().lower()
    if len(text) < MIN_PREFIX or len(text) > 64 or any(c not in string.hexdigits for c in text):
        raise argparse.ArgumentTypeError(f"expected a SHA-256 in hex (64 digits, or the first {MIN_PREFIX} or more), "
                                         f"got {text!r}")
    return text


def _add_weight_checks(group) -> None:
    """``--weights-sha256 HEX`` and ``--no-verify-weights``: which VGG weight files are accepted."""
    check = group.add_mutually_exclusive_group()
    check.add_argument("--weights-sha256", type=_sha256, default=None, metavar="HEX",
                       help="accept VGG weights (e.g. your own --weights file) whose SHA-256 is HEX instead of "
                       "the official file's (keys and shapes are always checked)")
    check.add_argument("--no-verify-weights", dest="verify_weights", action="store_false",
                       help="accept any VGG weight file with the right keys and shapes, whatever its SHA-256")


def _save_rgb(image, path: Path) -> Path:
    """(3, H, W) in [0, 1] -> PNG/JPEG/WebP by suffix, written atomically."""
    from PIL import Image

    from atelier.io import atomic_write_bytes

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
    from atelier.models.vgg_weights import weights_provenance
    from atelier.style import feature_network, stylize_gatys

    cfg = _gatys_config(args)
    content, styles = args.inputs[0], args.inputs[1:]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback is announced below, in one line
        net = feature_network(cfg, weights=args.weights, download=not args.offline, verify=args.verify_weights,
                              sha256=args.weights_sha256, fallback=not args.no_fallback, device=args.device)
    description = getattr(net, "description", type(net).__name__)
    if not getattr(net, "pretrained", False):
        print(f"atelier: warning: {description}")
    from atelier.io import atomic_write_bytes
    from atelier.signals import stop_on_signals
    from atelier.style.gatys import iterations_planned

    # Ctrl-C / SIGTERM: the optimisation stops at an iteration boundary and the best image so far is
    # still written (atomically); a second signal acts at once. Loading the network above is not covered:
    # a signal there ends the command at once, with nothing to lose.
    with stop_on_signals() as stop:
        result = stylize_gatys(content, styles, cfg, mask=args.mask, device=args.device, progress=not args.quiet,
                               features=net, should_stop=stop)
        _save_rgb(result.image, out)
        record = {
            "content": str(content), "styles": [str(s) for s in styles], "mask": args.mask,
            "feature_network": description, "weights": weights_provenance(net), "seconds": round(result.seconds, 2),
            "final": result.history[-1] if result.history else None, "config": asdict(cfg),
            "iterations": len(result.history), "stopped_by": stop.name if result.stopped else None,
        }
        atomic_write_bytes(out.with_suffix(out.suffix + ".json"), json.dumps(record, indent=2).encode())
        if args.gif and result.frames is not None:
            from atelier.report.gif import save_gif

            frames = torch_cat_final(result.frames, result.image)
            save_gif(frames, args.gif, boomerang=False, scale=1, duration_ms=100)
            print(f"wrote {args.gif} ({len(frames)} frames)")
    h, w = result.image.shape[-2:]
    loss = f", loss {result.history[-1]['loss']:.4g}" if result.history else ""
    print(f"wrote {out} ({w}x{h}, {len(result.history)} iterations in {result.seconds:.1f} s{loss})")
    if stop.requested:
        import sys

        if result.stopped:
            print(f"stopped by {stop.name} after {len(result.history)} of {iterations_planned(cfg)} iterations: "
                  f"{out} holds the best image so far", file=sys.stderr)
        else:
            print(f"{stop.name} came after the last iteration; the outputs are complete", file=sys.stderr)
    return stop.exit_code


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

    from atelier.signals import stop_on_signals

    with warnings.catch_warnings(), stop_on_signals() as stop:  # a signal stops between images
        warnings.simplefilter("ignore")  # skipped files are reported below, once
        report = stylize_paths(args.model, args.inputs, out, strength=args.strength, size=args.size,
                               batch_size=args.batch_size, precision=args.precision or "fp32", device=args.device,
                               progress=not args.quiet, should_stop=stop)
    for path, reason in report.skipped:
        print(f"atelier: skipped {path}: {reason}", file=sys.stderr)
    print(f"wrote {len(report.written)} image(s) to {out}" + (f", skipped {len(report.skipped)}" if report.skipped else ""))
    if report.stopped:
        print(f"stopped by {stop.name} after {len(report.written) + len(report.skipped)} of {report.total} input "
              f"images: the {len(report.written)} written are complete; run again to stylise the rest",
              file=sys.stderr)
        return stop.exit_code
    if not report.written:
        print(f"atelier: error: no image was stylised ({len(report.skipped)} input(s) skipped, see above)",
              file=sys.stderr)
        return stop.exit_code or 2
    return stop.exit_code


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
    _add_weight_checks(g)
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
    g.add_argument("--content-layers", type=_mapping, default=None, help="e.g. relu4_2 or relu4_2:1,relu3_1:0.5")
    g.add_argument("--style-layers", type=_mapping, default=None, help="e.g. relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    g.add_argument("--style-scale", type=float, default=None, help="style image size relative to the output")
    g.add_argument("--style-blend", type=_numbers, default=None, help="weights of several styles, e.g. 1,2")
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


def _cmd_style_weights(args) -> int:
    from atelier.models.vgg_weights import _cache_file, load_vgg

    net = load_vgg(args.arch, ["relu1_1"], weights=args.weights, download=not args.offline,
                   verify=args.verify_weights, sha256=args.weights_sha256, fallback=False)
    print(getattr(net, "description", "VGG weights ready"))
    sha = net.provenance["sha256"]
    if not net.provenance["matches_pinned"]:  # the user's own weights: say how to use them again
        again = "" if _cache_file(args.arch, sha).is_file() else f" --weights {args.weights}"
        print(f"these are not the official weights; later runs accept them with --weights-sha256 {sha}{again}")
    return 0


def _add_style(sub) -> None:
    p = sub.add_parser("style", help="fast-style training and the VGG weights")
    ssub = p.add_subparsers(dest="style_command", required=True)
    from atelier.cli.train import add_train_parser
    from atelier.models.registry import get_family
    from atelier.train import steps  # noqa: F401 - registers every family

    # `atelier style train` is `atelier train fast-style`, with the flags it had before that command existed
    t = add_train_parser(ssub, get_family("fast-style"), name="train", out_flags=("-o", "--out"))
    old = t.add_argument_group("shorter spellings")
    old.add_argument("--preset", dest="model", default=None, type=lambda s: f"transformer-net-{s}".replace("-fast", ""),
                     metavar="{fast,johnson}", help="the network: fast (= --model transformer-net) or johnson "
                     "(= --model transformer-net-johnson)")
    old.add_argument("--res-blocks", dest="n_res_blocks", type=int, default=None, help="= --n-res-blocks")
    old.add_argument("--offline", dest="download", action="store_false", default=None, help="= --no-download")
    old.add_argument("--quiet", dest="progress", action="store_false", default=None, help="= --no-progress")
    w = ssub.add_parser("weights", formatter_class=FORMATTER,
                        help="download (or import with --weights) the VGG ImageNet weights into the cache")
    w.add_argument("--arch", choices=("vgg19", "vgg16"), default="vgg19")
    w.add_argument("--weights", default=None, help="a local vgg19-dcbb9e9d.pth / vgg16-397923af.pth to import")
    _add_weight_checks(w)
    w.add_argument("--offline", action="store_true", help="only check the cache")
    w.set_defaults(func=_cmd_style_weights)


def add_style_parsers(sub) -> None:
    """Add ``stylize`` and ``style`` to an argparse subparsers object."""
    _add_stylize(sub)
    _add_style(sub)
