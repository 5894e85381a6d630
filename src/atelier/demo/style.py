"""The style-transfer part of ``atelier demo``: Gatys optimisation and a fast-style network on the
photos bundled with scikit-image, and a CycleGAN translating the bundled digits to bold digits.

Offline there are no VGG ImageNet weights, so the feature network is the loudly announced random
fallback unless ``atelier style weights`` (or ``--weights``) has put the real ones in the cache; the
page says which one ran.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from atelier.data.images import read_image
from atelier.data.photos import photo_path, photo_paths
from atelier.report.grid import make_grid, save_grid
from atelier.report.html import Figure

CONTENT, STYLE = "chelsea", "ihc"  # the cat, in the colours and texture of a stained tissue section


def _rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _row(images: list[torch.Tensor], height: int) -> torch.Tensor:
    """Images in [0, 1] of any sizes, resized to one height, side by side -> uint8 (3, H, W) with gaps."""
    import torch.nn.functional as F

    tiles = []
    for im in images:
        w = max(1, round(im.shape[-1] * height / im.shape[-2]))
        tiles.append(_rgb_uint8(F.interpolate(im[None], size=(height, w), mode="bilinear", antialias=True,
                                              align_corners=False)[0]))
        tiles.append(torch.full((3, height, 4), 255, dtype=torch.uint8))
    return torch.cat(tiles[:-1], dim=2)


def _gatys(out: Path, seed: int, progress: bool, quick: bool) -> tuple[dict, list[Figure]]:
    from atelier.report.gif import save_gif
    from atelier.data.images import save_image
    from atelier.style import GatysConfig, feature_network, stylize_gatys

    content, style = read_image(photo_path(CONTENT)), read_image(photo_path(STYLE))
    size, steps, coarse = (64, 2, 2) if quick else (256, 60, 80)
    cfg = GatysConfig(size=size, steps=steps, coarse_steps=coarse, seed=seed, frame_every=1 if quick else 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the page says which features ran
        # never a 548 MB download from a demo: the cached weights if `atelier style weights` put them there
        net = feature_network(cfg, download=False)
    start = time.perf_counter()
    result = stylize_gatys(content, style, cfg, features=net, progress=progress)
    luma = stylize_gatys(content, style, GatysConfig(size=size, steps=steps, coarse_steps=coarse, seed=seed,
                                                     preserve_colors="luminance"), features=net, progress=progress)
    seconds = time.perf_counter() - start
    save_image(_row([content, style, result.image, luma.image], size), out / "style_gatys.png")
    save_gif(torch.cat([_rgb_uint8(result.frames), _rgb_uint8(result.image)[None]]), out / "style_gatys.gif",
             boomerang=False, scale=1, duration_ms=100)
    first, last = result.history[0], result.history[-1]
    described = getattr(net, "description", type(net).__name__)
    if not getattr(net, "pretrained", False):
        described += " Run `atelier style weights` once (online) to use the real VGG-19."
    facts = {"Style: feature network": described,
             f"Style: Gatys transfer ({size} px, coarse to fine {' -> '.join(map(str, cfg.scale_sizes()))} px)":
                 f"{len(result.history)} + {len(luma.history)} L-BFGS iterations in {seconds:.0f} s; style loss "
                 f"{first['style']:.3g} -> {last['style']:.3g}, content loss {last['content']:.3g}"}
    figures = [Figure("style_gatys.png", "Style transfer by optimisation (Gatys et al.)",
                      f"Content ({CONTENT}), style ({STYLE}), the transfer, and the transfer with the content's "
                      "colours kept (luminance only). The optimisation unfolding: style_gatys.gif.")]
    return facts, figures


def _fast(out: Path, seed: int, progress: bool, minutes: float | None, quick: bool) -> tuple[dict, list[Figure]]:
    from atelier.data.photos import skimage_data_dir
    from atelier.style.fast import stylize_with_model, train_fast_style

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_fast_style(out / "fast-style", overwrite=True, style=[str(photo_path(STYLE))],
                                  content_dir=str(skimage_data_dir()), size=32 if quick else 128, batch_size=4,
                                  steps=2 if quick else 250, minutes=minutes, seed=seed, log_every=25,
                                  checkpoint_every=250, sample_every=250, progress=progress, download=False,
                                  tensorboard=False)
    photos = [read_image(p, size=64 if quick else 256) for p in photo_paths()]
    start = time.perf_counter()
    styled = [stylize_with_model(result.run_dir, p) for p in photos]
    per_image = (time.perf_counter() - start) / len(photos)
    tiles = [make_grid(torch.stack([_rgb_uint8(_square(p)), _rgb_uint8(_square(s))]), nrow=1)
             for p, s in zip(photos, styled)]
    save_grid(torch.stack(tiles), out / "style_fast.png", nrow=len(tiles), scale=1)
    facts = {"Style: fast feed-forward network":
             f"trained {result.steps} steps ({result.seconds:.0f} s, 128 px crops of the bundled photos, style {STYLE}); "
             f"then {per_image * 1000:.0f} ms per 256 px photo. Model: {result.run_dir}"}
    figures = [Figure("style_fast.png", "Fast style transfer (Johnson et al., instance norm)",
                      "Each bundled photo (top) through the trained network (bottom): one forward pass each.")]
    return facts, figures


def _square(image: torch.Tensor, side: int = 192) -> torch.Tensor:
    """Centre crop to a square and resize, so the grid lines up."""
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = image[:, top : top + s, left : left + s]
    return F.interpolate(crop[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]


def _cyclegan(out: Path, seed: int, progress: bool, minutes: float | None, steps: int,
              quick: bool) -> tuple[dict, list[Figure]]:
    from atelier.data.base import to_float
    from atelier.data.domains import mnist_domains, write_domain_folders
    from atelier.metrics.translation import evaluate_translation, fit_judges
    from atelier.models import load_pretrained
    from atelier.train import CycleGANTrainConfig, UnpairedDataConfig, train_model
    from atelier.train.run import describe

    domains = mnist_domains("thick", n=None, n_test=None, dataset="digits", seed=seed)
    root = write_domain_folders(domains, out / "cyclegan-domains", overwrite=True)
    train = CycleGANTrainConfig(steps=steps, minutes=minutes, seed=seed, sample_every=500, checkpoint_every=1000,
                                log_every=50, progress=progress, channels_last=True)
    data = UnpairedDataConfig(domain_a=str(root / "a"), domain_b=str(root / "b"), resolution=28)
    result = train_model("cyclegan", data=data, train=train, out=out / "cyclegan-run",
                         model_kwargs=dict(g_width=16, d_width=16, n_blocks=3), overwrite=True)
    model = load_pretrained(out / "cyclegan-run").eval()
    judges = fit_judges(domains.a_train, domains.b_train, domains.a_test, domains.b_test, epochs=1 if quick else 20, seed=seed)
    with torch.no_grad():
        rows = evaluate_translation(lambda x: model.translate(x, "a2b"), judges, domains.a_test,
                                    b_train=domains.b_train, a_train=domains.a_train, seed=seed)
        a = to_float(domains.a_test.images[:10])
        ab = model.translate(a, "a2b")
        b = to_float(domains.b_test.images[:10])
        ba = model.translate(b, "b2a")
    save_grid(torch.cat([a, ab, b, ba]), out / "cyclegan.png", nrow=10)
    t = rows["translation"]
    facts = {"CycleGAN training": describe(result).split("\n")[0],
             "CycleGAN: digits -> bold digits (no pairs given)":
                 f"{t['success']:.0%} of the {len(domains.a_test)} test digits come out bold and still the same digit "
                 f"(digit kept {t['digit_accuracy']:.0%}, judged bold {t['domain_b_fraction']:.0%}). Baselines: "
                 f"identity {rows['identity']['success']:.0%}, a random bold digit {rows['random_b']['success']:.0%}, "
                 f"a per-pixel grey-level curve (histogram matching) {rows['histogram_matching']['success']:.0%}: on "
                 "these blurry upscaled 8x8 digits bolding is nearly a grey-level curve; on MNIST it is not "
                 "(BENCHMARKS.md: CycleGAN 92% vs 0.5%)"}
    figures = [Figure("cyclegan.png", "Unpaired translation (CycleGAN)",
                      "Row 1: test digits; row 2: translated to bold; row 3: bold test digits; row 4: translated "
                      "back to plain. The two training sets are disjoint halves of the digits: no pairs.")]
    return facts, figures


def style_part(out: Path, *, seed: int = 0, progress: bool = True, minutes: float | None = None,
               cyclegan_steps: int = 1000, quick: bool = False) -> tuple[dict, list[Figure]]:
    """Run the three style demos into ``out``; returns the page's facts and figures. ``quick`` shrinks
    every size and step count to a smoke test (for the test suite)."""
    facts: dict = {}
    figures: list[Figure] = []
    for part in (lambda: _gatys(out, seed, progress, quick), lambda: _fast(out, seed, progress, minutes, quick),
                 lambda: _cyclegan(out, seed, progress, minutes, 10 if quick else cyclegan_steps, quick)):
        f, g = part()
        facts.update(f)
        figures += g
    return facts, figures
