"""Does augmentation help a classifier that has only 1% of the labels (MNIST or CIFAR-10)?

    python benchmarks/augmentation_effect.py --data-dir ../shared/datasets/mnist [--seeds 0,1,2] [--json]
    python benchmarks/augmentation_effect.py --data cifar10 --data-dir /tmp/data/cifar10 [--json]

One fixed, class-balanced subset of labelled training images (MNIST: 600, 60 per digit; CIFAR-10:
500, 50 per class; subset seed 0). The same classifier is trained on it for the same number of steps
under four conditions, for each classifier seed:

- ``none``: the labelled images as they are;
- ``classic``: atelier's default label-safe pipeline (affine, resized crop, colour jitter, blur,
  noise, cutout; on CIFAR-10's photos also horizontal flips, which keep their labels) applied to
  every batch;
- ``generative``: half of every batch drawn from samples of a class-conditional GAN (a DCGAN, or
  ``--gan-model resnet-gan``) trained on the *same labelled images* (with ADA, the little-data
  recipe), filtered by the confidence of a classifier trained on the same images (no other labels
  are used anywhere);
- ``both``: generative samples in the batches and the classic pipeline on everything.

The classifier suits the data: on MNIST the small digit CNN (``DigitClassifier``, Adam) at 28x28 grey;
on CIFAR-10 the ``cifar10-cnn`` architecture (the narrow ResNet-9 ``ResNetClassifier``, SGD with Nesterov
momentum, weight decay and label smoothing, as ``fit_classifier`` trains it) at 32x32 RGB, both with a
one-cycle schedule. Reported: test accuracy on the test split (all of it unless ``--test-n``), mean and
standard deviation over seeds.
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
from atelier.metrics.colour_classifier import ResNetClassifier

CONDITIONS = ("none", "classic", "generative", "both")
#: Per dataset: labelled images per class (1% of the training set), resolution, channels, classifier.
SETTINGS = {"mnist": {"per_class": 60, "resolution": 28, "channels": 1, "classifier": "digit-cnn"},
            "cifar10": {"per_class": 50, "resolution": 32, "channels": 3, "classifier": "resnet9"}}


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(int(labels.max()) + 1):
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def make_classifier(arch: str, channels: int, resolution: int, lr: float | None, batch_size: int):
    """(network, optimiser, label smoothing) of one classifier recipe; ``lr`` None: the recipe's own."""
    if arch == "digit-cnn":
        model = DigitClassifier(10, channels)
        return model, torch.optim.Adam(model.parameters(), lr=lr or 2e-3), 0.0
    model = ResNetClassifier(10, channels, width=16, resolution=resolution).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr or 0.2 * batch_size / 256, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    return model, opt, 0.1


def classic_pipeline(channels: int, resolution: int):
    """The default label-safe pipeline; on colour photos with horizontal flips first (a mirrored airplane is
    still an airplane, a mirrored digit is not)."""
    from atelier.augment.ops import AugmentOp
    from atelier.augment.pipeline import Pipeline, default_pipeline

    pipe = default_pipeline(channels=channels, resolution=resolution)
    return Pipeline([AugmentOp("hflip", p=0.5), *pipe.ops]) if channels == 3 else pipe


def train_classifier(real_x: torch.Tensor, real_y: torch.Tensor, *, steps: int, seed: int, augment: bool,
                     synth_x: torch.Tensor | None = None, synth_y: torch.Tensor | None = None,
                     batch_size: int = 64, lr: float | None = None, arch: str = "digit-cnn") -> torch.nn.Module:
    """A one-cycle schedule; images in [-1, 1]. With synthetic data, half of each batch is synthetic."""
    channels, resolution = real_x.shape[1], real_x.shape[-1]
    pipe = classic_pipeline(channels, resolution) if augment else None
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model, opt, smoothing = make_classifier(arch, channels, resolution, lr, batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=steps)
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
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def test_accuracy(model: torch.nn.Module, test) -> float:
    return float((predict(model, test.images).argmax(1) == test.labels).float().mean())


def write_subset(images: torch.Tensor, labels: torch.Tensor, root: Path, classes: list[str] | None = None) -> Path:
    """The labelled subset as a class-folder dataset (what a user would point the GAN at): one folder per
    class, named by the class (CIFAR-10's names sort in label order; MNIST's digits are their own names)."""
    from atelier.data.images import save_image

    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        path = root / (classes[label] if classes else str(label)) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, path)
    return root


def train_generator(subset_dir: Path, out: Path, steps: int, augment: str, *, resolution: int = 28,
                    channels: int = 1, model: str = "dcgan") -> Path:
    from atelier.train import DataConfig, GANTrainConfig, train_model

    from atelier.models.pretrained import resolve_pretrained

    try:
        resolve_pretrained(out)
        return out  # a finished run of the same settings (the folder name holds them): reuse it
    except (FileNotFoundError, ValueError):
        pass
    train = GANTrainConfig(steps=steps, batch_size=64, seed=0, augment=augment, progress=False, sample_every=steps,
                        checkpoint_every=steps, log_every=100)
    widths = dict(g_width=32, d_width=32) if model == "dcgan" else dict(g_width=64, d_width=64)
    train_model(model, data=DataConfig(name=f"folder:{subset_dir}", resolution=resolution, channels=channels),
                train=train, out=out, conditional=True, model_kwargs=dict(latent_dim=64, **widths))
    return out


def _confidence(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", choices=sorted(SETTINGS), help="the labelled dataset")
    p.add_argument("--data-dir", default=None, help="its files (MNIST: the IDX files, default ../shared/datasets/"
                   "mnist; CIFAR-10: the official archive or a train/test tree of class folders)")
    p.add_argument("--resolution", type=int, default=None, help="image side (default: 28 MNIST, 32 CIFAR-10)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="default: 1 MNIST, 3 CIFAR-10")
    p.add_argument("--per-class", type=int, default=None,
                   help="labelled images per class (default 1%% of the training set: 60 MNIST, 50 CIFAR-10)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=1500, help="classifier training steps (batch 64)")
    p.add_argument("--gan-steps", type=int, default=6000)
    p.add_argument("--gan-model", default="dcgan", choices=("dcgan", "resnet-gan"))
    p.add_argument("--gan-augment", default="ada", choices=("none", "diffaugment", "ada"))
    p.add_argument("--synthetic-per-class", type=int, default=500)
    p.add_argument("--min-confidence", type=_confidence, default=0.5,
                   help="keep generated images the classifier of the labelled subset recognises this surely "
                        "('none': keep every sample, unfiltered)")
    p.add_argument("--test-n", type=int, default=None, help="test images scored (default: the whole test split)")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--out", default=None, help="runs and subset (default: runs/augmentation_effect[_cifar10])")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    setting = SETTINGS[args.data]
    resolution = args.resolution or setting["resolution"]
    channels = args.channels or setting["channels"]
    per_class = args.per_class or setting["per_class"]
    arch = setting["classifier"]
    seeds = [int(s) for s in args.seeds.split(",")]
    conditions = [c for c in args.conditions.split(",") if c]
    out = Path(args.out or ("runs/augmentation_effect" + ("" if args.data == "mnist" else f"_{args.data}")))
    data_dir = args.data_dir
    if data_dir is None and args.data == "mnist":
        data_dir = str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist")

    def load(split: str):
        return load_dataset(args.data, split=split, data_dir=data_dir, resolution=resolution, channels=channels,
                            progress=False)

    start = time.perf_counter()
    train, test = load("train"), load("test")
    if args.test_n is not None and args.test_n < len(test):  # a fixed random subset, the same for every condition
        keep = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.test_n]
        test.images, test.labels = test.images[keep], test.labels[keep]
    idx = balanced_subset(train.labels, per_class, seed=0)
    real_x, real_y = to_float(train.images[idx]), train.labels[idx]
    report: dict = {"data": args.data, "resolution": resolution, "channels": channels, "classifier": arch,
                    "labelled_images": len(idx), "test_images": len(test), "classifier_steps": args.steps,
                    "seeds": seeds, "threads": torch.get_num_threads(),
                    "data_seconds": round(time.perf_counter() - start, 1)}

    def fit(seed: int, augment: bool, synth=None) -> torch.nn.Module:
        return train_classifier(real_x, real_y, steps=args.steps, seed=seed, augment=augment, arch=arch,
                                synth_x=synth[0] if synth else None, synth_y=synth[1] if synth else None)

    synth = None
    if any(c in ("generative", "both") for c in conditions):
        from atelier.creative.generative import generate_labelled

        start = time.perf_counter()
        classes = train.classes if args.data != "mnist" else None
        subset_dir = write_subset(train.images[idx], real_y, out / "subset", classes)
        family = "gan" if args.gan_model == "dcgan" else args.gan_model  # "gan-ada-6000": the MNIST runs' names
        run = train_generator(subset_dir, out / f"{family}-{args.gan_augment}-{args.gan_steps}",
                              args.gan_steps, args.gan_augment, resolution=resolution, channels=channels,
                              model=args.gan_model)
        gan_seconds = time.perf_counter() - start
        # the confidence filter is the baseline classifier: it too has seen only the labelled subset
        judge = fit(12345, augment=False)
        judge_acc = test_accuracy(judge, test)
        generated = generate_labelled(run, args.synthetic_per_class, min_confidence=args.min_confidence,
                                      classifier=lambda x: predict(judge, x),
                                      seed=0)
        synth = (to_float(generated.images), generated.labels)
        report["generator"] = {"run": str(run), "model": args.gan_model, "steps": args.gan_steps,
                               "augment": args.gan_augment, "seconds_incl_data": round(gan_seconds, 1),
                               "synthetic_images": len(generated.labels),
                               "acceptance_per_class": generated.info["acceptance_per_class"],
                               "filter_classifier_test_accuracy": judge_acc, "min_confidence": args.min_confidence}
        print(f"generator ready: {len(generated.labels)} synthetic images (filter accuracy {judge_acc:.4f})",
              flush=True)

    results: dict[str, list[float]] = {c: [] for c in conditions}
    for seed in seeds:
        for c in conditions:
            start = time.perf_counter()
            model = fit(seed, augment=c in ("classic", "both"), synth=synth if c in ("generative", "both") else None)
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
