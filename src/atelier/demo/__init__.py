"""``atelier demo``: train a small conditional GAN, a small VAE and a small conditional flow model on the
bundled digits (or on other data: MNIST, CIFAR-10, a labelled image folder), evaluate and explore them,
and show everything on one page.

On colour data (CIFAR-10, a colour folder) the models are trained at 32x32 RGB, the VAE with a
discretised logistic mixture likelihood (so its test likelihood reads in bits/dim), the evaluation uses
that data's domain extractor (``cifar10-cnn`` is fitted once, minutes on a CPU, then cached; a folder
needs its extractor fitted first with ``atelier metrics fit-classifier``), and the page names the
classes by their names (airplane, automobile, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.creative import interpolate_classes, interpolate_images, reconstruction_grid, traverse
from atelier.creative.sampling import save_samples
from atelier.models.sampling import sample_images
from atelier.demo.flow import FLOW_STEPS, flow_part
from atelier.demo.style import style_part
from atelier.data import load_dataset
from atelier.metrics import EvalConfig, evaluate_images
from atelier.metrics.extractors import dataset_family
from atelier.models import load_pretrained
from atelier.pipelines import Pipeline
from atelier.report.evaluation import write_evaluation_report
from atelier.report.gif import save_gif
from atelier.report.grid import save_grid
from atelier.report.html import Figure, write_page
from atelier.train import DataConfig, GANTrainConfig, VAETrainConfig, train_model
from atelier.train.run import describe

DEMO_STEPS = 3000  # GAN: about 75 s on 2 Zen 4 cores with bf16 autocast (measured)
VAE_STEPS = 1500  # VAE: about 30 s
GREY_DATA = ("digits", "mnist")  # trained at 28x28; anything else at 32x32


@dataclass
class DemoData:
    """What the page says about the data the models are trained on."""

    config: DataConfig
    classes: list[str]  # class names in label order
    what: str  # "digit" / "image": what one training image is called on the page

    @property
    def grey(self) -> bool:
        return dataset_family(self.config.name) in GREY_DATA


def _demo_data(name: str, data_dir: str | None) -> DemoData:
    family = dataset_family(name)
    config = DataConfig(name=name, data_dir=data_dir, resolution=28 if family in GREY_DATA else 32)
    return DemoData(config, [], "digit" if family in GREY_DATA else "image")


def _names(classes: list[str], limit: int = 10) -> str:
    return ", ".join(classes[:limit]) + (", ..." if len(classes) > limit else "")


def _gan_part(out: Path, data: DemoData, steps: int, minutes: float | None, seed: int, progress: bool):
    run_dir = out / "gan-run"
    cfg = data.config
    train = GANTrainConfig(batch_size=64, steps=steps, minutes=minutes, seed=seed, lr=2e-4, sample_every=500,
                           checkpoint_every=1000, log_every=50, progress=progress,
                           eval_every=1000, eval_n=359 if data.grey else 1000)  # keeps checkpoints/best by FID
    result = train_model("dcgan", data=cfg, train=train, out=run_dir, model_kwargs=dict(latent_dim=64, g_width=32, d_width=32),
                         conditional=True, overwrite=True)  # the demo's own folder, redone each time
    print(describe(result))
    best = run_dir / "checkpoints" / "best"
    pipe = Pipeline.load(best if best.is_dir() else run_dir)
    gan, data.classes = pipe.model, pipe.class_names or []
    evaluation = evaluate_images(sample_images(gan, 1000, seed=seed).images,
                                 EvalConfig(data=cfg.name, data_dir=cfg.data_dir, n=1000, seed=seed),
                                 progress=False, source=str(best))
    write_evaluation_report(evaluation, out / "evaluation", title="Atelier demo: evaluation of the best checkpoint")
    print(evaluation.table())
    k = gan.config.num_classes
    save_samples(sample_images(gan, 10 * k, seed=seed), out / "samples.png", nrow=k)
    per_class = sample_images(gan, 10 * k, seed=seed + 1)
    order = per_class.labels.argsort(stable=True)  # rows = classes
    per_class.images, per_class.labels = per_class.images[order], per_class.labels[order]
    save_samples(per_class, out / "per_class.png", nrow=10)
    pairs = [(a, a + 1) for a in range(0, k - 1, 2)]
    morph = torch.cat([interpolate_classes(gan, a, b, steps=10, seed=seed + a) for a, b in pairs])
    save_grid(morph, out / "gan_class_morph.png", nrow=10)
    (out / "loss_curve.png").write_bytes((run_dir / "loss_curve.png").read_bytes())
    m, p = evaluation.metrics, evaluation.provenance
    look = f"{gan.config.resolution}x{gan.config.resolution} {'grey' if gan.config.channels == 1 else 'RGB'}"
    facts = {"GAN training": describe(result),
             f"GAN evaluation (best checkpoint, {p['n_fake']} samples vs {p['n_real']} {p['dataset']}:{p['split']} "
             "images)":
                 f"FID {m['fid']:.3g} ({p['extractor']} features), precision {m['precision']:.2f}, recall "
                 f"{m['recall']:.2f}, two-sample test accuracy {m['c2st_accuracy']:.2f}, near-copies "
                 f"{m['near_copy_fraction']:.1%}; full report: evaluation/index.html",
             "GAN classes": f"{k} ({look}): {_names(data.classes, k)}"}
    morphs = ", ".join(f"{data.classes[a]} -> {data.classes[b]}" for a, b in pairs)
    figures = [
        Figure("per_class.png", "GAN: one row per class",
               f"Ten samples of each class, asked for by label, one row each: {_names(data.classes, k)}."),
        Figure("samples.png", "GAN: samples",
               f"{10 * k} samples from the EMA generator; classes cycle by column ({_names(data.classes, k)})."),
        Figure("gan_class_morph.png", "GAN: class to class",
               f"One latent per row; the label embedding slides from one class to the next ({morphs})."),
        Figure("loss_curve.png", "GAN: training curves", "Discriminator and generator losses, mean logits."),
        Figure("evaluation/nearest.png", "GAN: closest to the training set",
               f"Pairs: a sample, then its nearest training {data.what}. Samples that copy training images would "
               "show here."),
    ]
    return facts, figures


def _vae_part(out: Path, data: DemoData, steps: int, minutes: float | None, seed: int, progress: bool):
    run_dir = out / "vae-run"
    cfg = data.config
    train = VAETrainConfig(steps=steps, minutes=minutes, seed=seed, sample_every=500,
                           checkpoint_every=1000, log_every=50, progress=progress, iw_samples=100)
    # grey digits: a Bernoulli likelihood; colour: a discretised logistic mixture on the 8-bit pixels (bits/dim)
    model_kwargs = dict(latent_dim=16, width=16, hidden=256,
                        **({} if data.grey else dict(likelihood="logistic_mixture", mixture_components=3)))
    result = train_model("vae", data=cfg, train=train, out=run_dir, model_kwargs=model_kwargs, overwrite=True)
    print(describe(result))
    vae = load_pretrained(run_dir)
    test = load_dataset(cfg.name, resolution=cfg.resolution, split="test", data_dir=cfg.data_dir,
                        channels=vae.config.channels, progress=False)
    if len(test) < 7:
        raise ValueError(f"the demo needs at least 7 test images of {cfg.name}; its test split has {len(test)}")
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
    bpd = f" = {m['test_neg_elbo_bpd']:.3f} bits/dim" if "test_neg_elbo_bpd" in m else ""
    iw_bpd = f" = {m['test_iw_nll_bpd']:.3f} bits/dim" if "test_iw_nll_bpd" in m else ""
    facts = {"VAE training": describe(result).split("\n")[0],
             f"VAE test likelihood ({m.get('dataset', cfg.name)}, {len(test)} test {data.what}s)":
                 f"negative ELBO {m['test_neg_elbo_nats']:.1f} nats/image{bpd} (reconstruction "
                 f"{m['test_recon_nats']:.1f} + KL {m['test_kl_nats']:.1f}); importance-weighted NLL "
                 f"{m['test_iw_nll_nats']:.1f}{iw_bpd} (k={m['iw_k']})",
             "VAE reconstructions": f"MSE {rec['mse']:.4f}, PSNR {rec['psnr']:.1f} dB, SSIM {rec['ssim']:.3f}"}
    likelihood = "Bernoulli" if data.grey else "discretised logistic mixture"
    figures = [
        Figure("vae_reconstructions.png", "VAE: reconstructions",
               f"Test {data.what}s (rows 1, 3) above their reconstructions."),
        Figure("vae_traversal.png", "VAE: what each latent dimension does",
               f"Around the first test {data.what}, one dimension per row swept from -3 to 3; rows ordered by KL "
               f"({kl} nats)."),
        Figure("vae_interpolation.png", f"VAE: between two real {data.what}s",
               f"Encode two test {data.what}s, walk between their posterior means, decode (also "
               "vae_interpolation.gif)."),
        Figure("vae_samples.png", "VAE: prior samples",
               f"Decoder means of 64 latents drawn from N(0, I) ({likelihood} likelihood)."),
    ]
    return facts, figures


def run_demo(out: str | Path = "atelier-demo", *, data: str = "digits", data_dir: str | None = None,
             steps: int = DEMO_STEPS, vae_steps: int = VAE_STEPS, flow_steps: int = FLOW_STEPS,
             minutes: float | None = 4.0, seed: int = 0, progress: bool = True, style: bool = True,
             style_quick: bool = False, flow: bool = True) -> Path:
    """Train, evaluate, explore, and write ``out/index.html``; returns the page's path.

    ``data``: the dataset the GAN and VAE learn (digits, mnist, cifar10, folder:PATH of class folders with
    train/ and test/), with ``data_dir`` where its files are. The style part always uses the bundled photos."""
    out = Path(out)
    chosen = _demo_data(data, data_dir)
    gan_facts, gan_figures = _gan_part(out, chosen, steps, minutes, seed, progress)
    vae_facts, vae_figures = _vae_part(out, chosen, vae_steps, minutes, seed, progress)
    flow_facts, flow_figures = flow_part(out, chosen, flow_steps, minutes, seed, progress) if flow else ({}, [])
    style_facts, style_figures = ({}, []) if not style else style_part(out, seed=seed, progress=progress,
                                                                        minutes=minutes, quick=style_quick)
    if data == "digits":
        trained_on = "scikit-learn's 8x8 digits upscaled to 28x28"
    else:
        res = chosen.config.resolution
        trained_on = (f"{data} at {res}x{res}" + ("" if chosen.grey else f" in colour ({len(chosen.classes)} classes: "
                                                                           f"{_names(chosen.classes, 4)})"))
    likelihood = "Bernoulli likelihood" if chosen.grey else "discretised logistic mixture likelihood, in bits/dim"
    return write_page(
        out / "index.html",
        title="Atelier demo: generate, explore and transfer style, offline",
        intro=("A small class-conditional DCGAN (batch norm, a projection discriminator, the non-saturating loss, "
               f"an EMA of the generator for sampling) and a small convolutional VAE ({likelihood}), both "
               f"trained from scratch on {trained_on}, then evaluated and explored; then a small class-conditional "
               "flow-matching model (a U-Net) on the same data, with guidance, sketch-to-image editing and "
               "inpainting. "
               "Then style transfer on the photos bundled with scikit-image (Gatys optimisation and a fast "
               "feed-forward network) and a CycleGAN that learns plain -> bold digits from unpaired examples."),
        facts={**gan_facts, "GAN run directory": str(out / "gan-run"), **vae_facts,
               "VAE run directory": str(out / "vae-run"), **flow_facts,
               **({"Flow run directory": str(out / "flow-run")} if flow else {}), **style_facts},
        figures=gan_figures + vae_figures + flow_figures + style_figures,
    )
