"""Train the textbook eager DCGAN (benchmarks/reference_dcgan.py) on MNIST at 64x64 for a wall-clock
budget, then write samples as an .npz for gan_quality.py: the "classic DCGAN reference in the same
ten minutes" that the foundation issue compares against.

    python benchmarks/reference_dcgan_train.py --minutes 10 --out ref_samples.npz
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_dcgan import ReferenceDCGAN  # noqa: E402

from atelier.data import load_dataset, to_float, to_uint8  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--out", default="reference_samples.npz")
    args = p.parse_args()
    data = load_dataset("mnist", data_dir=args.data_dir, resolution=64, progress=False).images
    torch.manual_seed(0)
    ref = ReferenceDCGAN()
    deadline, steps, t0 = time.monotonic() + args.minutes * 60, 0, time.monotonic()
    while time.monotonic() < deadline:
        perm = torch.randperm(len(data))
        for i in range(len(data) // args.batch_size):
            if time.monotonic() >= deadline:
                break
            ref.step(to_float(data[perm[i * args.batch_size : (i + 1) * args.batch_size]]))
            steps += 1
    seconds = time.monotonic() - t0
    print(f"reference: {steps} steps, {steps * args.batch_size / len(data):.2f} epochs, "
          f"{steps * args.batch_size / seconds:.1f} images/s", file=sys.stderr)
    # Sampled as the PyTorch example shows its samples: the generator in training mode (batch statistics).
    with torch.no_grad():
        images = torch.cat([to_uint8(ref.G(torch.randn(500, 100, 1, 1))) for _ in range(args.n // 500)])
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images.permute(0, 2, 3, 1).numpy())
    Path(args.out).write_bytes(buf.getvalue())
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
