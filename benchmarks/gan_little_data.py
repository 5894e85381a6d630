"""GAN training on 1,000 MNIST images, with and without DiffAugment / ADA (issue 6).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/gan_little_data.py --data-dir ../shared/datasets/mnist \\
        --steps 3000 --modes none,diffaugment,ada --seeds 0 --out runs/little_data

A fixed subset of the MNIST training split (``--subset`` images, 1/10 per class, drawn with
``--subset-seed``) is all the GAN ever sees. Every mode trains the same model (the conditional
``dcgan`` by default, ``--unconditional`` for the plain one) for the same number of steps with the
same seed -- the same steps rather than the same minutes, so that other load on a shared machine
cannot favour one mode -- then draws ``--n`` samples from the EMA generator and measures FID and KID
with the ``mnist-cnn`` classifier features against the full 10,000-image test split. With
``--eval-every`` it also records the FID curve (``--eval-n`` samples) along the way, next to
``rt`` = E[sign(D(real))], the discriminator's overfitting signal (near 1: it is sure of every
training image). For reference it reports the FID of the training subset itself (what copying it
would score), and, since FID cannot see copying, each run's share of samples nearer (pixel RMS) to
one of the 1,000 training images than 99% of test images are (``near_copy_fraction``; about 0.01
for fresh samples). ``--resume`` continues the runs already in ``--out`` from their checkpoints to a
larger ``--steps`` (or, at the same ``--steps``, only evaluates them again).

Prints JSON: provenance (extractor and its hash, n, split, subset), then one row per mode and seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from atelier.config import environment, to_dict
from atelier.data import ImageDataset, load_dataset, to_uint8
from atelier.metrics import EvalConfig, Evaluator
from atelier.metrics.memorisation import novelty
from atelier.models.registry import create_model
from atelier.train import GANTrainConfig, Trainer
from atelier.models.pretrained import latest_checkpoint
from atelier.train.checkpoint import load_train_state
from atelier.device import resolve_precision
from atelier.device import resolve_device
from atelier.train.evaluation import EvalHook
from atelier.train.steps.gan import GANStep

MODES = ("none", "diffaugment", "ada")


def class_balanced_subset(data: ImageDataset, size: int, seed: int) -> ImageDataset:
    """``size`` images, the same number from each class, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    classes = int(data.labels.max()) + 1
    per_class = size // classes
    picks = []
    for c in range(classes):
        members = (data.labels == c).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    index = torch.cat(picks).sort().values
    return data.subset(index)


def train_one(subset: ImageDataset, mode: str, seed: int, args, evaluator: Evaluator, out: Path) -> dict:
    device = resolve_device(args.device)
    policy = args.diffaugment_policy if mode == "diffaugment" else None
    cfg = GANTrainConfig(steps=args.steps, batch_size=args.batch_size, seed=seed, augment=mode, augment_policy=policy,
                      ada_kimg=args.ada_kimg, ada_target=args.ada_target,
                      precision=resolve_precision(args.precision, device), device=str(device),
                      log_every=args.log_every, sample_every=args.steps, checkpoint_every=args.steps,
                      tensorboard=False, progress=False)
    torch.manual_seed(seed)
    model = create_model("dcgan", resolution=28, channels=1, num_classes=0 if args.unconditional else 10)
    step = GANStep(model, cfg, device)
    run_dir = out / (f"{mode}_seed{seed}" if policy is None else f"{mode}-{policy.replace(',', '+')}_seed{seed}")
    ckpt = latest_checkpoint(run_dir) if args.resume else None
    resume = ckpt is not None
    done = resume and load_train_state(ckpt)["step"] >= args.steps  # only (re-)evaluate the final model
    hooks = [EvalHook(lambda: evaluator, every=args.eval_every, n=args.eval_n, seed=seed)] \
        if args.eval_every and not done else []
    run_config = {"model": {"name": "dcgan", **model.model_config_dict()}, "train": to_dict(cfg),
                  "data": {"name": "mnist", "subset": len(subset), "subset_seed": args.subset_seed},
                  "environment": environment()}
    trainer = Trainer(step, subset, cfg, run_dir, run_config=run_config, device=device, hooks=hooks)
    t0 = time.perf_counter()
    result = trainer.fit(resume=resume)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        images = to_uint8(model.sample(args.n, generator=torch.Generator().manual_seed(seed)))
    final = evaluator.evaluate(images, metrics=("fid", "kid"), source=f"{mode} seed {seed}")
    # Copying: FID against the test split cannot see it (the training subset itself scores well), so
    # match the samples to the 1,000 training images. Near-copy: nearer than 99% of test images are.
    copies = novelty(images, subset.images, heldout=evaluator.real.images, seed=seed)
    tail = result.history[-max(1, len(result.history) // 10):]  # the last tenth of the logged windows
    epochs = round(result.steps * args.batch_size / len(subset), 1)
    row = {"mode": mode, "seed": seed, "steps": result.steps, "epochs": epochs, "precision": cfg.precision,
           "resumed": resume, "train_seconds": round(result.seconds, 1), "seconds_with_eval": round(seconds, 1),
           "fid": final.metrics["fid"], "kid_mean": final.metrics["kid_mean"],
           "near_copy_fraction": copies.near_copy_fraction, "memorisation_ratio": copies.memorisation_ratio,
           "median_nn_distance": float(copies.distances.median()),
           "test_median_nn_distance": float(copies.heldout_distances.median()),
           "rt_end": statistics.mean(h["rt"] for h in tail),
           "d_real_end": statistics.mean(h["d_real"] for h in tail),
           "d_fake_end": statistics.mean(h["d_fake"] for h in tail)}
    if mode == "ada":
        row["aug_p_end"] = result.history[-1]["aug_p"]
        row["aug_p_curve"] = [(h["step"], round(h["aug_p"], 4)) for h in result.history]
    row["rt_curve"] = [(h["step"], round(h["rt"], 3)) for h in result.history]
    if result.evaluations:
        row["fid_curve"] = [(e["step"], round(e["fid"], 3)) for e in result.evaluations]
        best = min(result.evaluations, key=lambda e: e["fid"])
        row["best_curve_fid"], row["best_curve_step"] = best["fid"], best["step"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: none, diffaugment, ada")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--subset", type=int, default=1000)
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--unconditional", action="store_true", help="the plain dcgan instead of the conditional one")
    p.add_argument("--diffaugment-policy", default=None, help="e.g. translation (default: color,translation,cutout)")
    p.add_argument("--ada-kimg", type=float, default=100.0)
    p.add_argument("--ada-target", type=float, default=0.6)
    p.add_argument("--n", type=int, default=10000, help="samples for the final FID (and real test images used)")
    p.add_argument("--eval-every", type=int, default=None, help="also record the FID every K steps")
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/little_data")
    p.add_argument("--resume", action="store_true",
                   help="continue each run found in --out to --steps (e.g. to see if a gap opens with longer training)")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        p.error(f"unknown mode(s) {sorted(unknown)}; choose from {', '.join(MODES)}")

    evaluator = Evaluator(EvalConfig(data="mnist", data_dir=args.data_dir, split="test", n=args.n, seed=0,
                                     metrics=("fid", "kid")), resolution=28, channels=1, progress=False)
    train = load_dataset("mnist", resolution=28, split="train", data_dir=args.data_dir, progress=False)
    subset = class_balanced_subset(train, args.subset, args.subset_seed)
    subset.name = f"mnist:train[{args.subset} balanced, seed {args.subset_seed}]"
    copy = evaluator.evaluate(subset.images, metrics=("fid", "kid"), source="the training subset")
    prov = copy.provenance
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress lines: stdout is for the JSON
        rows = [train_one(subset, mode, int(seed), args, evaluator, Path(args.out))
                for seed in args.seeds.split(",") for mode in modes]
    summary = {}
    for mode in modes:
        fids = [r["fid"] for r in rows if r["mode"] == mode]
        summary[mode] = {"fid_mean": statistics.mean(fids), "fid_min": min(fids), "fid_max": max(fids),
                         "runs": len(fids)}
    for r in rows:  # a readable digest on stderr; the JSON on stdout
        extra = f", p {r['aug_p_end']:.3f}" if "aug_p_end" in r else ""
        best = (f", best along the way {r['best_curve_fid']:.2f} at {r['best_curve_step']}"
                if "best_curve_fid" in r else "")
        print(f"{r['mode']:12s} seed {r['seed']}: FID {r['fid']:.2f}, KID {r['kid_mean']:.4f}, "
              f"near copies {r['near_copy_fraction']:.3f}, rt {r['rt_end']:.2f}"
              f"{extra}{best} ({r['train_seconds']:.0f} s)", file=sys.stderr)
    print(json.dumps({
        "provenance": {"extractor": prov["extractor"], "extractor_sha256": prov["extractor_sha256"],
                       "real": f"{prov['dataset']}:{prov['split']}", "n_real": prov["n_real"], "n_fake": args.n,
                       "subset": subset.name, "model": "dcgan" + ("" if args.unconditional else " --conditional"),
                       "steps": args.steps, "batch_size": args.batch_size, "same": "steps",
                       "threads": torch.get_num_threads(), "torch": torch.__version__},
        "training_subset_fid": copy.metrics["fid"],
        "summary": summary,
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
