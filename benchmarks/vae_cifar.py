"""Test bits/dim of atelier's colour VAE on CIFAR-10 after a wall-clock budget, beside the textbook
convolutional VAE with a Gaussian (MSE) decoder trained for the same time (``reference_vae_cifar.py``).

    OMP_NUM_THREADS=2 python benchmarks/vae_cifar.py --data folder:/tmp/data/cifar10 --minutes 10 \\
        [--model vae-cifar] [--set latent_dim=256 --set width=64] [--iw-k 100] [--iw-n 1000] [--test-n 10000] \\
        [--which ours,reference] [--out runs/vae_cifar] [--threads 2]

Ours is trained through ``atelier.train.train_model`` exactly as ``atelier train vae --model vae-cifar
--data folder:... --minutes M`` would (the preset: a discretised logistic mixture likelihood on the
8-bit pixels, Adam 1e-3, batch 128, the averaged weights scored). The reference runs afterwards in its
own process, so the two never share the cores. Both are scored on the first ``--test-n`` test images
(the ELBO, one posterior sample each) and the first ``--iw-n`` of them (the importance-weighted bound
with ``--iw-k`` samples), in bits per dimension of the 8-bit image: the logistic mixture is a
probability of the 8-bit values already; the reference's Gaussian density gets the bin width (see
``atelier.metrics.likelihood.bits_per_dim``) and its best global sigma, fitted post hoc on the test
images. Prints one JSON object: {"ours": {...}, "reference": {...}, "settings": {...}}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def parse_set(items: list[str]) -> dict:
    """``key=value`` pairs, the values read as JSON where they parse (numbers, true/false), else strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: use KEY=VALUE, e.g. --set latent_dim=128")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_ours(args: argparse.Namespace) -> dict:
    from atelier.data import load_dataset
    from atelier.metrics.likelihood import vae_likelihood
    from atelier.models import load_pretrained
    from atelier.train import DataConfig, family_train_config, train_model

    full = args.test_n >= 10_000  # the run's own end-of-training evaluation covers the whole test split
    train = family_train_config("vae", minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                progress=False, tensorboard=False, log_every=100, sample_every=10**9,
                                checkpoint_every=10**9, iw_samples=args.iw_k if full else 0, iw_images=args.iw_n)
    data = DataConfig(name=args.data, resolution=32, channels=3)
    result = train_model(args.model, data=data, train=train, out=Path(args.out) / "ours", overwrite=True,
                         model_kwargs=parse_set(args.set))
    if full:  # scored by the run itself (its seconds are outside train_seconds)
        scores = dict(result.metrics)
    else:
        t0 = time.monotonic()
        model = load_pretrained(result.run_dir)
        test = load_dataset(args.data, resolution=32, split="test", channels=3, progress=False)
        scores = vae_likelihood(model, test.images[: args.test_n], iw_k=args.iw_k, iw_n=args.iw_n, seed=args.seed)
        scores["eval_seconds"] = time.monotonic() - t0
    saved = json.loads((result.run_dir / "config.json").read_text())
    return {"model": args.model, "config": saved["model"].get("config", saved["model"]), "minutes": args.minutes,
            "steps": result.steps, "train_seconds": result.seconds, "images_per_second": result.images_per_second,
            "precision": saved["train"]["precision"], **scores}


def run_reference(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "reference_vae_cifar.py"), "--json", "--data", args.data,
           "--minutes", str(args.minutes), "--seed", str(args.seed), "--iw-k", str(args.iw_k),
           "--iw-n", str(args.iw_n), "--test-n", str(args.test_n)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the reference failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="folder:/tmp/data/cifar10", help="atelier dataset spec with train and test splits")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget of each model")
    p.add_argument("--model", default="vae-cifar", help="atelier VAE preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a model setting")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iw-k", type=int, default=100, help="importance samples per image (0: skip)")
    p.add_argument("--iw-n", type=int, default=1000, help="test images for the importance-weighted bound")
    p.add_argument("--test-n", type=int, default=10_000, help="test images for the ELBO")
    p.add_argument("--which", default="ours,reference", help="comma-separated: ours, reference")
    p.add_argument("--out", default="runs/vae_cifar", help="run directory of ours (replaced)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both (default: torch's)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    which = {w.strip() for w in args.which.split(",") if w.strip()}
    if not which <= {"ours", "reference"}:
        raise SystemExit(f"--which: expected ours and/or reference, got {args.which!r}")
    result: dict = {"settings": {**{k: v for k, v in vars(args).items() if k != "which"},
                                 "torch_threads": torch.get_num_threads(), "torch": torch.__version__}}
    if "ours" in which:
        result["ours"] = run_ours(args)
    if "reference" in which:
        result["reference"] = run_reference(args)
    if {"ours", "reference"} <= which:
        key = "test_neg_elbo_bpd"
        result["ours_minus_reference_bpd"] = result["ours"][key] - result["reference"][key]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
