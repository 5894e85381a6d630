"""Speed of fast style transfer: stylised images per second, and peak memory at a large size.

    python benchmarks/fast_style_speed.py [--sizes 256 512] [--batches 1 4] [--repeats 7] [--threads 2]

For each network preset ("fast", the default, and "johnson", the paper's), precision (fp32, bf16)
image size and batch size, the time of one ``stylize_with_model`` call (the public path: channels-last,
inference mode) is measured ``--repeats`` times after two warm-up calls; configurations are run in
turn within each repeat, so a busy machine slows them all alike and the ratios stay meaningful.
Reported: the median images/s. Weights are random (speed does not depend on them).

Peak memory: each preset/precision stylises one ``--memory-size`` px image in a fresh subprocess
(run first, while this process is small); reported is its peak resident set (VmHWM, else
ru_maxrss) and the increase over the same process just before the call (PyTorch and the network).

Goal of the issue: >= 10 images/s at 256 px on 2 cores. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from atelier.models.transformer_net import TransformerNet, TransformerNetConfig
from atelier.style.fast import stylize_with_model

GOAL_IMAGES_PER_SECOND = 10.0


def build(preset: str) -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet(TransformerNetConfig.from_preset(preset)).eval()


def peak_rss_mib() -> float:
    """This process's peak resident set. VmHWM where Linux has it: ru_maxrss would start at the parent's
    peak, since Linux carries it over fork and exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def peak_memory(preset: str, precision: str, size: int) -> None:
    """(subprocess) stylise one size x size image; print the peak RSS before and after, in MiB."""
    net = build(preset)
    x = torch.rand(3, size, size)
    before = peak_rss_mib()
    stylize_with_model(net, x, precision=precision)
    after = peak_rss_mib()
    print(json.dumps({"before_mib": round(before, 1), "peak_mib": round(after, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--presets", nargs="+", default=["fast", "johnson"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--memory-size", type=int, default=1024)
    parser.add_argument("--peak", nargs=3, metavar=("PRESET", "PRECISION", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak:
        peak_memory(args.peak[0], args.peak[1], int(args.peak[2]))
        return

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    memory = []
    for preset in args.presets:
        for precision in args.precisions:
            cmd = [sys.executable, __file__, "--peak", preset, precision, str(args.memory_size)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            m = json.loads(out)
            memory.append({"preset": preset, "precision": precision, "size": args.memory_size, **m,
                           "increase_mib": round(m["peak_mib"] - m["before_mib"], 1)})

    nets = {p: build(p) for p in args.presets}
    configs = [(p, prec, s, b) for p in args.presets for prec in args.precisions for s in args.sizes
               for b in args.batches]
    inputs = {(s, b): torch.rand(b, 3, s, s) for s in args.sizes for b in args.batches}

    def once(preset: str, precision: str, size: int, batch: int) -> float:
        start = time.perf_counter()
        stylize_with_model(nets[preset], inputs[size, batch], precision=precision, batch_size=batch)
        return time.perf_counter() - start

    times: dict[tuple, list[float]] = {c: [] for c in configs}
    for c in configs:
        once(*c), once(*c)  # warm-up: oneDNN picks and caches its kernels per shape
    for _ in range(args.repeats):
        for c in configs:
            times[c].append(once(*c))
    results = []
    for (preset, precision, size, batch), ts in times.items():
        median = statistics.median(ts)
        results.append({"preset": preset, "precision": precision, "size": size, "batch": batch,
                        "images_per_second": round(batch / median, 2), "seconds_per_call": round(median, 4),
                        "spread": round((max(ts) - min(ts)) / median, 3)})

    default = next((r for r in results
                    if (r["preset"], r["precision"], r["size"], r["batch"]) == ("fast", "fp32", 256, 1)), None)
    print(json.dumps({
        "benchmark": "fast_style_speed",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        # Other processes on the cores make OpenMP threads wait for each other: check the load is low.
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0] if load_before is not None else None},
        "goal": {"images_per_second_at_256": GOAL_IMAGES_PER_SECOND,
                 "default_fp32_batch1": default and default["images_per_second"],
                 "met": bool(default and default["images_per_second"] >= GOAL_IMAGES_PER_SECOND)},
        "results": results,
        "peak_memory": memory,
    }, indent=2))


if __name__ == "__main__":
    main()
