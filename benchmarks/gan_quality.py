"""Quality of generated MNIST digits with the full evaluation suite, bracketed by floor and ceilings.

    python benchmarks/gan_quality.py RUN_DIR_OR_NPZ [...] --data-dir ../shared/datasets/mnist [--json]

Every row is evaluated by one :class:`atelier.metrics.Evaluator` against the MNIST test split
(mnist-cnn features, n = 10,000, seed 0): the floor (10,000 MNIST *training* images: real data that is
not the test set; memorisation reads 1.0 because these *are* training images), two ceilings
(uniform noise, the mean training image repeated), then each input: a run directory (sampled here
with the seed) or an .npz with ``images``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from atelier.metrics import METRIC_KEYS, EvalConfig, Evaluator, load_generated

COLUMNS = ("fid", "kid_mean", "is", "precision", "recall", "density", "coverage", "c2st_accuracy",
           "near_copy_fraction")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="run directories or .npz files")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    ev = Evaluator(EvalConfig(data="mnist", data_dir=args.data_dir, n=args.n, seed=args.seed), resolution=28,
                   progress=False)
    train = ev.train_images()
    g = torch.Generator().manual_seed(args.seed)
    n = min(args.n, len(train))
    rows = {
        "mnist_train_vs_test (floor)": train[torch.randperm(len(train), generator=g)[:n]],
        "uniform_noise (ceiling)": torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
        "mean_image (ceiling)": train.float().mean(0, keepdim=True).round().to(torch.uint8).expand(n, -1, -1, -1).contiguous(),
    }
    for source in args.inputs:
        rows[source] = load_generated(source, n=n, seed=args.seed).images
    results = {"provenance": None, "rows": {}}
    for name, images in rows.items():
        r = ev.evaluate(images, source=name)
        results["rows"][name] = {k: r.metrics.get(k) for k in METRIC_KEYS}
        results["provenance"] = {k: v for k, v in r.provenance.items() if k not in ("config", "source", "date")}
    if args.json:
        print(json.dumps(results))
        return
    prov = results["provenance"]
    print(f"{prov['extractor']} ({prov['extractor_sha256'][:12]}, test accuracy {prov['classifier_test_accuracy']:.4f}); "
          f"n = {prov['n_real']} real ({prov['dataset']}:{prov['split']})")
    print(f"{'input':44s}" + "".join(f"{c[:10]:>11s}" for c in COLUMNS))
    for name, r in results["rows"].items():
        print(f"{name[-44:]:44s}" + "".join(f"{r[c]:11.4g}" for c in COLUMNS))


if __name__ == "__main__":
    main()
