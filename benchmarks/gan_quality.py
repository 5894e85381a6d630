"""Quality of generated images with the full evaluation suite, bracketed by floor and ceilings.

    python benchmarks/gan_quality.py RUN_DIR_OR_NPZ [...] [--json]                       # MNIST, 28 px
    python benchmarks/gan_quality.py RUN [...] --data folder:/tmp/data/cifar10 --resolution 32   # CIFAR-10

Every row is evaluated by one :class:`atelier.metrics.Evaluator` against the test split of ``--data``
(its domain extractor: mnist-cnn for MNIST, cifar10-cnn for CIFAR-10, the fitted folder extractor for a
labelled folder; n = 10,000, seed 0): the floor (n *training* images: real data that is not the test set;
memorisation reads 1.0 because these *are* training images), two ceilings (uniform noise, the mean
training image repeated), then each input: a run directory (sampled here with the seed; a conditional
model cycles through the classes) or an .npz with ``images`` (and optionally ``labels``).

Besides the distribution metrics, the extractor's classifier says whether samples look like the classes:
its mean top-class confidence, the share of samples it is more than 90% sure of, the smallest share any
class gets (1/K would be balanced) and, for samples with labels, how often it agrees with the label the
sample was drawn for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from atelier.metrics import METRIC_KEYS, EvalConfig, Evaluator, load_generated

COLUMNS = ("fid", "kid_mean", "is", "precision", "recall", "density", "coverage", "c2st_accuracy",
           "near_copy_fraction", "confidence", "confident_share", "smallest_class", "label_agreement")


def class_view(ev: Evaluator, images: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """The evaluator's classifier on ``images``: confidence, class balance and agreement with ``labels``."""
    logits = ev.extractor(images, batch_size=500, progress=False).logits
    if logits is None:
        return {}
    probs = logits.softmax(dim=1)
    conf, top = probs.max(dim=1)
    shares = torch.bincount(top, minlength=probs.shape[1]).float() / len(top)
    view = {"confidence": conf.mean().item(), "confident_share": (conf > 0.9).float().mean().item(),
            "smallest_class": shares.min().item()}
    if labels is not None:
        view["label_agreement"] = (top == labels.to(top.device)).float().mean().item()
    return view


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="run directories or .npz files")
    p.add_argument("--data", default="mnist", help="real data: mnist, cifar10, folder:PATH")
    p.add_argument("--data-dir", default=None, help="mnist: the IDX folder (default ../shared/datasets/mnist)")
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--extractor", default=None, help="default: the dataset's domain extractor")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    data_dir = args.data_dir
    if data_dir is None and args.data == "mnist":
        data_dir = str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist")
    ev = Evaluator(EvalConfig(data=args.data, data_dir=data_dir, n=args.n, seed=args.seed, extractor=args.extractor),
                   resolution=args.resolution, progress=False)
    train = ev.train_images()
    g = torch.Generator().manual_seed(args.seed)
    n = min(args.n, len(train))
    shape = (n, *train.shape[1:])
    rows: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {
        "train_vs_test (floor)": (train[torch.randperm(len(train), generator=g)[:n]], None),
        "uniform_noise (ceiling)": (torch.randint(0, 256, shape, generator=g, dtype=torch.uint8), None),
        "mean_image (ceiling)": (train.float().mean(0, keepdim=True).round().to(torch.uint8).expand(shape).contiguous(), None),
    }
    for source in args.inputs:
        generated = load_generated(source, n=n, seed=args.seed, resolution=args.resolution)
        rows[source] = (generated.images, generated.labels)
    results = {"provenance": None, "rows": {}}
    for name, (images, labels) in rows.items():
        r = ev.evaluate(images, source=name)
        results["rows"][name] = {**{k: r.metrics.get(k) for k in METRIC_KEYS}, **class_view(ev, images, labels)}
        results["provenance"] = {k: v for k, v in r.provenance.items() if k not in ("config", "source", "date")}
    if args.json:
        print(json.dumps(results))
        return
    prov = results["provenance"]
    accuracy = prov.get("classifier_test_accuracy")
    print(f"{prov['extractor']} ({prov['extractor_sha256'][:12]}"
          + (f", test accuracy {accuracy:.4f}" if accuracy is not None else "")
          + f"); n = {prov['n_real']} real ({prov['dataset']}:{prov['split']})")
    print(f"{'input':44s}" + "".join(f"{c[:10]:>11s}" for c in COLUMNS))
    for name, r in results["rows"].items():
        print(f"{name[-44:]:44s}" + "".join(f"{r[c]:11.4g}" if r.get(c) is not None else f"{'-':>11s}" for c in COLUMNS))


if __name__ == "__main__":
    main()
