"""Does pre-training on public data and fine-tuning briefly on private data leak less than training on
the private data alone? (issue 14, item 9)

    python benchmarks/transfer_leakage.py --data-dir ../shared/datasets/mnist --out /tmp/transfer [--json]

MNIST's training split is cut by index: ``train[:30000]`` is "public", ``train[30000:30000+N]``
"private" (``--private N``, at most 20,000; a small private set is where memorisation shows first) and
``train[50000:]`` held out from every run. Three runs of one family (``--model``, default ``dcgan``),
all with ``atelier.train.train_model``:

1. *public*: from scratch on the public half (``--pretrain-steps``); never sees a private image;
2. *scratch*: from scratch on the private set (``--scratch-steps``);
3. *fine-tuned*: ``init_from`` the public model, then on the private set (``--finetune-steps``), with a
   checkpoint every ``--finetune-steps / --points`` steps.

Every model is scored the same way: FID (and precision/recall) of ``--fid-n`` samples against the test
split with the mnist-cnn features, and :func:`atelier.metrics.membership.audit_data` with the private
training images as members and the held-out ``train[50000:]`` (never seen by any run) as non-members.
The non-members come from the training split, not the test split, because MNIST's two splits differ a
little (different writers): an untrained discriminator already tells them apart (AUC 0.44 in a trial),
which would read as leakage or hide it. The attack's AUC,
cross-fitted advantage and TPR at 1% FPR with bootstrap intervals, and the near-copy share of samples
against the private images. "At equal sample quality": the fine-tuned checkpoint compared is the first
whose FID is at most the scratch model's (the last one if none is); every checkpoint is reported too.
The public model is the control: it never saw the private images, so its advantage on them must be ~0.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from atelier.data import load_dataset
from atelier.metrics import EvalConfig, Evaluator
from atelier.metrics.membership import audit_data
from atelier.pipelines import Pipeline
from atelier.train import train_model

PUBLIC, PRIVATE, HELD_OUT = "train[:30000]", "train[30000:{}]", "train[50000:]"


def train(name: str, args, split: str, steps: int, out: Path, **kwargs) -> tuple[Path, float]:
    from atelier.models.registry import get_family, model_family

    family = get_family(model_family(args.model))
    data = family.data_config(name="mnist", data_dir=args.data_dir, split=split)
    every = max(1, steps // args.points) if name == "finetuned" else steps
    cfg = family.train_config(steps=steps, seed=args.seed, checkpoint_every=every, keep_checkpoints=10_000,
                              sample_every=max(steps, 1), progress=False, tensorboard=False)
    t0 = time.perf_counter()
    train_model(args.model, data=data, train=cfg, out=out, overwrite=True, **kwargs)
    return out, time.perf_counter() - t0


def checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in (run / "checkpoints").iterdir() if p.is_dir() and p.name.startswith("step_"))


def score(path: Path, ev: Evaluator, members, nonmembers, args) -> dict:
    pipe = Pipeline.load(path)
    images = pipe.sample(args.fid_n, seed=args.seed)
    quality = ev.evaluate(images, metrics=("fid", "pr"), source=str(path)).metrics
    report = audit_data(pipe, members.images, nonmembers.images, member_labels=members.labels,
                        nonmember_labels=nonmembers.labels, n=args.n, n_samples=args.samples, seed=args.seed,
                        bootstrap=args.bootstrap)
    ms = report.membership
    return {"fid": quality["fid"], "precision": quality["precision"], "recall": quality["recall"],
            "attack": ms.attack, "auc": ms.auc, "auc_ci": list(ms.auc_ci), "advantage": ms.advantage,
            "advantage_ci": list(ms.advantage_ci), "tpr_at_1pct_fpr": ms.tpr_at_low_fpr,
            "tpr_at_1pct_fpr_ci": list(ms.tpr_at_low_fpr_ci), "near_copy_fraction": report.near_copy_fraction,
            "memorisation_ratio": report.memorisation_ratio, "leaks": report.leaks, "verdict": report.verdict}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--out", required=True, help="folder for the three runs (replaced)")
    p.add_argument("--model", default="dcgan")
    p.add_argument("--private", type=int, default=20000, help="private images: train[30000:30000+N], N <= 20000")
    p.add_argument("--pretrain-steps", type=int, default=4000)
    p.add_argument("--public", default=None, help="an existing public run (of this script) instead of training one")
    p.add_argument("--scratch-steps", type=int, default=4000)
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--points", type=int, default=4, help="fine-tuning checkpoints scored")
    p.add_argument("--n", type=int, default=2000, help="members and non-members a side in the attack")
    p.add_argument("--samples", type=int, default=5000, help="samples for the near-copy share")
    p.add_argument("--fid-n", type=int, default=5000)
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not 0 < args.private <= 20000:
        p.error("--private must be in 1..20000 (train[50000:] is held out)")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    private = PRIVATE.format(30000 + args.private)

    timings = {}
    if args.public:  # record how long the given public run trained, not this script's default
        public = Path(args.public)
        args.pretrain_steps = json.loads((public / "config.json").read_text())["train"]["steps"]
    else:
        public, timings["public_s"] = train("public", args, PUBLIC, args.pretrain_steps, out / "public")
    scratch, timings["scratch_s"] = train("scratch", args, private, args.scratch_steps, out / "scratch")
    finetuned, timings["finetuned_s"] = train("finetuned", args, private, args.finetune_steps, out / "finetuned",
                                              init_from=public)

    members = load_dataset("mnist", split=private, data_dir=args.data_dir, progress=False)
    nonmembers = load_dataset("mnist", split=HELD_OUT, data_dir=args.data_dir, progress=False)
    ev = Evaluator(EvalConfig(data="mnist", data_dir=args.data_dir, n=args.fid_n, seed=args.seed), resolution=28,
                   progress=False)
    rows = {"public (never saw the private set)": score(checkpoints(public)[-1], ev, members, nonmembers, args),
            "scratch": score(checkpoints(scratch)[-1], ev, members, nonmembers, args)}
    rows["scratch"]["private_steps"] = args.scratch_steps
    tuned = []
    for ckpt in checkpoints(finetuned):
        row = score(ckpt, ev, members, nonmembers, args)
        row["private_steps"] = int(ckpt.name.split("_")[1])
        tuned.append(row)
    matched = next((r for r in tuned if r["fid"] <= rows["scratch"]["fid"]), tuned[-1])
    rows["fine-tuned, matched quality"] = matched
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "json")},
              "private_split": private, "held_out_split": HELD_OUT, "timings_s": {k: round(v, 1) for k, v in timings.items()},
              "rows": rows, "finetune_curve": tuned}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'model':36s} {'private steps':>13s} {'FID':>7s} {'AUC':>18s} {'advantage':>22s} {'TPR@1%':>7s} "
          f"{'near-copy':>9s}")
    for name, r in [*rows.items(), *((f"  fine-tune @ {t['private_steps']}", t) for t in tuned)]:
        print(f"{name:36s} {r.get('private_steps', 0):13d} {r['fid']:7.2f} "
              f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f},{r['auc_ci'][1]:.3f}] "
              f"{r['advantage']:+.3f} [{r['advantage_ci'][0]:+.3f},{r['advantage_ci'][1]:+.3f}] "
              f"{r['tpr_at_1pct_fpr']:7.3f} {100 * r['near_copy_fraction']:8.2f}%")
    print(json.dumps(result["timings_s"]))


if __name__ == "__main__":
    main()
