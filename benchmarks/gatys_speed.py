"""Gatys style transfer at 512 px: our coarse-to-fine transfer against a straightforward one.

    python benchmarks/gatys_speed.py [--size 512] [--baseline-steps 300] [--repeats 3] [--weights vgg19.pth] [--json]

The baseline is the textbook loop: one scale at the output size, 300 L-BFGS iterations, the whole
VGG-19 ``features`` stack run on every evaluation (up to pool5), float32. Its final loss is the
target. Ours runs with the shipped defaults (cut after relu5_1, coarse to fine, bf16 where the CPU
has it) and stops at the output size once its loss is at the target; the time to get there is
compared with the baseline's time for its 300 iterations, in the same process. Both optimise the
same objective (same layers, weights, pooling and normalisation), and the loss of our final image
is re-evaluated in float32 to check it really reaches the target.

Without ``--weights`` (no internet here), VGG-19 gets seeded He-normal random weights: the
compute is the real network's, the loss landscape is not, so the speed-up is indicative.

Also measured: peak resident memory of one transfer at ``--memory-size`` (1024 px), each variant in
its own subprocess (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from atelier.data.images import read_image
from atelier.data.photos import photo_path
from atelier.models.vgg import VGGFeatures, layer_names
from atelier.style.gatys import GatysConfig, StyleLoss, gatys_transfer, resize_longer


def vgg(layers, weights: str | None, pool: str) -> torch.nn.Module:
    if weights:
        from atelier.models.vgg_weights import load_vgg

        return load_vgg("vgg19", layers, weights=weights, pool=pool, fallback=False)
    torch.manual_seed(0)
    net = VGGFeatures("vgg19", layers, pool=pool)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return net.requires_grad_(False).eval()


def images():
    return read_image(photo_path("chelsea")), read_image(photo_path("hubble"))


def fp32_loss(image: torch.Tensor, cfg: GatysConfig, net: torch.nn.Module) -> float:
    content, style = images()
    c = resize_longer(content, cfg.size)[None]
    s = resize_longer(style, round(cfg.size * cfg.style_scale))[None]
    fp32 = GatysConfig(**{**cfg.__dict__, "precision": "fp32"})
    with torch.no_grad():
        return StyleLoss(net, c, [s], fp32)(image[None])["loss"].item()


def run_baseline(size: int, steps: int, weights: str | None) -> dict:
    content, style = images()
    base = GatysConfig(size=size, steps=steps, scales=1, precision="fp32")
    full = vgg(layer_names("vgg19"), weights, base.pool)  # every layer up to pool5: the uncut network
    start = time.perf_counter()
    result = gatys_transfer(content, style, full, base, progress=False)
    seconds = time.perf_counter() - start
    cut = vgg(list({**base.content_layers, **base.style_layers}), weights, base.pool)
    return {"seconds": seconds, "loss": fp32_loss(result.image, base, cut), "iterations": len(result.history)}


def run_ours(size: int, target: float | None, weights: str | None, max_steps: int | None = None) -> dict:
    """Our defaults; with ``target`` stop at the output size once there (measured under bf16 autocast,
    so aim 0.5% below and check in fp32 afterwards); without, the full default schedule."""
    content, style = images()
    cfg = (GatysConfig(size=size) if target is None else
           GatysConfig(size=size, steps=max_steps, target_loss=0.995 * target))
    net = vgg(list({**cfg.content_layers, **cfg.style_layers}), weights, cfg.pool)
    start = time.perf_counter()
    result = gatys_transfer(content, style, net, cfg, progress=False)
    seconds = time.perf_counter() - start
    final = [h for h in result.history if h["size"] == size]
    return {"seconds": seconds, "loss_fp32": fp32_loss(result.image, cfg, net),
            "iterations_final_scale": len(final), "iterations_total": len(result.history),
            "sizes": cfg.scale_sizes()}


def peak_memory(size: int, variant: str, weights: str | None) -> float:
    """Peak RSS (MiB) of a child process doing 5 iterations of one variant at ``size``."""
    code = (
        "import sys, resource, json; sys.argv=['x']; import benchmarks.gatys_speed as b; "
        f"print(json.dumps(b._memory_child({size}, {variant!r}, {weights!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_child(size: int, variant: str, weights: str | None) -> float:
    content, style = images()
    if variant == "baseline":
        cfg = GatysConfig(size=size, steps=5, scales=1, precision="fp32")
        net = vgg(layer_names("vgg19"), weights, cfg.pool)
    else:
        cfg = GatysConfig(size=size, steps=5, coarse_steps=5)
        net = vgg(list({**cfg.content_layers, **cfg.style_layers}), weights, cfg.pool)
    gatys_transfer(content, style, net, cfg, progress=False)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--baseline-steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="runs of ours (the baseline runs once: it is slow)")
    p.add_argument("--memory-size", type=int, default=1024, help="0 skips the memory measurement")
    p.add_argument("--weights", default=None, help="real VGG-19 weights (else seeded random ones)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    report: dict = {"size": args.size, "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "weights": args.weights or "random (He-normal, seed 0)"}
    base = run_baseline(args.size, args.baseline_steps, args.weights)
    report["baseline"] = base
    print(f"baseline: {base['iterations']} L-BFGS iterations at {args.size} px in {base['seconds']:.1f} s, "
          f"loss {base['loss']:.4g}", flush=True)
    runs = [run_ours(args.size, base["loss"], args.weights, args.baseline_steps) for _ in range(args.repeats)]
    for r in runs:
        print(f"ours: {r['iterations_total']} iterations ({r['iterations_final_scale']} at {args.size} px) in "
              f"{r['seconds']:.1f} s, loss {r['loss_fp32']:.4g} (fp32)", flush=True)
    median = statistics.median(r["seconds"] for r in runs)
    report["ours"] = runs
    report["ours_median_seconds"] = median
    report["speedup"] = base["seconds"] / median
    report["reached_target"] = all(r["loss_fp32"] <= base["loss"] for r in runs)
    print(f"speed-up: {report['speedup']:.2f}x (median of {len(runs)}); target reached: {report['reached_target']}")
    full = run_ours(args.size, None, args.weights)
    report["ours_default_schedule"] = full
    print(f"ours, the whole default schedule: {full['iterations_total']} iterations in {full['seconds']:.1f} s, "
          f"loss {full['loss_fp32']:.4g} (fp32)", flush=True)
    if args.memory_size:
        report["peak_rss_mib"] = {v: peak_memory(args.memory_size, v, args.weights) for v in ("baseline", "ours")}
        print(f"peak memory at {args.memory_size} px: {report['peak_rss_mib']}")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
