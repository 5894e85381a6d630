"""Quality of generated MNIST digits, measured with a domain classifier.

    python benchmarks/gan_quality.py RUN_DIR_OR_NPZ [...] --data-dir ../shared/datasets/mnist --json

For each input (a run directory, sampled here with a fixed seed, or an .npz with ``images``) it
reports the Fréchet distance to the MNIST test split in the classifier's 128-d feature space
("classifier FID"), the share of samples the classifier assigns to each class and its mean
confidence. The floor (MNIST train vs test) and two ceilings (uniform noise, the mean image) are
measured in the same run. The classifier is fitted once and cached in $ATELIER_HOME/classifiers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from atelier.data import load_dataset
from atelier.metrics import feature_stats, frechet_distance
from atelier.metrics.classifier import fit_classifier, load_classifier, predict, save_classifier

NAME = "mnist-cnn"


def load_images(source: str, n: int, seed: int) -> torch.Tensor:
    """(n, 1, 28, 28) uint8 from a run directory or an .npz file."""
    path = Path(source)
    if path.suffix == ".npz":
        images = torch.from_numpy(np.load(path)["images"][:n]).permute(0, 3, 1, 2)
    else:
        from atelier.creative import sample_images
        from atelier.models import load_pretrained

        images = sample_images(load_pretrained(path), n, seed=seed).images
    if images.shape[1] == 3:
        images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    if images.shape[-1] != 28:
        x = F.interpolate(images.float(), size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        images = x.round().clamp(0, 255).to(torch.uint8)
    return images


def evaluate(model, images: torch.Tensor, test_stats) -> dict:
    logits = predict(model, images)
    probs = logits.softmax(1)
    counts = torch.bincount(probs.argmax(1), minlength=10).float() / len(images)
    stats = feature_stats(predict(model, images, features=True))
    return {
        "classifier_fid": round(frechet_distance(stats, test_stats), 3),
        "mean_confidence": round(float(probs.max(1).values.mean()), 4),
        "confident_fraction": round(float((probs.max(1).values > 0.9).float().mean()), 4),
        "min_class_share": round(float(counts.min()), 4),
        "class_shares": [round(float(c), 4) for c in counts],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="run directories or .npz files")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refit", action="store_true", help="fit the classifier again even if cached")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    train = load_dataset("mnist", data_dir=args.data_dir, split="train", progress=False)
    test = load_dataset("mnist", data_dir=args.data_dir, split="test", progress=False)
    fitted = None if args.refit else load_classifier(NAME)
    if fitted is None:
        t0 = time.time()
        fitted = fit_classifier(train, test, epochs=3)
        save_classifier(fitted, NAME)
        print(f"fitted {NAME} in {time.time() - t0:.0f} s: test accuracy {fitted.test_accuracy:.4f}", file=sys.stderr)
    model = fitted.model
    n = min(args.n, len(test))
    test_stats = feature_stats(predict(model, test.images[:n], features=True))
    g = torch.Generator().manual_seed(args.seed)
    rows = {
        "mnist_train_vs_test (floor)": train.images[torch.randperm(len(train), generator=g)[:n]],
        "uniform_noise (ceiling)": torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
        "mean_image (ceiling)": train.images.float().mean(0, keepdim=True).round().to(torch.uint8).expand(n, -1, -1, -1),
    }
    results = {"classifier": {"name": NAME, "sha256": fitted.sha256, "test_accuracy": fitted.test_accuracy},
               "n": n, "reference": "MNIST test split", "rows": {}}
    for name, images in rows.items():
        results["rows"][name] = evaluate(model, images, test_stats)
    for source in args.inputs:
        results["rows"][source] = evaluate(model, load_images(source, n, args.seed), test_stats)
    if args.json:
        print(json.dumps(results))
    else:
        print(f"classifier {NAME}: test accuracy {fitted.test_accuracy:.4f}; n = {n} vs MNIST test")
        print(f"{'input':60s} {'clsFID':>9s} {'conf':>7s} {'>0.9':>7s} {'min class':>9s}")
        for name, r in results["rows"].items():
            print(f"{name[-60:]:60s} {r['classifier_fid']:9.3f} {r['mean_confidence']:7.4f} "
                  f"{r['confident_fraction']:7.4f} {r['min_class_share']:9.4f}")


if __name__ == "__main__":
    main()
