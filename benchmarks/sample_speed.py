"""Sampling throughput of a registered model preset: images/s of ``model.sample`` on a device, per
precision and (flow models) per step count.

    OMP_NUM_THREADS=2 python benchmarks/sample_speed.py --model flow --steps 1,8,32 --json
    python benchmarks/sample_speed.py --model flow-cifar --device cuda --batch-size 1000 --steps 8,32 --json
    python benchmarks/sample_speed.py --model resnet-gan --set num_classes=10 --device cuda --json

The weights are the preset's initial ones: the speed of sampling does not depend on their values,
so no trained run is needed. Each setting warms up once, then draws ``--repeats`` batches of
``--batch-size``; the median images/s is reported (on a GPU the clock is read after
``torch.cuda.synchronize()``). ``precision`` is the network's arithmetic while sampling (flow models'
``sample_precision``; GANs sample under bf16 autocast when asked); the solver stays in fp32.
Prints one JSON object: {"model", "device", "runs": [{precision, steps, nfe, images_per_second}]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from vae_cifar import parse_set  # benchmarks/ is on the path when a script there runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="flow", help="a registered preset (atelier.list_models())")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a model setting (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", default="8", help="flow models: comma list of solver step counts")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args()

    from atelier import create_model
    from atelier.device import autocast, check_device
    from atelier.models.registry import model_family

    device = check_device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, **parse_set(args.set)).to(device).eval()
    is_flow = model_family(args.model) == "flow"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = []
    for precision in args.precisions.split(","):
        for steps in [int(s) for s in args.steps.split(",")] if is_flow else [None]:
            def draw() -> torch.Tensor:
                g = torch.Generator().manual_seed(0)
                if is_flow:
                    return model.sample(args.batch_size, generator=g, steps=steps, precision=precision)
                with autocast(precision, device):
                    return model.sample(args.batch_size, generator=g)

            with torch.inference_mode():
                out = draw()  # warm-up: kernels chosen, memory allocated
                if not bool(torch.isfinite(out.float()).all()):
                    raise SystemExit(f"{args.model} {precision}: the samples are not finite")
                rates = []
                for _ in range(args.repeats):
                    sync()
                    t0 = time.perf_counter()
                    draw()
                    sync()
                    rates.append(args.batch_size / (time.perf_counter() - t0))
            row = {"precision": precision, "steps": steps, "nfe": getattr(model, "last_nfe", 1),
                   "images_per_second": round(statistics.median(rates), 2), "repeats": [round(r, 2) for r in rates]}
            runs.append(row)
            if not args.json:
                print(row)
    summary = {"model": args.model, "settings": parse_set(args.set), "device": str(device),
               **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": args.batch_size,
               "runs": runs}
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
