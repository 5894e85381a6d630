"""``atelier explore edit`` and ``atelier explore inpaint``: what a flow model can do with a given image.

- ``edit``: each ``--image`` (a photo, or a rough sketch such as white strokes on black) is noised to
  time ``--strength`` and solved back to an image the model finds plausible; one row per image: the
  input, then one column per strength (low keeps the layout, high invents more).
- ``inpaint``: the region given by ``--box`` (fractions of the side) or ``--mask`` (an image, white =
  fill) is drawn anew, the rest kept exactly; one row per image: the input with the hole greyed, then
  ``--n`` fills from successive seeds.

A thin layer over :meth:`atelier.pipelines.Pipeline.edit` / ``inpaint``.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from atelier.cli.limits import check_float, check_int, comma_list
from atelier.creative.masks import box_mask, show_hole, upload_mask
from atelier.report.grid import MAX_GRID_IMAGES

#: Input images one command takes at most (each a row of the grid).
MAX_IMAGES = 64


_fractions = comma_list(float, "numbers")


def load_images(paths: list[str], resolution: int, channels: int) -> torch.Tensor:
    """Image files -> uint8 (N, channels, R, R), each centre-cropped and resized to the model's side."""
    from atelier.data.images import model_input

    if not 1 <= len(paths) <= MAX_IMAGES:
        raise ValueError(f"--image: give 1 to {MAX_IMAGES} images, got {len(paths)}")
    out = []
    for path in paths:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--image: no such file: {p}")
        out.append(model_input(p, resolution, channels))
    return torch.stack(out)


def _options(args) -> dict:
    return {"steps": args.steps, "sampler": args.sampler, "guidance": args.guidance}


def _cmd_edit(load_model, png_out, args) -> int:
    from atelier.report.grid import save_grid

    strengths = args.strength
    for s in strengths:
        check_float(s, "--strength", low=0.0, high=1.0, low_inclusive=True)
    if len(args.image) * (len(strengths) + 1) > MAX_GRID_IMAGES:
        raise ValueError(f"--image x (--strength + 1) makes more than {MAX_GRID_IMAGES} images in the grid")
    model = load_model(args)
    pipe = args.pipeline
    images = load_images(args.image, model.config.resolution, model.config.channels)
    columns = [images] + [pipe.edit(images, strength=s, labels=args.label, seed=args.seed, **_options(args))
                          for s in strengths]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # rows: one image, its edits
    out = png_out(args.out, "edit.png")
    save_grid(grid, out, nrow=len(columns))
    print(f"edited {len(images)} image(s) at strength {', '.join(map(str, strengths))} "
          f"({pipe.nfe} network evaluations per image at the last): wrote {out}")
    return 0


def _cmd_inpaint(load_model, png_out, args) -> int:
    from atelier.report.grid import save_grid

    check_int(args.n, "--n", high=MAX_GRID_IMAGES)
    if len(args.image) * (args.n + 1) > MAX_GRID_IMAGES:
        raise ValueError(f"--image x (--n + 1) makes more than {MAX_GRID_IMAGES} images in the grid")
    model = load_model(args)
    pipe = args.pipeline
    r = model.config.resolution
    images = load_images(args.image, r, model.config.channels)
    mask = upload_mask(load_images([args.mask], r, 1)) if args.mask is not None else box_mask(args.box, r)
    fills = [pipe.inpaint(images, mask, labels=args.label, seed=args.seed + i, **_options(args)) for i in range(args.n)]
    holed = show_hole(images, mask)
    grid = torch.stack([holed, *fills], dim=1).flatten(0, 1)
    out = png_out(args.out, "inpaint.png")
    save_grid(grid, out, nrow=args.n + 1)
    print(f"filled {int(mask.sum())} of {r * r} pixels in {len(images)} image(s), {args.n} fill(s) each "
          f"({pipe.nfe} network evaluations per image): wrote {out}")
    return 0


def add_flow_tools(sub, common, load_model, png_out) -> None:
    """Register ``edit`` and ``inpaint`` on the ``explore`` subparsers with explore's helpers (passed in, so
    this module does not import that one): ``common`` adds RUN, --out, ...; ``load_model(args)`` loads
    the pipeline and names classes; ``png_out(out, default_name)`` resolves --out."""
    formatter = argparse.ArgumentDefaultsHelpFormatter

    def sampling(p) -> None:
        p.add_argument("--image", action="append", required=True, help="an input image file (repeat for more; "
                       f"at most {MAX_IMAGES}); resized and centre-cropped to the model's side")
        p.add_argument("--label", default=None, help="conditional models: the class (name or index) to steer to "
                       "(default: none, the unconditional model)")
        p.add_argument("--steps", type=int, default=None, help="solver steps (default: the model's)")
        p.add_argument("--sampler", default=None, help="euler | heun | dpm++2m | ab2 (default: the model's)")
        p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance w with --label")

    p = sub.add_parser("edit", formatter_class=formatter,
                       help="flow models: turn an image or rough sketch into a plausible one (noise, then solve back)")
    common(p, seed_help="the noise added")
    sampling(p)
    p.add_argument("--strength", type=_fractions, default=[0.4, 0.6, 0.8],
                   help="comma-separated times in [0, 1] to noise to: 0 keeps the image, 1 ignores it")
    p.set_defaults(func=functools.partial(_cmd_edit, load_model, png_out))

    p = sub.add_parser("inpaint", formatter_class=formatter,
                       help="flow models: draw a masked region anew, keeping the rest of the image exactly")
    common(p, seed_help="the first fill's noise (the others take the next seeds)")
    sampling(p)
    hole = p.add_mutually_exclusive_group(required=True)
    hole.add_argument("--box", type=_fractions, help="x0,y0,x1,y1: the hole as fractions of the side, e.g. "
                      "0.25,0.25,0.75,0.75")
    hole.add_argument("--mask", default=None, help="an image whose white pixels mark the hole")
    p.add_argument("--n", type=int, default=4, help="fills per image (successive seeds)")
    p.set_defaults(func=functools.partial(_cmd_inpaint, load_model, png_out))
