"""Train the textbook eager DCGAN (benchmarks/reference_dcgan.py) for a wall-clock budget, then write
samples as an .npz for gan_quality.py: "the classic DCGAN reference in the same minutes".

    python benchmarks/reference_dcgan_train.py --minutes 10 --out ref_samples.npz          # MNIST 64x64
    python benchmarks/reference_dcgan_train.py --data folder:/tmp/data/cifar10 --resolution 32 \
        --channels 3 [--conditional] --minutes 10 --out ref_cifar.npz                        # CIFAR-10

Data is loaded once into memory (uint8) as the textbook benchmark does; batches are drawn by a fresh
permutation per epoch. The .npz holds ``images`` (N, H, W, C) uint8 and, when conditional, ``labels``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_dcgan import ReferenceDCGAN  # noqa: E402

from atelier.data import load_dataset, to_float, to_uint8  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", help="dataset spec (mnist, cifar10, folder:PATH)")
    p.add_argument("--data-dir", default=None, help="mnist: the IDX folder (default ../shared/datasets/mnist)")
    p.add_argument("--resolution", type=int, default=64, choices=(32, 64))
    p.add_argument("--channels", type=int, default=None, choices=(1, 3))
    p.add_argument("--conditional", action="store_true", help="the textbook conditional DCGAN (one-hot labels)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reference_samples.npz")
    args = p.parse_args()
    data_dir = args.data_dir
    if data_dir is None and args.data == "mnist":
        data_dir = str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist")
    dataset = load_dataset(args.data, data_dir=data_dir, resolution=args.resolution, channels=args.channels,
                           progress=False)
    data, labels = dataset.images, dataset.labels
    num_classes = len(dataset.classes) if args.conditional else 0
    if args.conditional and labels is None:
        raise SystemExit(f"{args.data} has no labels: --conditional needs them")
    torch.manual_seed(args.seed)
    ref = ReferenceDCGAN(nc=dataset.channels, resolution=args.resolution, num_classes=num_classes)
    deadline, steps, t0 = time.monotonic() + args.minutes * 60, 0, time.monotonic()
    while time.monotonic() < deadline:
        perm = torch.randperm(len(data))
        for i in range(len(data) // args.batch_size):
            if time.monotonic() >= deadline:
                break
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            ref.step(to_float(data[idx]), labels[idx] if num_classes else None)
            steps += 1
    seconds = time.monotonic() - t0
    summary = {"steps": steps, "epochs": round(steps * args.batch_size / len(data), 3),
               "images_per_s": round(steps * args.batch_size / seconds, 1), "seconds": round(seconds, 1),
               "conditional": bool(num_classes), "data": dataset.name, "resolution": args.resolution}
    # Sampled as the PyTorch example shows its samples: the generator in training mode (batch statistics).
    # Conditional: the labels cycle through the classes, so every class gets n/K samples.
    sample_labels = torch.arange(args.n) % num_classes if num_classes else None
    chunks = []
    with torch.no_grad():
        for i in range(0, args.n, 500):
            lab = sample_labels[i:i + 500] if num_classes else None
            chunks.append(to_uint8(ref.generate(torch.randn(min(500, args.n - i), ref.nz), lab)))
    images = torch.cat(chunks)
    buf = io.BytesIO()
    extra = {"labels": sample_labels.numpy()} if num_classes else {}
    np.savez_compressed(buf, images=images.permute(0, 2, 3, 1).numpy(), **extra)
    Path(args.out).write_bytes(buf.getvalue())
    print(json.dumps({**summary, "out": args.out}))


if __name__ == "__main__":
    main()
