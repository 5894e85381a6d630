"""Training throughput of a family's step (GANs, flow): atelier's variants against a textbook eager baseline.

    python benchmarks/train_throughput.py --model dcgan64 --batch-size 64 --json
    python benchmarks/train_throughput.py --model resnet-gan --resolution 32 --channels 3 --json
    python benchmarks/train_throughput.py --model flow --batch-size 128 --json      # MNIST 28 px U-Net
    python benchmarks/train_throughput.py --model resnet-gan --device cuda --json    # on a GPU

The baseline (``reference``) is the plain eager implementation of the same architecture and update:
``reference_dcgan.py`` for the DCGAN family, ``reference_resnet_gan.py`` (SNGAN) for the residual GAN,
``reference_unet.py`` (the same U-Net and flow-matching step, written plainly) for the flow family,
built with the widths, latent size, classes and ``n_dis`` of the atelier model it is compared with.

Each variant runs in its own process (so peak memory is its own), warms up, then times several
repeats of a fixed number of steps on data already in memory; the median images/s is reported,
with the ratio to the eager baseline measured in the same run. A step takes one batch of real images
(with ``n_dis`` > 1 the generator is updated every n_dis-th step, in both implementations). On a shared
machine the process CPU time per image is reported too (``images_per_cpu_second``): it is less
disturbed by other processes than the wall clock.

``--device cuda`` runs every variant on the GPU: atelier's step is given the device as the trainer
would give it; the reference is built with the device as PyTorch's default device, so its modules
and the noise it draws live there, as a plain GPU script's would. The clock is read after
``torch.cuda.synchronize()``; ``images_per_cpu_second`` then counts the host's work only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    # name: (precision, channels_last, compile)
    "atelier-fp32": ("fp32", False, False),
    "atelier-channels-last": ("fp32", True, False),
    "atelier-bf16": ("bf16", False, False),
    "atelier-bf16-channels-last": ("bf16", True, False),
    "atelier-compile-fp32": ("fp32", False, True),
    "atelier-compile-bf16": ("bf16", False, True),
    "atelier-compile-bf16-channels-last": ("bf16", True, True),
}


def images_in_memory(n: int, resolution: int, channels: int):
    """MNIST resized to the model's resolution when the shared copy is there; else random pixels
    (throughput does not depend on the pixel values)."""
    import torch

    mnist = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
    if mnist.is_dir() and channels == 1:
        from atelier.data import load_dataset

        return load_dataset("mnist", data_dir=mnist, resolution=resolution, progress=False).subset(slice(0, n))
    from atelier.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (n, channels, resolution, resolution), generator=g, dtype=torch.uint8))


def atelier_configs(model_name: str, model_kwargs: dict, train_kwargs: dict, variant: str):
    """(family, model config, train config) of ``model_name`` for one of the VARIANTS; the model is
    built on the meta device (no memory) just to read its config."""
    import torch

    from atelier import create_model
    from atelier.models.registry import get_family, model_family
    from atelier.train import steps

    assert steps  # importing it registers every family
    family = get_family(model_family(model_name))
    precision, channels_last, compile_ = VARIANTS[variant]
    cfg = family.train_config(precision=precision, channels_last=channels_last, compile=compile_,
                              tensorboard=False, progress=False, **train_kwargs)
    with torch.device("meta"):
        model_cfg = create_model(model_name, **model_kwargs).config
    return family, model_cfg, cfg


def reference_step(family: str, cfg, batch_size: int, n_dis: int, device: str = "cpu"):
    """``one_step(i)`` of the textbook implementation of the architecture ``cfg`` describes, on ``device``."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    data = images_in_memory(batch_size * 8, cfg.resolution, cfg.channels)  # made on the CPU, then moved
    labels = data.labels if data.labels is not None else torch.arange(len(data))
    images, labels = data.images.to(device), labels.to(device)
    torch.set_default_device(device)  # the reference's modules, optimisers and noise live on the device
    torch.manual_seed(0)
    if family == "flow":
        from reference_unet import ReferenceFlow

        if cfg.objective != "flow" or cfg.dropout:
            raise SystemExit("the reference flow step is rectified flow without dropout")
        ref = ReferenceFlow(channels=cfg.channels, width=cfg.width, mults=cfg.mults(), blocks=cfg.blocks_per_level,
                            attention=cfg.attention, num_classes=cfg.num_classes)
    elif family == "resnet-gan":
        from reference_resnet_gan import ReferenceResNetGAN

        if cfg.max_width_mult != 1 or cfg.d_extra_blocks != 2 or cfg.loss != "hinge":
            raise SystemExit("the reference SNGAN has constant widths, 2 extra discriminator blocks and the hinge loss")
        ref = ReferenceResNetGAN(resolution=cfg.resolution, nc=cfg.channels, nz=cfg.latent_dim, g_ch=cfg.g_width,
                                 d_ch=cfg.d_width, n_classes=cfg.num_classes, n_dis=n_dis)
    else:
        from reference_dcgan import ReferenceDCGAN

        if cfg.resolution not in (32, 64) or (cfg.g_width, cfg.d_width, cfg.num_classes) != (64, 64, 0):
            raise SystemExit("the reference DCGAN is the classic unconditional one (dcgan64, or at 32 px)")
        ref = ReferenceDCGAN(nz=cfg.latent_dim, nc=cfg.channels, resolution=cfg.resolution)

    def one_step(i: int) -> None:
        idx = torch.randint(0, len(images), (batch_size,))
        real = images[idx].float().div(127.5).sub(1)
        if cfg.num_classes:
            ref.step(real, labels[idx] % cfg.num_classes)
        else:
            ref.step(real)

    return one_step


def atelier_step(family, cfg, train_cfg, model_name: str, model_kwargs: dict, batch_size: int,
                 device: str = "cpu"):
    """``one_step(i)`` of atelier's training step for the family on ``device``, as the trainer runs it."""
    import torch

    from atelier import create_model
    from atelier.data import ImageDataset
    from atelier.train.batches import BatchSampler

    torch.manual_seed(0)
    model = create_model(model_name, **model_kwargs)
    step = family.step_class(model, train_cfg, torch.device(device))
    dataset = images_in_memory(batch_size * 8, cfg.resolution, cfg.channels)
    if cfg.num_classes:
        dataset = ImageDataset(dataset.images, torch.arange(len(dataset)) % cfg.num_classes)
    sampler = BatchSampler(dataset, batch_size, 0, device=torch.device(device), channels_last=train_cfg.channels_last)

    def one_step(i: int) -> None:
        logs = step.train_step(sampler(i), i)
        float(next(iter(logs.values())))  # the trainer reads every loss (NaN guard)

    return one_step


def run_variant(variant: str, model_name: str, batch_size: int, steps: int, repeats: int, warmup: int,
                model_kwargs: dict, n_dis: int | None, device: str = "cpu") -> dict:
    import torch

    from atelier.device import check_device

    cuda = check_device(device).type == "cuda"  # a clear error for a GPU this machine lacks
    train_kwargs = {"batch_size": batch_size, **({"n_dis": n_dis} if n_dis else {})}
    family, cfg, train_cfg = atelier_configs(model_name, model_kwargs, train_kwargs,
                                             "atelier-fp32" if variant == "reference" else variant)
    n_dis = getattr(train_cfg, "n_dis", 1)
    if variant == "reference":
        one_step = reference_step(family.name, cfg, batch_size, n_dis, device)
    else:
        one_step = atelier_step(family, cfg, train_cfg, model_name, model_kwargs, batch_size, device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    t0 = time.perf_counter()
    for i in range(warmup):
        one_step(i)
    sync()
    warmup_s = time.perf_counter() - t0
    rates, cpu_rates = [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            one_step(warmup + r * steps + i)
        sync()
        rates.append(steps * batch_size / (time.perf_counter() - t0))
        cpu_rates.append(steps * batch_size / (time.process_time() - c0))
    return {
        "variant": variant,
        "images_per_second": statistics.median(rates),
        "images_per_cpu_second": round(statistics.median(cpu_rates), 2),
        "n_dis": n_dis,
        "repeats": [round(x, 2) for x in rates],
        "warmup_seconds": round(warmup_s, 2),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if cuda else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dcgan64")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=None, help="model resolution (default: the preset's)")
    p.add_argument("--channels", type=int, default=None, help="image channels (default: the preset's)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of a conditional model (default: none)")
    p.add_argument("--model-kwargs", default="{}", help="further model settings as JSON, e.g. '{\"g_width\": 128}'")
    p.add_argument("--n-dis", type=int, default=None, help="discriminator steps per generator step (families with "
                   "n_dis; default: the family's); use --steps divisible by it")
    p.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", default="reference,atelier-fp32,atelier-bf16-channels-last,"
                   "atelier-compile-bf16-channels-last", help=f"comma list of: reference, {', '.join(VARIANTS)}")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where every variant runs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    model_kwargs = json.loads(args.model_kwargs)
    for name in ("resolution", "channels", "num_classes"):
        if getattr(args, name) is not None:
            model_kwargs[name] = getattr(args, name)
    if args.worker:
        print(json.dumps(run_variant(args.worker, args.model, args.batch_size, args.steps, args.repeats, args.warmup,
                                     model_kwargs, args.n_dis, args.device)))
        return
    import torch

    from atelier.device import check_device

    check_device(args.device)  # before any worker starts: a clear error for a GPU this machine lacks
    results = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--worker", variant, "--model", args.model, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup), "--model-kwargs", json.dumps(model_kwargs), "--device", args.device,
               *(["--n-dis", str(args.n_dis)] if args.n_dis else [])]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            results.append({"variant": variant, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            print(results[-1], file=sys.stderr)
    ref = next((r for r in results if r["variant"] == "reference" and "error" not in r), None)
    for r in results:
        if ref and "images_per_second" in r:
            r["speedup_vs_reference"] = round(r["images_per_second"] / ref["images_per_second"], 3)
            r["cpu_speedup_vs_reference"] = round(r["images_per_cpu_second"] / ref["images_per_cpu_second"], 3)
    ok = [r for r in results if "images_per_second" in r and r["variant"] != "reference"]
    best = max(ok, key=lambda r: r["images_per_second"]) if ok else {}
    summary = {
        "model": args.model, "model_kwargs": model_kwargs, "batch_size": args.batch_size, "device": args.device,
        **({"gpu": torch.cuda.get_device_name(args.device)} if args.device.startswith("cuda") else {}),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "images_per_second": best.get("images_per_second"), "best_variant": best.get("variant"),
        "peak_rss_mb": best.get("peak_rss_mb"), "speedup_vs_reference": best.get("speedup_vs_reference"),
        "cpu_speedup_vs_reference": best.get("cpu_speedup_vs_reference"), "variants": results,
    }
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
