"""The flow part of ``atelier demo``: a small class-conditional flow-matching model trained on the same data
as the GAN, then what a GAN cannot do: guidance strength, a rough sketch turned into an image, and
inpainting a hole while keeping every other pixel."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from atelier.creative.masks import box_mask, show_hole
from atelier.data import load_dataset
from atelier.pipelines import Pipeline
from atelier.report.grid import save_grid
from atelier.report.html import Figure
from atelier.train import train_model
from atelier.train.run import describe
from atelier.train.steps.flow import FlowTrainConfig

FLOW_STEPS = 600  # about 90 s on 2 Zen 4 cores with bf16 autocast (a 16-channel U-Net, batches of 64)
STRENGTHS = (0.5, 0.7, 0.9)
GUIDANCE = (0.0, 1.0, 3.0)


def sketches(grey: bool, test_images: torch.Tensor, resolution: int) -> tuple[torch.Tensor, str]:
    """Rough inputs to edit: white strokes on black for digits (a bar, a ring, a seven), or test images
    reduced to 4x4 blocks of colour for photos; uint8 (3, C, R, R) and what they are."""
    if not grey:
        blocks = torch.nn.functional.avg_pool2d(test_images[:3].float(), resolution // 4)
        return torch.nn.functional.interpolate(blocks, size=resolution).round().to(torch.uint8), \
            "test images reduced to 4x4 blocks of colour"
    from PIL import Image, ImageDraw

    r = resolution
    drawn = []
    for shape in ("bar", "ring", "seven"):
        im = Image.new("L", (r, r))
        pen = ImageDraw.Draw(im)
        w = max(2, r // 9)
        if shape == "bar":
            pen.line([(r // 2, r // 5), (r // 2, 4 * r // 5)], fill=255, width=w)
        elif shape == "ring":
            pen.ellipse([r // 4, r // 6, 3 * r // 4, 5 * r // 6], outline=255, width=w)
        else:
            pen.line([(r // 4, r // 4), (3 * r // 4, r // 4), (2 * r // 5, 4 * r // 5)], fill=255, width=w)
        drawn.append(torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(1, r, r))
    return torch.stack(drawn), "strokes drawn with a 3-pixel pen: a bar, a ring and a seven"


def flow_part(out: Path, data, steps: int, minutes: float | None, seed: int, progress: bool):
    """Train, then draw the figures; ``data`` is the demo's :class:`~atelier.demo.DemoData`."""
    run_dir = out / "flow-run"
    cfg = data.config
    train = FlowTrainConfig(batch_size=64, steps=steps, minutes=minutes, seed=seed, sample_every=500,
                            checkpoint_every=1000, log_every=50, progress=progress)
    result = train_model("flow", data=cfg, train=train, out=run_dir, conditional=True, overwrite=True,
                         model_kwargs=dict(width=16, levels=3, resolution=cfg.resolution,
                                           channels=1 if data.grey else 3))
    print(describe(result))
    pipe = Pipeline.load(run_dir)
    model = pipe.model
    k, r = model.config.num_classes, model.config.resolution
    names = pipe.class_names or [str(i) for i in range(k)]
    start = time.perf_counter()
    rows = [pipe.sample(k, seed=seed, guidance=w) for w in GUIDANCE]  # one column per class, same noise
    save_grid(torch.cat(rows), out / "flow_guidance.png", nrow=k)
    sample_seconds = time.perf_counter() - start
    nfe = [model.planned_nfe(guidance=w) for w in GUIDANCE]

    test = load_dataset(cfg.name, resolution=cfg.resolution, split="test", data_dir=cfg.data_dir,
                        channels=model.config.channels, progress=False)
    rough, what = sketches(data.grey, test.images, r)
    edits = [rough] + [pipe.edit(rough, strength=s, seed=seed) for s in STRENGTHS]
    save_grid(torch.stack(edits, dim=1).flatten(0, 1), out / "flow_edit.png", nrow=len(edits))

    originals = test.images[:4]
    mask = box_mask([0.0, 0.5, 1.0, 1.0], r)
    fills = [pipe.inpaint(originals, mask, seed=seed + i) for i in range(4)]
    save_grid(torch.stack([show_hole(originals, mask), *fills], dim=1).flatten(0, 1), out / "flow_inpaint.png", nrow=5)

    settings = f"{model.config.sampler}, {model.config.sample_steps} steps"
    facts = {"Flow training": describe(result).split("\n")[0],
             "Flow sampling": f"{settings}: {nfe[0]} network evaluations per image unguided, {nfe[-1]} guided "
                              f"(w = {GUIDANCE[-1]:g}); {3 * k} images in {sample_seconds:.1f} s"}
    figures = [
        Figure("flow_guidance.png", "Flow: guidance strength",
               f"The same noise for every row, one column per class ({', '.join(names[:k])}). Rows: guidance "
               f"w = {', '.join(f'{w:g}' for w in GUIDANCE)} (0 ignores the label, 1 is the conditional model, "
               "above 1 pushes towards the class)."),
        Figure("flow_edit.png", "Flow: from a rough sketch to an image",
               f"First column: {what}. Then the model's edit at strength {', '.join(map(str, STRENGTHS))}: the "
               "sketch is noised to that time and solved back (low keeps the layout, high invents more)."),
        Figure("flow_inpaint.png", "Flow: filling a hole",
               f"First column: test {data.what}s with their lower half hidden. Then four fills from different "
               "seeds; the upper half is kept pixel for pixel."),
    ]
    return facts, figures
