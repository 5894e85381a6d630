"""CycleGAN on MNIST-built unpaired domains: does the translation keep the digit and reach domain B?

    python benchmarks/cyclegan_mnist.py --data-dir ../shared/datasets/mnist [--style thick] [--steps 1500]

1. Domains (atelier.data.domains): A = plain MNIST digits, B = other MNIST digits in ``--style``
   ("thick" by default: strokes dilated by a 3x3 square), from disjoint halves of each split, written
   as PNG folders; no pairs exist.
2. ``atelier train cyclegan`` on the two folders for a fixed number of steps (steps, not minutes, so
   the result does not depend on how busy the machine is).
3. Two judges fitted on real data (atelier.metrics.translation): a digit classifier on labelled B
   images and an A-vs-B domain classifier. Every MNIST *test* digit of domain A is translated A -> B
   and judged; "success" is the fraction read as the right digit AND judged to be B.
4. Baselines: the untrained CycleGAN, identity (A image unchanged), a random B image, and histogram
   matching (the best fixed per-pixel-value mapping).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"))
    p.add_argument("--style", default="thick", help="thick | inverted | colour | combinations like thick+colour")
    p.add_argument("--n", type=int, default=5000, help="training images per domain")
    p.add_argument("--n-test", type=int, default=2000, help="test images per domain")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--g-width", type=int, default=16)
    p.add_argument("--d-width", type=int, default=16)
    p.add_argument("--n-blocks", type=int, default=3)
    p.add_argument("--judge-epochs", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep the domains and the run here (default: a temporary folder)")
    args = p.parse_args()

    from atelier.cli import main as cli
    from atelier.data.domains import mnist_domains, write_domain_folders
    from atelier.metrics.translation import evaluate_translation, fit_judges
    from atelier.models import load_pretrained
    from atelier.models.registry import create_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        domains = mnist_domains(args.style, n=args.n, n_test=args.n_test, data_dir=args.data_dir, seed=args.seed)
        folders = write_domain_folders(domains, out / "domains", overwrite=True)
        run = out / "run"
        model_flags = ["--g-width", str(args.g_width), "--d-width", str(args.d_width), "--n-blocks", str(args.n_blocks)]
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            code = cli(["train", "cyclegan", "--domain-a", str(folders / "a"), "--domain-b", str(folders / "b"),
                       "--resolution", "28", "--out", str(run), "--steps", str(args.steps), "--batch-size",
                       str(args.batch_size), "--seed", str(args.seed), "--precision", args.precision,
                       "--no-tensorboard", "--no-progress", "--log-every", "100", "--sample-every",
                       str(args.steps), "--checkpoint-every", str(args.steps), "--channels-last", *model_flags])
        train_seconds = time.perf_counter() - start
        if code:
            raise SystemExit(code)
        model = load_pretrained(run)

        start = time.perf_counter()
        judges = fit_judges(domains.a_train, domains.b_train, domains.a_test, domains.b_test,
                            epochs=args.judge_epochs, seed=args.seed)
        rows = evaluate_translation(lambda x: model.translate(x, "a2b"), judges, domains.a_test,
                                    b_train=domains.b_train,
                                    b_test=domains.b_test, a_train=domains.a_train, seed=args.seed)
        torch.manual_seed(args.seed)  # the untrained model: the same initial weights the run started from
        untrained = create_model("cyclegan", **{k: v for k, v in vars(model.config).items()})
        rows["untrained_cyclegan"] = evaluate_translation(lambda x: untrained.translate(x, "a2b", use_ema=False),
                                                          judges, domains.a_test, b_train=domains.b_train,
                                                          b_test=domains.b_test, baselines=False)["translation"]
        rows["cyclegan"] = rows.pop("translation")
        history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines() if x.strip()]
        result = {
            "style": args.style,
            "settings": {k: v for k, v in vars(args).items() if k not in ("data_dir", "out")},
            "train_seconds": round(train_seconds, 1),
            "images_per_second": round(history[-1]["images_per_second"], 1),
            "final_losses": {k: round(v, 4) for k, v in history[-1].items() if k not in ("step", "epoch",
                                                                                        "images_per_second")},
            "judge_seconds": round(time.perf_counter() - start, 1),
            "judges": judges.provenance,
            "threads": torch.get_num_threads(),
            "rows": rows,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
