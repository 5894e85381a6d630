"""Augmentation throughput: images/s of a typical 6-op pipeline on CPU batches.

    python benchmarks/augment_speed.py [--repeats 7] [--threads 2] [--per-op]

The pipeline is ``default_pipeline(channels, resolution)`` -- affine, resized crop, colour jitter,
blur, noise, cutout, at their default probabilities -- on uint8 batches, as a data loader would
feed them: 28x28 grey (batch 256, MNIST-like) and 256x256 RGB (batch 32). Each repeat runs every
configuration once, in turn, after two warm-up calls, with a new seed per call (so the probability
gates differ); reported is the median images/s over the repeats, and the spread.

``--per-op`` adds the time of each op alone at p=1, and the speed-up of atelier's fused colour
jitter over ``kornia.augmentation.ColorJitter`` (same factors; measured in this process, so the
ratio holds on a busy machine even when the absolute numbers do not). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from atelier.augment.ops import AugmentOp
from atelier.augment.pipeline import Pipeline, default_pipeline

CONFIGS = [  # (name, channels, resolution, batch)
    ("28px-grey-b256", 1, 28, 256),
    ("256px-rgb-b32", 3, 256, 32),
]


def images(channels: int, resolution: int, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, channels, resolution, resolution), generator=g, dtype=torch.uint8)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pipeline_speed(repeats: int) -> dict:
    setups = [(name, default_pipeline(c, r), images(c, r, b)) for name, c, r, b in CONFIGS]
    for _, pipe, x in setups:  # warm-up
        pipe(x, seed=0)
        pipe(x, seed=1)
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for i in range(repeats):
        for name, pipe, x in setups:
            seconds[name].append(timed(lambda: pipe(x, seed=100 + i)))
    out = {}
    for name, pipe, x in setups:
        rates = [x.shape[0] / s for s in seconds[name]]
        out[name] = {"images_per_s": round(statistics.median(rates), 1), "min": round(min(rates), 1),
                     "max": round(max(rates), 1), "batch": x.shape[0], "ops": [op.name for op in pipe.ops],
                     "p": [op.p for op in pipe.ops]}
    return out


def per_op(repeats: int) -> dict:
    import kornia.augmentation as K

    out: dict = {}
    for name, c, r, b in CONFIGS:
        x = images(c, r, b)
        pipe = default_pipeline(c, r)
        alone = {}
        for op in pipe.ops:
            single = Pipeline([AugmentOp(op.name, p=1.0, **op.params)])
            single(x, seed=0)
            alone[op.name] = round(1000 * statistics.median(timed(lambda: single(x, seed=i)) for i in range(repeats)), 2)
        out[name] = {"ms_per_batch_at_p1": alone}
    # fused colour jitter vs kornia's, at 256 px RGB with the default pipeline's factors
    x = images(3, 256, 32).float() / 255
    ours = Pipeline([AugmentOp("color_jitter", p=1.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)])
    theirs = K.ColorJitter(0.2, 0.2, 0.2, 0.02, p=1.0)
    ours(x, seed=0)
    theirs(x)
    t_ours = statistics.median(timed(lambda: ours(x, seed=i)) for i in range(repeats))
    t_theirs = statistics.median(timed(lambda: theirs(x)) for _ in range(repeats))
    out["color_jitter_256px_rgb_b32"] = {"atelier_ms": round(1000 * t_ours, 2), "kornia_ms": round(1000 * t_theirs, 2),
                                         "speedup": round(t_theirs / t_ours, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--per-op", action="store_true", help="also time each op alone and the colour jitter")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import kornia

    result = {
        "benchmark": "augment_speed", "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "kornia": kornia.__version__, "cpu": platform.processor() or platform.machine(),
        "pipelines": pipeline_speed(args.repeats),
    }
    if args.per_op:
        result["per_op"] = per_op(args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
