"""The pipeline façade: any saved model in, tensors out; clear refusals for what a family cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.models.registry import create_model
from atelier.pipelines import Pipeline, load

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    models = {
        "cgan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10),
        "vae": create_model("vae", width=8, hidden=0, latent_dim=4),
        "cyclegan": create_model("cyclegan", resolution=16, channels_a=1, channels_b=3, g_width=4, d_width=4,
                                 n_blocks=1),
        "style": create_model("transformer-net", width=4, n_res_blocks=1),
    }
    return {name: model.save_pretrained(root / name) for name, model in models.items()}


def test_sample_is_reproducible_uint8_with_cycling_labels(saved) -> None:
    pipe = load(saved["cgan"])
    assert pipe.family == "gan" and pipe.operations == ["sample", "interpolate"]
    images, labels = pipe.sample(12, seed=3, with_labels=True)
    assert images.shape == (12, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(12)]
    assert torch.equal(images, pipe.sample(12, seed=3)) and not torch.equal(images, pipe.sample(12, seed=4))
    fixed = pipe.sample(4, seed=3, label=7, with_labels=True)[1]
    assert fixed.tolist() == [7] * 4


def test_interpolate_between_seeds_and_between_classes(saved) -> None:
    pipe = Pipeline.load(saved["cgan"])
    frames = pipe.interpolate(seeds=(0, 1), steps=5, label=2)
    assert frames.shape == (5, 1, 28, 28) and frames.dtype == torch.uint8
    # the ends are the samples of the two seeds' latents
    assert not torch.equal(frames[0], frames[-1])
    morph = pipe.interpolate(classes=(1, 7), steps=4, seed=0)
    assert morph.shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="either seeds"):
        pipe.interpolate(seeds=(0, 1), classes=(1, 2))


def test_reconstruct_and_encode_a_vae(saved) -> None:
    pipe = Pipeline.load(saved["vae"])
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    recon = pipe.reconstruct(x)
    assert recon.shape == x.shape and recon.dtype == torch.uint8
    assert torch.equal(recon, pipe.reconstruct(x.float() / 127.5 - 1))  # uint8 or [-1, 1] in: the same
    mean, logvar = pipe.encode(x)
    assert mean.shape == logvar.shape == (3, 4)


def test_translate_and_stylize(saved) -> None:
    cyc = Pipeline.load(saved["cyclegan"])
    out = cyc.translate(torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8), "a2b")
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="direction"):
        cyc.translate(torch.zeros(1, 1, 16, 16), "sideways")
    style = Pipeline.load(saved["style"])
    photo = torch.rand(3, 20, 24)
    styled = style.stylize(photo)
    assert styled.shape == photo.shape and 0 <= styled.min() and styled.max() <= 1
    assert torch.equal(style.stylize(photo, strength=0.0), photo)


@pytest.mark.parametrize(("name", "operation"), [("cgan", "reconstruct"), ("vae", "translate"),
                                                 ("cyclegan", "sample"), ("style", "interpolate")])
def test_an_operation_the_family_cannot_do_is_refused_by_name(saved, name: str, operation: str) -> None:
    pipe = Pipeline.load(saved[name])
    calls = {"sample": lambda: pipe.sample(2), "interpolate": lambda: pipe.interpolate(seeds=(0, 1)),
             "reconstruct": lambda: pipe.reconstruct(torch.zeros(1, 1, 28, 28)),
             "translate": lambda: pipe.translate(torch.zeros(1, 1, 28, 28))}
    with pytest.raises(ValueError, match=f"holds a {pipe.family} model; {operation} needs"):
        calls[operation]()


def test_a_run_directory_loads_its_newest_checkpoint(tmp_path: Path) -> None:
    from atelier.train import DataConfig, GANTrainConfig, train_model

    train_model("dcgan", data=DataConfig(), train=GANTrainConfig(steps=2, batch_size=8, progress=False,
                                                                 tensorboard=False, precision="fp32"),
                out=tmp_path / "run", model_kwargs=dict(g_width=8, d_width=8, latent_dim=8))
    pipe = Pipeline.load(tmp_path / "run")
    assert pipe.path.name == "step_0000002" and pipe.config["train"]["steps"] == 2
    with pytest.raises(FileNotFoundError, match="no such run"):
        Pipeline.load(tmp_path / "missing")


def test_sample_batches_stream_the_same_samples(saved) -> None:
    pipe = load(saved["cgan"])
    batches = pipe.sample_batches(23, seed=5, batch_size=10)
    parts = list(batches)
    assert [p.images.shape[0] for p in parts] == [10, 10, 3]
    images, labels = pipe.sample(23, seed=5, batch_size=10, with_labels=True)
    assert torch.equal(torch.cat([p.images for p in parts]), images)
    assert torch.equal(torch.cat([p.labels for p in parts]), labels)
    assert torch.is_grad_enabled()  # drawing under no_grad did not leak to the caller
    assert pipe.class_names == [str(i) for i in range(10)] and load(saved["vae"]).class_names is None
    with pytest.raises(ValueError, match="between 1 and 1,000,000"):
        pipe.sample_batches(10**9)  # refused at the call, before any batch


def test_nan_weights_are_refused_unless_allowed(saved, tmp_path: Path) -> None:
    from atelier.models.pretrained import NonFiniteWeightsWarning
    from atelier.pipelines import NonFiniteWeightsError

    model = load(saved["vae"]).model
    with torch.no_grad():
        dict(model.named_parameters())["decoder_ema.fc.0.weight"].view(-1)[:5] = float("nan")
    broken = model.save_pretrained(tmp_path / "broken")
    with pytest.raises(NonFiniteWeightsError, match=r"\(5 of .* values\).*allow_nonfinite=True"):
        Pipeline.load(broken)
    with pytest.warns(NonFiniteWeightsWarning, match="NaN or infinite values in 1 tensor"):
        pipe = Pipeline.load(broken, allow_nonfinite=True)
    with pytest.warns(UserWarning, match="samples held NaN"):
        pipe.sample(2)
