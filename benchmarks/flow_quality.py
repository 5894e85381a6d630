"""Sample quality against sampling cost: flow models at a range of network evaluations (NFE), beside
GANs (one evaluation) and the DDPM peer (DDIM), in one table.

    # train each for the same wall-clock, e.g. 10 minutes on 2 cores (MNIST 28 px):
    atelier train flow --data mnist --data-dir ../shared/datasets/mnist --minutes 10 --out runs/flow
    atelier train flow --data mnist --data-dir ../shared/datasets/mnist --conditional --minutes 10 --out runs/cflow
    atelier train flow --model ddpm --data mnist --data-dir ../shared/datasets/mnist --minutes 10 --out runs/ddpm
    atelier train gan --data mnist --data-dir ../shared/datasets/mnist --minutes 10 --out runs/gan
    atelier train gan --data mnist --data-dir ../shared/datasets/mnist --conditional --minutes 10 --out runs/cgan
    # then score them all against the test split (10,000 samples each, mnist-cnn features):
    python benchmarks/flow_quality.py runs/flow runs/cflow runs/ddpm runs/gan runs/cgan --data mnist \\
        --nfe 1,2,4,8,16,32 --samplers euler,heun,dpm++2m,ab2 --guidance 1,2 --json

For a flow run, each sampler is run at the step counts whose NFE is in ``--nfe`` (Heun takes two
evaluations a step, so it has no 1-NFE row; guidance w other than 0 and 1 doubles the evaluations of a
conditional model, and its rows are listed at their real NFE); a ddpm run is sampled with DDIM at each
``--nfe`` and at 50 steps; any other model (a GAN, a VAE) is one row. Each row gives FID, KID,
precision and recall (and the floor: held-out training images), the CPU seconds and wall seconds to
draw the samples, and images per second. Prints a table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from atelier.metrics import METRIC_KEYS, EvalConfig, Evaluator
from atelier.models.pretrained import load_pretrained
from atelier.models.sampling import sample_images
from gan_quality import class_view  # this folder's: the classifier's confidence and label agreement

COLUMNS = ("nfe", "fid", "kid_mean", "precision", "recall", "label_agreement", "cpu_s", "wall_s", "images_per_s")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def settings_for(model, nfe_list: list[int], samplers: list[str], guidances: list[float]) -> list[dict]:
    """The sampling settings to score for ``model``: one empty dict for a one-pass model."""
    if getattr(model, "family", "") != "flow":
        return [{}]
    if model.config.objective == "ddpm":
        steps = sorted(set(nfe_list) | {50})
        return [{"steps": k} for k in steps]
    out = []
    for w in (guidances if model.conditional else [None]):
        for sampler in samplers:
            for target in nfe_list:
                per_step = 2 if sampler == "heun" else 1
                if target % per_step:
                    continue
                options = {"steps": target // per_step, "sampler": sampler}
                if w is not None:
                    options["guidance"] = w
                out.append(options)
    return out


def draw(model, n: int, seed: int, options: dict, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """``n`` samples (uint8) with classes cycling for a conditional model, and the cost of drawing them."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with torch.no_grad():
        drawn = sample_images(model, n, seed=seed, batch_size=batch_size, **options)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    cost = {"cpu_s": cpu, "wall_s": wall, "images_per_s": n / wall,
            "nfe": getattr(model, "last_nfe", 1) or 1}
    return drawn.images, drawn.labels, cost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories or saved models")
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir", default=None, help="default for mnist: ../shared/datasets/mnist")
    p.add_argument("--resolution", type=int, default=None, help="default: the first model's")
    p.add_argument("--nfe", type=_ints, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--samplers", type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
                   default=["euler", "heun", "dpm++2m", "ab2"])
    p.add_argument("--guidance", type=_floats, default=[1.0, 2.0], help="conditional flow models: w values")
    p.add_argument("--precision", type=lambda t: [s.strip() for s in t.split(",") if s.strip()], default=[None],
                   help="flow models: the network's arithmetic when sampling, e.g. fp32,bf16 (default: the model's)")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    data_dir = args.data_dir
    if data_dir is None and args.data == "mnist":
        data_dir = str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist")
    models = {run: load_pretrained(run) for run in args.runs}
    resolution = args.resolution or next(iter(models.values())).config.resolution
    ev = Evaluator(EvalConfig(data=args.data, data_dir=data_dir, n=args.n, seed=args.seed), resolution=resolution,
                   progress=False)
    train = ev.train_images()
    floor = ev.evaluate(train[torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:args.n]],
                        source="train_vs_test (floor)")
    rows = [{"run": "train_vs_test (floor)", **{k: floor.metrics.get(k) for k in METRIC_KEYS}}]
    for run, model in models.items():
        model.eval()
        flow = getattr(model, "family", "") == "flow"
        settings = settings_for(model, args.nfe, args.samplers, args.guidance)
        for precision, options in itertools.product(args.precision if flow else [None], settings):
            extra = {"precision": precision} if precision is not None else {}
            images, labels, cost = draw(model, args.n, args.seed, {**options, **extra})
            r = ev.evaluate(images, source=run)
            rows.append({"run": run, "family": model.family, "n": args.n, **options,
                         **({"sample_precision": precision or model.config.sample_precision} if flow else {}), **cost,
                         **{k: r.metrics.get(k) for k in METRIC_KEYS}, **class_view(ev, images, labels)})
            if not args.json:
                last = rows[-1]
                print(f"{run[-28:]:28s} {json.dumps(options):48s}" + "".join(
                    f"{last[c]:11.4g}" if isinstance(last.get(c), (int, float)) else f"{'-':>11s}" for c in COLUMNS),
                    flush=True)
    if args.json:
        print(json.dumps({"provenance": {k: v for k, v in floor.provenance.items() if k not in ("config", "source")},
                          "rows": rows}))
    else:
        print(f"floor (training images vs test): fid {rows[0]['fid']:.4g}, kid {rows[0]['kid_mean']:.4g}")


if __name__ == "__main__":
    main()
