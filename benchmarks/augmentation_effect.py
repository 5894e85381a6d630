"""Does augmentation help a classifier that has only 1% of MNIST's labels?

    python benchmarks/augmentation_effect.py --data-dir ../shared/datasets/mnist [--seeds 0,1,2] [--json]

One fixed, class-balanced subset of 600 labelled training images (60 per digit, subset seed 0). The
same small CNN (atelier.metrics.classifier.DigitClassifier) is trained on it for the same number of
steps under four conditions, for each classifier seed:

- ``none``: the 600 images as they are;
- ``classic``: atelier's default label-safe pipeline (affine, resized crop, contrast/brightness,
  blur, noise, cutout) applied to every batch;
- ``generative``: half of every batch drawn from samples of a class-conditional DCGAN trained on
  the *same 600 images* (with ADA, the little-data recipe), filtered by the confidence of a
  classifier trained on the same 600 images (no other labels are used anywhere);
- ``both``: generative samples in the batches and the classic pipeline on everything.

Reported: test accuracy on all 10,000 MNIST test images, mean and standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier.data import load_dataset, to_float
from atelier.metrics.classifier import DigitClassifier, predict

CONDITIONS = ("none", "classic", "generative", "both")


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(int(labels.max()) + 1):
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def train_classifier(real_x: torch.Tensor, real_y: torch.Tensor, *, steps: int, seed: int, augment: bool,
                     synth_x: torch.Tensor | None = None, synth_y: torch.Tensor | None = None,
                     batch_size: int = 64, lr: float = 2e-3) -> DigitClassifier:
    """Adam with a one-cycle schedule; images in [-1, 1]. With synthetic data, half of each batch is synthetic."""
    from atelier.augment.pipeline import default_pipeline

    pipe = default_pipeline(channels=1, resolution=28) if augment else None
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier(10, 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    n_real = batch_size if synth_x is None else batch_size // 2
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(real_x), (n_real,), generator=g)
        x, y = real_x[idx], real_y[idx]
        if synth_x is not None:
            j = torch.randint(0, len(synth_x), (batch_size - n_real,), generator=g)
            x, y = torch.cat([x, synth_x[j]]), torch.cat([y, synth_y[j]])
        if pipe is not None:
            x = pipe(x, seed=seed * 1_000_003 + step, value_range=(-1.0, 1.0))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def test_accuracy(model: DigitClassifier, test) -> float:
    return float((predict(model, test.images).argmax(1) == test.labels).float().mean())


def write_subset(images: torch.Tensor, labels: torch.Tensor, root: Path) -> Path:
    """The labelled subset as a class-folder dataset (what a user would point the GAN at)."""
    from atelier.data.images import save_image

    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        path = root / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, path)
    return root


def train_generator(subset_dir: Path, out: Path, steps: int, augment: str) -> Path:
    from atelier.train import DataConfig, GANTrainConfig, train_model

    from atelier.models.pretrained import resolve_pretrained

    try:
        resolve_pretrained(out)
        return out  # a finished run of the same settings (the folder name holds them): reuse it
    except (FileNotFoundError, ValueError):
        pass
    train = GANTrainConfig(steps=steps, batch_size=64, seed=0, augment=augment, progress=False, sample_every=steps,
                        checkpoint_every=steps, log_every=100)
    train_model("dcgan", data=DataConfig(name=f"folder:{subset_dir}", resolution=28, channels=1), train=train,
                out=out, conditional=True, model_kwargs=dict(latent_dim=64, g_width=32, d_width=32))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--per-class", type=int, default=60, help="labelled images per digit (60: 1%% of MNIST)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=1500, help="classifier training steps (batch 64)")
    p.add_argument("--gan-steps", type=int, default=6000)
    p.add_argument("--gan-augment", default="ada", choices=("none", "diffaugment", "ada"))
    p.add_argument("--synthetic-per-class", type=int, default=500)
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="keep generated digits the 600-image classifier recognises this surely")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--out", default="runs/augmentation_effect")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    conditions = [c for c in args.conditions.split(",") if c]
    out = Path(args.out)

    train = load_dataset("mnist", split="train", data_dir=args.data_dir, progress=False)
    test = load_dataset("mnist", split="test", data_dir=args.data_dir, progress=False)
    idx = balanced_subset(train.labels, args.per_class, seed=0)
    real_x, real_y = to_float(train.images[idx]), train.labels[idx]
    report: dict = {"labelled_images": len(idx), "test_images": len(test), "classifier_steps": args.steps,
                    "seeds": seeds, "threads": torch.get_num_threads()}

    synth = None
    if any(c in ("generative", "both") for c in conditions):
        from atelier.creative.generative import generate_labelled

        start = time.perf_counter()
        subset_dir = write_subset(train.images[idx], real_y, out / "subset")
        run = train_generator(subset_dir, out / f"gan-{args.gan_augment}-{args.gan_steps}", args.gan_steps,
                              args.gan_augment)
        gan_seconds = time.perf_counter() - start
        # the confidence filter is the baseline classifier: it too has seen only the 600 labels
        judge = train_classifier(real_x, real_y, steps=args.steps, seed=12345, augment=False)
        judge_acc = test_accuracy(judge, test)
        generated = generate_labelled(run, args.synthetic_per_class, min_confidence=args.min_confidence,
                                      classifier=lambda x: predict(judge, x),
                                      seed=0)
        synth = (to_float(generated.images), generated.labels)
        report["generator"] = {"run": str(run), "steps": args.gan_steps, "augment": args.gan_augment,
                               "seconds_incl_data": round(gan_seconds, 1), "synthetic_images": len(generated.labels),
                               "filter_classifier_test_accuracy": judge_acc, "min_confidence": args.min_confidence}
        print(f"generator ready: {len(generated.labels)} synthetic digits (filter accuracy {judge_acc:.4f})",
              flush=True)

    results: dict[str, list[float]] = {c: [] for c in conditions}
    for seed in seeds:
        for c in conditions:
            start = time.perf_counter()
            use_synth = c in ("generative", "both")
            model = train_classifier(real_x, real_y, steps=args.steps, seed=seed, augment=c in ("classic", "both"),
                                     synth_x=synth[0] if use_synth else None, synth_y=synth[1] if use_synth else None)
            acc = test_accuracy(model, test)
            results[c].append(acc)
            print(f"seed {seed} {c:10s} test accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    summary = {c: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
               for c, v in results.items()}
    report["accuracy"] = summary
    print("\ncondition   test accuracy (mean ± std over seeds)")
    for c, s in summary.items():
        print(f"{c:10s}  {100 * s['mean']:.2f} ± {100 * s['std']:.2f} %")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
