"""Training throughput of the DCGAN step: atelier's variants against a textbook eager baseline.

    python benchmarks/train_throughput.py --model dcgan64 --batch-size 64 --json

Each variant runs in its own process (so peak memory is its own), warms up, then times several
repeats of a fixed number of steps on data already in memory; the median images/s is reported,
with the ratio to the eager baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    # name: (precision, channels_last, compile)
    "atelier-fp32": ("fp32", False, False),
    "atelier-channels-last": ("fp32", True, False),
    "atelier-bf16": ("bf16", False, False),
    "atelier-bf16-channels-last": ("bf16", True, False),
    "atelier-compile-fp32": ("fp32", False, True),
    "atelier-compile-bf16-channels-last": ("bf16", True, True),
}


def images_in_memory(n: int, resolution: int, channels: int):
    """MNIST resized to the model's resolution when the shared copy is there; else random pixels
    (throughput does not depend on the pixel values)."""
    import torch

    mnist = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
    if mnist.is_dir() and channels == 1:
        from atelier.data import load_dataset

        return load_dataset("mnist", data_dir=mnist, resolution=resolution, progress=False).subset(slice(0, n))
    from atelier.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (n, channels, resolution, resolution), generator=g, dtype=torch.uint8))


def run_variant(variant: str, model_name: str, batch_size: int, steps: int, repeats: int, warmup: int) -> dict:
    import torch

    from atelier import create_model

    if variant == "reference":
        sys.path.insert(0, str(Path(__file__).parent))
        from reference_dcgan import ReferenceDCGAN

        torch.manual_seed(0)
        ref = ReferenceDCGAN()
        data = images_in_memory(batch_size * 8, 64, 1).images

        def one_step(i: int) -> None:
            idx = torch.randint(0, len(data), (batch_size,))
            ref.step(data[idx].float().div(127.5).sub(1))
    else:
        from atelier.train.batches import BatchSampler
        from atelier.train.steps.gan import GANStep, GANTrainConfig

        precision, channels_last, compile_ = VARIANTS[variant]
        cfg = GANTrainConfig(batch_size=batch_size, precision=precision, channels_last=channels_last,
                             compile=compile_, tensorboard=False, progress=False)
        torch.manual_seed(0)
        gan = create_model(model_name)
        step = GANStep(gan, cfg, torch.device("cpu"))
        dataset = images_in_memory(batch_size * 8, gan.config.resolution, gan.config.channels)
        sampler = BatchSampler(dataset, batch_size, 0, device=torch.device("cpu"), channels_last=channels_last)

        def one_step(i: int) -> None:
            logs = step.train_step(sampler(i), i)
            float(logs["loss_d"])  # the trainer reads every loss (NaN guard)

    t0 = time.perf_counter()
    for i in range(warmup):
        one_step(i)
    warmup_s = time.perf_counter() - t0
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            one_step(warmup + r * steps + i)
        rates.append(steps * batch_size / (time.perf_counter() - t0))
    return {
        "variant": variant,
        "images_per_second": statistics.median(rates),
        "repeats": [round(x, 2) for x in rates],
        "warmup_seconds": round(warmup_s, 2),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dcgan64")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", default="reference,atelier-fp32,atelier-bf16-channels-last,"
                   "atelier-compile-bf16-channels-last", help=f"comma list of: reference, {', '.join(VARIANTS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(run_variant(args.worker, args.model, args.batch_size, args.steps, args.repeats, args.warmup)))
        return
    import torch

    results = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--worker", variant, "--model", args.model, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            results.append({"variant": variant, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            print(results[-1], file=sys.stderr)
    base = next((r["images_per_second"] for r in results if r["variant"] == "reference" and "error" not in r), None)
    for r in results:
        if base and "images_per_second" in r:
            r["speedup_vs_reference"] = round(r["images_per_second"] / base, 3)
    ok = [r for r in results if "images_per_second" in r and r["variant"] != "reference"]
    best = max(ok, key=lambda r: r["images_per_second"]) if ok else {}
    summary = {
        "model": args.model, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "images_per_second": best.get("images_per_second"),
        "best_variant": best.get("variant"), "peak_rss_mb": best.get("peak_rss_mb"),
        "speedup_vs_reference": best.get("speedup_vs_reference"), "variants": results,
    }
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
