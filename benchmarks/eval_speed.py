"""Speed of the evaluator: FID + KID + precision/recall for 10,000 vs 10,000 MNIST images with the
domain classifier, reference statistics cached (the issue's target: under 30 s on 2 CPU cores).

    python benchmarks/eval_speed.py --data-dir ../shared/datasets/mnist [--repeats 5] [--json]

The "generated" set is 10,000 MNIST training images (speed does not depend on what the images show).
Reported: the one-off cost of the real reference (uncached), then per repeat the time of
FID+KID+PR (extracting the generated features included), of the full suite, and, on the same
features, torchmetrics' FID+KID (100 subsets of 1,000, like ours) as a reference point.
Medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from atelier.data import load_dataset
from atelier.metrics import EvalConfig, Evaluator


class _Identity(torch.nn.Module):
    num_features = 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def torchmetrics_fid_kid(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=_Identity())
    kid = KernelInceptionDistance(feature=_Identity(), subsets=100, subset_size=1000)
    for m in (fid, kid):
        m.update(real.view(*real.shape, 1, 1), real=True)
        m.update(fake.view(*fake.shape, 1, 1), real=False)
    return float(fid.compute()), float(kid.compute()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance`")

    cfg = EvalConfig(data="mnist", data_dir=args.data_dir, n=args.n)
    t0 = time.perf_counter()
    Evaluator(EvalConfig(**{**cfg.__dict__, "cache": False}), resolution=28, progress=False)
    uncached = time.perf_counter() - t0
    Evaluator(cfg, resolution=28, progress=False)  # fill the cache
    train = load_dataset("mnist", data_dir=args.data_dir, split="train", progress=False)
    fake = train.images[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[: args.n]]

    rows: dict[str, list[float]] = {"setup_cached_s": [], "fid_kid_pr_s": [], "full_suite_s": [], "torchmetrics_fid_kid_s": []}
    values = {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ev = Evaluator(cfg, resolution=28, progress=False)
        rows["setup_cached_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fast = ev.evaluate(fake, metrics=("fid", "kid", "pr"))
        rows["fid_kid_pr_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        full = ev.evaluate(fake)
        rows["full_suite_s"].append(time.perf_counter() - t0)
        feats = ev.extractor(fake).features
        t0 = time.perf_counter()
        tm_fid, tm_kid = torchmetrics_fid_kid(ev.reference.features, feats)
        rows["torchmetrics_fid_kid_s"].append(time.perf_counter() - t0)
        values = {"fid": fast.metrics["fid"], "kid_mean": fast.metrics["kid_mean"], "torchmetrics_fid": tm_fid,
                  "torchmetrics_kid_mean": tm_kid, "full_suite_breakdown_s": {k: round(v, 2) for k, v in full.timings.items()}}
    result = {
        "n": args.n, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "reference_uncached_s": round(uncached, 2),
        **{k: round(statistics.median(v), 2) for k, v in rows.items()},
        **values,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v}")


if __name__ == "__main__":
    main()
