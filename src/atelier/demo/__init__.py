"""``atelier demo``: train a small conditional GAN and a small VAE on the bundled digits, evaluate and
explore them, and show everything on one page."""

from __future__ import annotations

from pathlib import Path

import torch

from atelier.creative import interpolate_classes, interpolate_images, reconstruction_grid, traverse
from atelier.creative.sampling import save_samples
from atelier.models.sampling import sample_images
from atelier.demo.style import style_part
from atelier.data import load_dataset
from atelier.metrics import EvalConfig, evaluate_images
from atelier.models import load_pretrained
from atelier.report.evaluation import write_evaluation_report
from atelier.report.gif import save_gif
from atelier.report.grid import save_grid
from atelier.report.html import Figure, write_page
from atelier.train import DataConfig, GANTrainConfig, VAETrainConfig, train_model
from atelier.train.run import describe

DEMO_STEPS = 3000  # GAN: about 75 s on 2 Zen 4 cores with bf16 autocast (measured)
VAE_STEPS = 1500  # VAE: about 30 s


def _gan_part(out: Path, data: DataConfig, steps: int, minutes: float | None, seed: int, progress: bool):
    run_dir = out / "gan-run"
    train = GANTrainConfig(batch_size=64, steps=steps, minutes=minutes, seed=seed, lr=2e-4, sample_every=500,
                           checkpoint_every=1000, log_every=50, progress=progress,
                           eval_every=1000, eval_n=359)  # FID on all 359 test digits; keeps checkpoints/best
    result = train_model("dcgan", data=data, train=train, out=run_dir, model_kwargs=dict(latent_dim=64, g_width=32, d_width=32),
                         conditional=True, overwrite=True)  # the demo's own folder, redone each time
    print(describe(result))
    best = run_dir / "checkpoints" / "best"
    gan = load_pretrained(best if best.is_dir() else run_dir)
    evaluation = evaluate_images(sample_images(gan, 1000, seed=seed).images, EvalConfig(data="digits", n=1000, seed=seed),
                                 progress=False, source=str(best))
    write_evaluation_report(evaluation, out / "evaluation", title="Atelier demo: evaluation of the best checkpoint")
    print(evaluation.table())
    save_samples(sample_images(gan, 100, seed=seed), out / "samples.png", nrow=10)
    per_class = sample_images(gan, 10 * gan.config.num_classes, seed=seed + 1)
    order = per_class.labels.argsort(stable=True)  # rows = classes
    per_class.images, per_class.labels = per_class.images[order], per_class.labels[order]
    save_samples(per_class, out / "per_class.png", nrow=10)
    morph = torch.cat([interpolate_classes(gan, a, a + 1, steps=10, seed=seed + a) for a in range(0, 9, 2)])
    save_grid(morph, out / "gan_class_morph.png", nrow=10)
    (out / "loss_curve.png").write_bytes((run_dir / "loss_curve.png").read_bytes())
    m = evaluation.metrics
    facts = {"GAN training": describe(result),
             "GAN evaluation (best checkpoint, 1000 samples vs the 359 test digits)":
                 f"FID {m['fid']:.3g} (digits-cnn features), precision {m['precision']:.2f}, recall {m['recall']:.2f}, "
                 f"two-sample test accuracy {m['c2st_accuracy']:.2f}, near-copies {m['near_copy_fraction']:.1%}; "
                 "full report: evaluation/index.html"}
    figures = [
        Figure("per_class.png", "GAN: one row per class", "Ten samples of each digit 0-9, asked for by label."),
        Figure("samples.png", "GAN: samples", "100 samples from the EMA generator; classes cycle by column."),
        Figure("gan_class_morph.png", "GAN: class to class",
               "One latent per row; the label embedding slides from one digit to the next (0->1, 2->3, ...)."),
        Figure("loss_curve.png", "GAN: training curves", "Discriminator and generator losses, mean logits."),
        Figure("evaluation/nearest.png", "GAN: closest to the training set",
               "Pairs: a sample, then its nearest training digit. Samples that copy training images would show here."),
    ]
    return facts, figures


def _vae_part(out: Path, data: DataConfig, steps: int, minutes: float | None, seed: int, progress: bool):
    run_dir = out / "vae-run"
    train = VAETrainConfig(steps=steps, minutes=minutes, seed=seed, sample_every=500,
                           checkpoint_every=1000, log_every=50, progress=progress, iw_samples=100)
    result = train_model("vae", data=data, train=train, out=run_dir,
                         model_kwargs=dict(latent_dim=16, width=16, hidden=256), overwrite=True)
    print(describe(result))
    vae = load_pretrained(run_dir)
    test = load_dataset("digits", resolution=data.resolution, split="test", progress=False)
    grid, rec = reconstruction_grid(vae, test.images[:20], nrow=10)
    save_grid(grid, out / "vae_reconstructions.png", nrow=10)
    images, dims, info = traverse(vae, order_by_kl_data=test.images, max_rows=6, base_image=test.images[0])
    save_grid(images, out / "vae_traversal.png", nrow=len(info["values"]))
    strips = [interpolate_images(vae, test.images[a], test.images[b], steps=10) for a, b in ((1, 2), (3, 4), (5, 6))]
    save_grid(torch.cat(strips), out / "vae_interpolation.png", nrow=10)
    save_gif(strips[0], out / "vae_interpolation.gif", duration_ms=90)
    save_samples(sample_images(vae, 64, seed=seed), out / "vae_samples.png", nrow=8)
    m = result.metrics
    kl = ", ".join(f"z{d} {info['kl_per_dim'][d]:.2f}" for d in dims)
    facts = {"VAE training": describe(result).split("\n")[0],
             "VAE test likelihood (359 test digits)":
                 f"negative ELBO {m['test_neg_elbo_nats']:.1f} nats/image (reconstruction {m['test_recon_nats']:.1f} + "
                 f"KL {m['test_kl_nats']:.1f}); importance-weighted NLL {m['test_iw_nll_nats']:.1f} (k={m['iw_k']})",
             "VAE reconstructions": f"MSE {rec['mse']:.4f}, PSNR {rec['psnr']:.1f} dB, SSIM {rec['ssim']:.3f}"}
    figures = [
        Figure("vae_reconstructions.png", "VAE: reconstructions", "Test digits (rows 1, 3) above their reconstructions."),
        Figure("vae_traversal.png", "VAE: what each latent dimension does",
               f"Around the first test digit, one dimension per row swept from -3 to 3; rows ordered by KL ({kl} nats)."),
        Figure("vae_interpolation.png", "VAE: between two real digits",
               "Encode two test digits, walk between their posterior means, decode (also vae_interpolation.gif)."),
        Figure("vae_samples.png", "VAE: prior samples", "Decoder means of 64 latents drawn from N(0, I)."),
    ]
    return facts, figures


def run_demo(out: str | Path = "atelier-demo", *, steps: int = DEMO_STEPS, vae_steps: int = VAE_STEPS,
             minutes: float | None = 4.0, seed: int = 0, progress: bool = True, style: bool = True,
             style_quick: bool = False) -> Path:
    """Train, evaluate, explore, and write ``out/index.html``; returns the page's path."""
    out = Path(out)
    data = DataConfig(name="digits", resolution=28)
    gan_facts, gan_figures = _gan_part(out, data, steps, minutes, seed, progress)
    vae_facts, vae_figures = _vae_part(out, data, vae_steps, minutes, seed, progress)
    style_facts, style_figures = ({}, []) if not style else style_part(out, seed=seed, progress=progress,
                                                                        minutes=minutes, quick=style_quick)
    return write_page(
        out / "index.html",
        title="Atelier demo: generate, explore and transfer style, offline",
        intro=("A small class-conditional DCGAN (batch norm, a projection discriminator, the non-saturating loss, "
               "an EMA of the generator for sampling) and a small convolutional VAE (Bernoulli likelihood), both "
               "trained from scratch on scikit-learn's 8x8 digits upscaled to 28x28, then evaluated and explored. "
               "Then style transfer on the photos bundled with scikit-image (Gatys optimisation and a fast "
               "feed-forward network) and a CycleGAN that learns plain -> bold digits from unpaired examples."),
        facts={**gan_facts, "GAN run directory": str(out / "gan-run"), **vae_facts,
               "VAE run directory": str(out / "vae-run"), **style_facts},
        figures=gan_figures + vae_figures + style_figures,
    )
