"""``atelier explore ...``: interpolations, traversals, arithmetic, reconstructions, latent maps and
novelty pairs of a trained model, as PNG (and GIF) files. A thin layer over :mod:`atelier.creative`.

Wire it into a parser with ``add_explore_parser(subparsers)``; every subcommand sets ``func``, a
handler that takes the parsed arguments and returns 0. Bad requests (a GAN asked to encode an image,
a class the model does not have) raise ValueError with a message meant for the user.

Every tool writes one grid, so each number that sizes it is bounded (``--help`` names each limit,
checked before the model is loaded): at most ``MAX_GRID_IMAGES`` (1024) images in a grid,
``MAX_STEPS`` (1024) interpolation frames, ``MAX_NOVELTY_SAMPLES`` samples compared with the training
set, ``MAX_TSNE_POINTS`` points in a t-SNE map. Numbers beyond the data (``--n`` above the dataset's
size) take the whole dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from atelier.cli.errors import warnings_to_stderr
from atelier.cli.limits import check_float, check_int, comma_list
from atelier.cli.protect import add_model_key_flags
from atelier.creative.latent import MAX_SEEDS, MAX_STEPS
from atelier.creative.latent_map import MAX_TSNE_POINTS
from atelier.report.grid import MAX_GRID_IMAGES

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
#: Samples ``explore novelty`` draws at most: all are kept and compared with every training image.
MAX_NOVELTY_SAMPLES = 10_000
#: The longest GIF frame time, in milliseconds.
MAX_FRAME_MS = 60_000


# -- shared helpers ---------------------------------------------------------------------------
_ints = comma_list(int, "integers")


def _png_out(out: str, default_name: str) -> Path:
    """``--out``: a .png file, or a folder (no suffix) that gets ``default_name``."""
    path = Path(out)
    if path.suffix.lower() == ".png":
        return path
    if path.suffix == "" or path.is_dir():
        return path / default_name
    raise ValueError(f"--out {out}: expected a .png file or a folder")


def _load_model(args):
    """The model of ``args.run``; a ``--label`` or ``--classes`` given by class name (or index) becomes the
    class's index (a clear error when the model has no such class)."""
    from atelier.cli.protect import model_key
    from atelier.models.pretrained import NonFiniteWeightsWarning
    from atelier.pipelines import Pipeline

    with warnings_to_stderr(NonFiniteWeightsWarning):
        pipe = Pipeline.load(args.run, allow_nonfinite=args.allow_nonfinite, key=model_key(args))
    args.class_names, args.pipeline = pipe.class_names, pipe
    if getattr(args, "label", None) is not None:
        args.label = pipe.class_index(args.label, "--label")
    if getattr(args, "classes", None) is not None:
        args.classes = [pipe.class_index(c, "--classes") for c in args.classes]
    return pipe.model


def _class_name(args, index: int) -> str:
    """How a class is named in what a command prints: its name when the model's data gave names."""
    names = getattr(args, "class_names", None)
    return names[index] if names and 0 <= index < len(names) else str(index)


def _load_data(model, args, what: str):
    from atelier.data.registry import load_dataset

    if not args.data:
        raise ValueError(f"{what} needs real images: pass --data (digits | mnist | cifar10 | folder:PATH)")
    return load_dataset(args.data, resolution=model.config.resolution, split=args.split, data_dir=args.data_dir,
                        channels=model.config.channels, progress=False)


def _labels_for(model, dataset, index: torch.Tensor) -> torch.Tensor | None:
    """The dataset labels of ``index`` when a conditional model needs them, else None."""
    if not model.conditional:
        return None
    if dataset.labels is None:
        raise ValueError(f"this model is class-conditional but {dataset.name} has no labels")
    labels = dataset.labels[index]
    if labels.numel() and int(labels.max()) >= model.config.num_classes:
        raise ValueError(f"{dataset.name} has labels up to {int(labels.max())} but the model knows "
                         f"{model.config.num_classes} classes")
    return labels


def _subset(dataset, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` images picked at random (all of them, shuffled, if there are fewer)."""
    if n < 1:
        raise ValueError(f"--n must be positive, got {n}")
    return torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]


def _check_indices(dataset, indices: list[int], flag: str) -> torch.Tensor:
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise ValueError(f"{flag}: image indices {bad} are out of range: {dataset.name} has {len(dataset)} "
                         f"images (0..{len(dataset) - 1})")
    return torch.tensor(indices, dtype=torch.long)


def _class_index(dataset, value: str, flag: str) -> int:
    """A class given by name or index."""
    if dataset.labels is None:
        raise ValueError(f"{flag} needs a dataset with classes; {dataset.name} has none")
    names = dataset.classes or []
    if value in names:
        return names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(names):
        return int(value)
    raise ValueError(f"{flag} {value!r} is not a class of {dataset.name}: use one of {', '.join(names)} "
                     f"(or an index 0..{len(names) - 1})")


# -- handlers ---------------------------------------------------------------------------------
def _cmd_interpolate(args) -> int:
    from atelier.creative.interpolate import interpolate_classes, interpolate_images, interpolate_seeds
    from atelier.creative.latent import require_encoder
    from atelier.report.gif import save_gif
    from atelier.report.grid import save_grid

    check_int(args.steps, "--steps", low=2, high=MAX_STEPS)
    check_int(args.duration_ms, "--duration-ms", high=MAX_FRAME_MS)
    check_float(args.truncation, "--truncation")
    model = _load_model(args)
    if args.seeds is not None:
        frames = interpolate_seeds(model, args.seeds[0], args.seeds[1], args.steps, label=args.label,
                                   method=args.method, truncation=args.truncation)
        what = f"seeds {args.seeds[0]} -> {args.seeds[1]} ({args.method})" + (
            f", class {_class_name(args, args.label)}" if args.label is not None else "")
    elif args.images is not None:
        require_encoder(model, "--images (interpolating between real images)")
        if args.label is not None:
            raise ValueError("--label does not apply to --images: each image's own label is used")
        dataset = _load_data(model, args, "--images")
        index = _check_indices(dataset, args.images, "--images")
        labels = _labels_for(model, dataset, index)
        frames = interpolate_images(model, dataset.images[index[0]], dataset.images[index[1]], args.steps,
                                    labels=labels)
        what = f"{dataset.name} images {args.images[0]} -> {args.images[1]}"
    else:
        frames = interpolate_classes(model, args.classes[0], args.classes[1], args.steps, args.seed,
                                     truncation=args.truncation)
        what = f"classes {_class_name(args, args.classes[0])} -> {_class_name(args, args.classes[1])} (seed {args.seed})"
    out = _png_out(args.out, "interpolation.png")
    save_grid(frames, out, nrow=len(frames))
    written = [str(out)]
    if not args.no_gif:
        written.append(str(save_gif(frames, out.with_suffix(".gif"), duration_ms=args.duration_ms)))
    print(f"interpolation, {what}, {len(frames)} frames: wrote {' and '.join(written)}")
    return 0


def _cmd_traverse(args) -> int:
    from atelier.creative.latent import require_encoder
    from atelier.creative.traverse import traverse
    from atelier.report.grid import save_grid

    check_int(args.steps, "--steps", high=MAX_GRID_IMAGES)
    check_float(args.range, "--range")
    check_int(args.max_rows, "--max-rows", high=MAX_GRID_IMAGES)
    check_int(args.kl_n, "--kl-n")
    if args.dims is not None and len(args.dims) * args.steps > MAX_GRID_IMAGES:  # else traverse() checks the rows
        raise ValueError(f"{len(args.dims)} --dims (rows) x {args.steps} --steps is {len(args.dims) * args.steps:,} "
                         f"images; a grid holds at most {MAX_GRID_IMAGES}: give fewer --dims or --steps")
    model = _load_model(args)
    kwargs = {}
    if args.data:
        require_encoder(model, "--data (ordering dimensions by KL, or --image)")
        dataset = _load_data(model, args, "--data")
        pick = _subset(dataset, args.kl_n, args.seed or 0)
        kwargs.update(order_by_kl_data=dataset.images[pick], order_by_kl_labels=_labels_for(model, dataset, pick))
        if args.image is not None:
            index = _check_indices(dataset, [args.image], "--image")
            kwargs["base_image"] = dataset.images[index[0]]
            if model.conditional and args.label is None:
                args.label = int(_labels_for(model, dataset, index)[0])
    elif args.image is not None:
        raise ValueError("--image needs --data (the dataset the index refers to)")
    values = torch.linspace(-args.range, args.range, args.steps)
    images, dims, info = traverse(model, dims=args.dims, values=values, label=args.label,
                                  seed=args.seed if args.image is None else None, max_rows=args.max_rows, **kwargs)
    out = _png_out(args.out, "traversal.png")
    save_grid(images, out, nrow=args.steps)
    print(f"traversal of dims {','.join(map(str, dims))} over [{-args.range:g}, {args.range:g}] "
          f"({args.steps} values): wrote {out}")
    if "kl_per_dim" in info:
        kl = info["kl_per_dim"]
        top = ", ".join(f"{d}: {float(kl[d]):.3f}" for d in info["kl_order"][: max(len(dims), 10)])
        print(f"mean KL per dimension (nats), highest first: {top}")
    return 0


def _cmd_arithmetic(args) -> int:
    from atelier.creative.arithmetic import image_arithmetic, seed_arithmetic
    from atelier.report.grid import save_grid

    for flag, values, most in (("--a-seeds", args.a_seeds, MAX_SEEDS), ("--b-seeds", args.b_seeds, MAX_SEEDS),
                               ("--c-seeds", args.c_seeds, MAX_GRID_IMAGES // 2),
                               ("--c-indices", args.c_indices, MAX_GRID_IMAGES // 2)):
        if values is not None and len(values) > most:
            raise ValueError(f"{flag}: at most {most:,} values, got {len(values):,}")
    check_int(args.group_size, "--group-size")
    check_float(args.truncation, "--truncation")
    model = _load_model(args)
    seed_mode = [x is not None for x in (args.a_seeds, args.b_seeds, args.c_seeds)]
    data_mode = [x is not None for x in (args.a, args.b, args.c_indices)]
    if any(seed_mode) and any(data_mode):
        raise ValueError("use either --a-seeds/--b-seeds/--c-seeds or --a/--b/--c-indices with --data, not both")
    if any(seed_mode):
        if not all(seed_mode):
            raise ValueError("seed arithmetic needs all of --a-seeds, --b-seeds and --c-seeds")
        images = seed_arithmetic(model, args.a_seeds, args.b_seeds, args.c_seeds, label=args.label,
                                 truncation=args.truncation)
        what = f"seeds mean({args.a_seeds}) - mean({args.b_seeds}) + c for c in {args.c_seeds}"
    else:
        if not all(data_mode):
            raise ValueError("image arithmetic needs --data, --a CLASS, --b CLASS and --c-indices "
                             "(or give --a-seeds, --b-seeds and --c-seeds instead)")
        from atelier.creative.latent import require_encoder

        require_encoder(model, "image arithmetic (--a/--b/--c-indices)")
        if args.label is not None:
            raise ValueError("--label applies to seed arithmetic only")
        dataset = _load_data(model, args, "image arithmetic")
        a, b = _class_index(dataset, args.a, "--a"), _class_index(dataset, args.b, "--b")
        groups = {}
        for name, cls in (("A", a), ("B", b)):
            index = torch.nonzero(dataset.labels == cls).flatten()[: args.group_size]
            if index.numel() == 0:
                raise ValueError(f"{dataset.name} has no images of class {dataset.classes[cls]!r} (group {name})")
            groups[name] = (dataset.images[index], _labels_for(model, dataset, index))
        c_index = _check_indices(dataset, args.c_indices, "--c-indices")
        images = image_arithmetic(model, groups["A"][0], groups["B"][0], dataset.images[c_index],
                                  labels_a=groups["A"][1], labels_b=groups["B"][1],
                                  labels_c=_labels_for(model, dataset, c_index))
        what = (f"mean(class {dataset.classes[a]}, {len(groups['A'][0])} images) - mean(class {dataset.classes[b]}, "
                f"{len(groups['B'][0])} images) + images {args.c_indices} of {dataset.name}")
    out = _png_out(args.out, "arithmetic.png")
    save_grid(images, out, nrow=2)
    print(f"latent arithmetic, {what}: wrote {out} (one row per C: C, result)")
    return 0


def _encoder_and_data(args, what: str):
    """(a model with an encoder, the --data dataset, a seeded subset of --n indices)."""
    from atelier.creative.latent import require_encoder

    model = _load_model(args)
    require_encoder(model, what)
    dataset = _load_data(model, args, what)
    return model, dataset, _subset(dataset, args.n, args.seed)


def _cmd_reconstruct(args) -> int:
    from atelier.creative.reconstruct import reconstruction_grid
    from atelier.report.grid import save_grid

    check_int(args.n, "--n", high=MAX_GRID_IMAGES // 2)
    check_int(args.nrow, "--nrow", high=MAX_GRID_IMAGES // 2)
    model, dataset, pick = _encoder_and_data(args, "reconstruction")
    grid, metrics = reconstruction_grid(model, dataset.images[pick], _labels_for(model, dataset, pick), nrow=args.nrow)
    out = _png_out(args.out, "reconstructions.png")
    save_grid(grid, out, nrow=min(args.nrow, len(pick)))
    print(f"reconstructions of {len(pick)} {dataset.name} images: MSE {metrics['mse']:.5f}  "
          f"PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}")
    print(f"wrote {out} (originals above their reconstructions)")
    return 0


def _cmd_latent_map(args) -> int:
    from atelier.creative.latent_map import latent_map

    check_int(args.n, "--n", low=2 if args.method == "pca" else 4,
              high=MAX_TSNE_POINTS if args.method == "tsne" else None)
    model, dataset, pick = _encoder_and_data(args, "a latent map")
    labels = dataset.labels[pick] if dataset.labels is not None else None
    out = _png_out(args.out, f"latent_map_{args.method}.png")
    coords = latent_map(model, dataset.images[pick], _labels_for(model, dataset, pick), method=args.method,
                        path=out, class_names=dataset.classes, seed=args.seed, color_labels=labels)
    print(f"latent map ({args.method}) of {coords.shape[0]} {dataset.name} images: wrote {out}")
    return 0


def _cmd_novelty(args) -> int:
    from atelier.creative.novelty import nearest_neighbour_pairs
    from atelier.models.sampling import sample_images
    from atelier.report.grid import save_grid

    check_int(args.n, "--n", high=MAX_NOVELTY_SAMPLES)
    check_int(args.k, "--k", high=MAX_GRID_IMAGES // 2)
    check_float(args.truncation, "--truncation")
    model = _load_model(args)
    dataset = _load_data(model, args, "novelty")
    samples = sample_images(model, args.n, seed=args.seed, label=args.label, truncation=args.truncation)
    result = nearest_neighbour_pairs(samples.images, dataset.images, k=args.k)
    out = _png_out(args.out, "novelty.png")
    save_grid(result.pairs, out, nrow=2 * min(4, len(result.shown)))
    d = result.distances
    print(f"{args.n} samples vs {len(dataset)} {dataset.name} images: nearest-neighbour RMS pixel distance "
          f"median {float(d.median()):.4f}, min {float(d.min()):.4f} (0 = exact copy)")
    print(f"wrote {out} ({len(result.shown)} closest samples, each followed by its nearest training image)")
    return 0


# -- parser -----------------------------------------------------------------------------------
def _common(p, *, seed_help: str | None, seed_default: int | None = 0, split: str = "test") -> None:
    p.add_argument("run", metavar="RUN", help="run directory, checkpoint or saved model")
    p.add_argument("--out", required=True, help="output .png (or a folder to write the default name into)")
    if seed_help:
        p.add_argument("--seed", type=int, default=seed_default, help=seed_help)
    p.add_argument("--data", default=None, help="real images: digits | mnist | cifar10 | folder:PATH")
    p.add_argument("--data-dir", default=None, help="local files for the dataset (e.g. MNIST's IDX files)")
    p.add_argument("--split", default=split, help="dataset split: train | test | all")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="use a model whose weights hold NaN/Inf anyway (with a warning); refused otherwise")
    add_model_key_flags(p)


def add_explore_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``explore`` and its subcommands on an argparse ``subparsers`` object."""
    e = subparsers.add_parser("explore", help="look inside a trained model: interpolate, traverse, arithmetic, ...",
                              description="Explore a trained model's latent space; every tool writes a PNG.")
    sub = e.add_subparsers(dest="explore_command", required=True, metavar="TOOL")

    p = sub.add_parser("interpolate", formatter_class=FORMATTER,
                       help="a strip (and GIF) between two seeds, two real images (VAE) or two classes")
    _common(p, seed_help="the latent of --classes")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=int, nargs=2, metavar=("A", "B"), help="from seed A's latent to seed B's")
    which.add_argument("--images", type=int, nargs=2, metavar=("I", "J"),
                       help="VAE: between dataset images I and J (needs --data)")
    which.add_argument("--classes", nargs=2, metavar=("A", "B"),
                       help="conditional models: one latent (--seed), class A morphing into class B (names, e.g. "
                            "airplane ship, or indices)")
    p.add_argument("--steps", type=int, default=10, help=f"frames, both ends included (2..{MAX_STEPS})")
    p.add_argument("--label", default=None, help="class (name or index) of every frame with --seeds (conditional "
                   "models)")
    p.add_argument("--method", choices=("slerp", "lerp"), default="slerp", help="path between seed latents")
    p.add_argument("--truncation", type=float, default=None,
                   help="draw seed latents from the normal truncated to +-T (T > 0)")
    p.add_argument("--duration-ms", type=int, default=80, help=f"GIF frame time (1..{MAX_FRAME_MS})")
    p.add_argument("--no-gif", action="store_true", help="write only the PNG strip, not the .gif beside it")
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser("traverse", formatter_class=FORMATTER,
                       help="one row per latent dimension, swept over a range of values")
    _common(p, seed_default=None, seed_help="base latent: this seed's prior latent instead of zeros "
            "(also picks the --kl-n images)")
    p.add_argument("--dims", type=_ints, default=None, help="comma-separated dimensions (default: the first "
                   "--max-rows, or with --data on a VAE the highest-KL ones)")
    p.add_argument("--range", type=float, default=3.0, help="sweep each dimension over [-R, R] (R finite, > 0)")
    p.add_argument("--steps", type=int, default=9, help=f"values per dimension (rows x steps at most "
                   f"{MAX_GRID_IMAGES})")
    p.add_argument("--max-rows", type=int, default=10, help="dimensions shown when --dims is not given")
    p.add_argument("--label", default=None, help="class (name or index) of every image (conditional models; "
                   "default 0)")
    p.add_argument("--image", type=int, default=None, help="VAE: start from the posterior mean of this --data image")
    p.add_argument("--kl-n", type=int, default=500, help="images of --data used to rank dimensions by KL (all "
                   "of them if fewer)")
    p.epilog = "The base latent is zeros, or --seed's prior latent, or (--image) a real image's posterior mean."
    p.set_defaults(func=_cmd_traverse)

    p = sub.add_parser("arithmetic", formatter_class=FORMATTER,
                       help="mean(A) - mean(B) + C on latents: class groups of real images (VAE) or seeds")
    _common(p, seed_help=None)
    p.add_argument("--a", default=None, help="VAE: class (name or index) of group A")
    p.add_argument("--b", default=None, help="VAE: class (name or index) of group B")
    p.add_argument("--c-indices", type=_ints, default=None, help=f"VAE: dataset indices of the C images (at most "
                   f"{MAX_GRID_IMAGES // 2})")
    p.add_argument("--group-size", type=int, default=200, help="VAE: at most this many images per class group")
    p.add_argument("--a-seeds", type=_ints, default=None, help=f"any model: seeds of group A (at most {MAX_SEEDS:,})")
    p.add_argument("--b-seeds", type=_ints, default=None, help=f"any model: seeds of group B (at most {MAX_SEEDS:,})")
    p.add_argument("--c-seeds", type=_ints, default=None, help=f"any model: seeds of the C latents (at most "
                   f"{MAX_GRID_IMAGES // 2})")
    p.add_argument("--label", default=None, help="seeds on a conditional model: class (name or index) drawn "
                   "(default 0)")
    p.add_argument("--truncation", type=float, default=None,
                   help="draw seed latents from the normal truncated to +-T (T > 0)")
    p.set_defaults(func=_cmd_arithmetic)

    p = sub.add_parser("reconstruct", formatter_class=FORMATTER,
                       help="VAE: real images above their reconstructions, with MSE / PSNR / SSIM")
    _common(p, seed_help="picks the images")
    p.add_argument("--n", type=int, default=16, help=f"images (picked at random with --seed; at most "
                   f"{MAX_GRID_IMAGES // 2}, all of the data if fewer)")
    p.add_argument("--nrow", type=int, default=8, help="images per row")
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("latent-map", formatter_class=FORMATTER,
                       help="VAE: 2-D map of posterior means (PCA or t-SNE) coloured by class")
    _common(p, seed_help="picks the images; t-SNE's random state")
    p.add_argument("--n", type=int, default=2000, help=f"images (picked at random with --seed; all of the data if "
                   f"fewer; tsne: at most {MAX_TSNE_POINTS:,})")
    p.add_argument("--method", choices=("pca", "tsne"), default="pca")
    p.set_defaults(func=_cmd_latent_map)

    p = sub.add_parser("novelty", formatter_class=FORMATTER,
                       help="samples next to their nearest training images; median distance")
    _common(p, split="train", seed_help="the samples' latents")
    p.add_argument("--n", type=int, default=64, help=f"samples to draw (at most {MAX_NOVELTY_SAMPLES:,})")
    p.add_argument("--k", type=int, default=16, help=f"pairs shown (the closest to the training set; at most "
                   f"{MAX_GRID_IMAGES // 2})")
    p.add_argument("--label", default=None, help="class (name or index) drawn (conditional models; default: all)")
    p.add_argument("--truncation", type=float, default=None,
                   help="draw latents from the normal truncated to +-T (T > 0)")
    p.set_defaults(func=_cmd_novelty)

    from atelier.cli.flow_tools import add_flow_tools

    add_flow_tools(sub, _common, _load_model, _png_out)
    return e
