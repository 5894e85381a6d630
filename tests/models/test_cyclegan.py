"""CycleGAN: networks, losses, image pool, LR schedule, unpaired training and resume, save/load, the
translate CLI, the MNIST-built domains and, on real MNIST, identity preservation against baselines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.data import DataError, load_dataset
from atelier.models import CycleGAN, CycleGANConfig, load_pretrained
from atelier.models.cyclegan import patch_receptive_field
from atelier.objectives.cyclegan import discriminator_term, generator_terms
from atelier.models.registry import create_model
from atelier.models.pretrained import latest_checkpoint
from atelier.io import load_tensors
from atelier.train.checkpoint import load_train_state
from atelier.train.config import TrainConfig, lr_factor
from atelier.train.image_pool import ImagePool
from atelier.train import UnpairedDataConfig, family_train_config, train_model
from atelier.train.unpaired import UnpairedSampler

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST not found at {MNIST_DIR}")
TINY = dict(g_width=4, d_width=4, n_blocks=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> CycleGAN:
    return create_model("cyclegan", **{**TINY, **kw})


def write_images(folder: Path, n: int, *, colour: bool, seed: int, size: int = 20) -> Path:
    """``n`` PNGs of a bright blob on a dark background (RGB if ``colour``), in two class sub-folders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.uniform(6, size - 6), rng.uniform(6, size - 6), rng.uniform(2, 5)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 220 + 20
        image = np.stack([blob, blob // 2, 255 - blob], -1) if colour else blob
        (folder / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(folder / str(i % 2) / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("domains")
    return write_images(root / "a", 12, colour=False, seed=0), write_images(root / "b", 10, colour=True, seed=1)


def small_train(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, tensorboard=False, progress=False, log_every=1, sample_every=1000,
                checkpoint_every=1000, precision="fp32")
    return family_train_config("cyclegan", **{**base, **kw})


# -------------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("resolution, channels_a, channels_b", [(28, 1, 1), (32, 1, 3), (16, 3, 1), (64, 3, 3)])
def test_shapes_for_grey_and_rgb_at_small_resolutions(resolution, channels_a, channels_b) -> None:
    model = tiny(resolution=resolution, channels_a=channels_a, channels_b=channels_b)
    a = torch.rand(2, channels_a, resolution, resolution) * 2 - 1
    b = torch.rand(2, channels_b, resolution, resolution) * 2 - 1
    ab, ba = model.translate(a, "a2b"), model.translate(b, "b2a")
    assert ab.shape == b.shape and ba.shape == a.shape
    assert ab.abs().max() <= 1 and ba.abs().max() <= 1  # tanh
    patches = resolution // 2 ** model.config.d_layers - 2
    assert model.d_a(a).shape == (2, 1, patches, patches) and model.d_b(b).shape == (2, 1, patches, patches)
    with pytest.raises(ValueError, match="a2b takes images"):
        model.translate(b if channels_a != channels_b else b[:, :1].expand(-1, 2, -1, -1), "a2b")
    with pytest.raises(ValueError, match="direction"):
        model.translate(a, "sideways")


def test_config_resolves_small_resolution_choices_and_rejects_bad_ones() -> None:
    c28, c256 = CycleGANConfig(resolution=28), CycleGANConfig(resolution=256)
    assert (c28.n_downsampling, c28.n_blocks, c28.d_layers) == (2, 4, 1)
    assert (c256.n_downsampling, c256.n_blocks, c256.d_layers) == (2, 9, 3)  # the paper's 256 px networks
    assert CycleGANConfig(resolution=14).n_downsampling == 1
    assert not CycleGANConfig(channels_a=1, channels_b=3).identity_loss
    assert CycleGANConfig().identity_loss and not CycleGANConfig(lambda_identity=0).identity_loss
    with pytest.raises(ValueError, match="divisible"):
        CycleGANConfig(resolution=30, n_downsampling=2)
    with pytest.raises(ValueError, match="no patches"):
        CycleGANConfig(resolution=28, d_layers=4)
    with pytest.raises(ValueError, match="channels_b"):
        CycleGANConfig(channels_b=2)
    with pytest.raises(ValueError, match="translates images"):
        tiny().sample(4)


@pytest.mark.parametrize("d_layers", [1, 2])
def test_patch_discriminator_receptive_field(d_layers: int) -> None:
    """Each logit's convolutions see exactly a ``patch_receptive_field``-pixel square of the input
    (instance norm, which mixes in whole-image statistics, is taken out to see it)."""
    model = tiny(resolution=64, d_layers=d_layers)
    for i, layer in enumerate(model.d_a.net):
        if isinstance(layer, torch.nn.InstanceNorm2d):
            model.d_a.net[i] = torch.nn.Identity()
    x = torch.randn(1, 1, 64, 64, requires_grad=True)
    out = model.d_a(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    assert int(rows.max() - rows.min() + 1) == patch_receptive_field(d_layers) == {1: 16, 2: 34}[d_layers]
    assert patch_receptive_field(3) == 70  # the paper's 70x70 PatchGAN


# ---------------------------------------------------------------------------------------- losses
def test_lsgan_cycle_and_identity_terms() -> None:
    real_a, real_b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    t = generator_terms(real_a=real_a, real_b=real_b, rec_a=real_a + 0.5, rec_b=real_b, d_b_of_fake_b=ones,
                        d_a_of_fake_a=zeros, idt_b=real_b - 0.2, idt_a=real_a, lambda_cycle=10, lambda_identity=0.5)
    assert t["adv_ab"] == 0 and t["adv_ba"] == 1  # (D - 1)^2: fooled, not fooled
    assert t["cycle_a"] == pytest.approx(5.0) and t["cycle_b"] == 0  # 10 * |0.5|
    assert t["identity_ab"] == pytest.approx(1.0) and t["identity_ba"] == 0  # 10 * 0.5 * |0.2|
    assert t["loss"] == pytest.approx(7.0)
    no_idt = generator_terms(real_a=real_a, real_b=real_b, rec_a=real_a, rec_b=real_b, d_b_of_fake_b=ones,
                             d_a_of_fake_a=ones)
    assert "identity_ab" not in no_idt and no_idt["loss"] == 0
    assert discriminator_term(ones, zeros) == 0  # real called real, fake called fake
    assert discriminator_term(zeros, ones) == pytest.approx(1.0)  # 0.5 * (1 + 1)


# ------------------------------------------------------------------------------------ image pool
def test_image_pool_fills_then_swaps_half_the_time_and_resumes_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ImagePool(0).query(torch.ones(3, 1, 2, 2), g), torch.ones(3, 1, 2, 2))
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(-1, 1, 2, 2)
    assert torch.equal(pool.query(first, g), first) and len(pool) == 4  # filling: the new images come back
    returned_old, n = 0, 400
    for i in range(n):
        new = torch.full((1, 1, 2, 2), 100.0 + i)
        out = pool.query(new, g)
        returned_old += int(out[0, 0, 0, 0] != 100.0 + i)
        assert len(pool) == 4
        assert (100.0 + i) in {float(x[0, 0, 0]) for x in pool.images} or out[0, 0, 0, 0] == 100.0 + i
    assert 0.4 < returned_old / n < 0.6  # an earlier fake half of the time

    state, rng_state = pool.state_dict(), g.get_state()
    assert state["images"].shape == (4, 1, 2, 2)
    batch = torch.randn(6, 1, 2, 2)
    expected = pool.query(batch, g)
    restored = ImagePool(4)
    restored.load_state_dict(state)
    assert torch.equal(restored.query(batch, torch.Generator().set_state(rng_state)), expected)
    assert ImagePool(4).state_dict()["images"] is None


# ------------------------------------------------------------------------------------ LR schedule
def test_linear_schedule_is_constant_then_decays_to_zero() -> None:
    assert lr_factor(0, 100, "linear") == 1.0 and lr_factor(50, 100, "linear") == 1.0
    assert lr_factor(75, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(99, 100, "linear") == pytest.approx(0.02)
    assert lr_factor(100, 100, "linear") == 0.0
    assert lr_factor(2, 110, "linear", warmup_steps=10) == pytest.approx(0.3)  # warm-up first
    assert lr_factor(85, 110, "linear", warmup_steps=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="linear schedule needs"):
        TrainConfig(minutes=1.0, lr_schedule="linear")
    assert family_train_config("cyclegan").lr_schedule == "linear"  # default length: DEFAULT_EPOCHS


# ------------------------------------------------------------------------------ unpaired training
def test_unpaired_sampler_is_a_pure_function_of_the_step(domains) -> None:
    a = load_dataset(f"folder:{domains[0]}", resolution=16, progress=False)
    b = load_dataset(f"folder:{domains[1]}", resolution=16, progress=False)
    s1, s2 = (UnpairedSampler(a, b, 4, seed=3, device=torch.device("cpu")) for _ in range(2))
    assert s1.steps_per_epoch == 3  # the larger domain: 12 // 4
    for step in (0, 5, 2, 7):
        x, y = s1(step), s2(step)
        assert torch.equal(x.images, y.images) and torch.equal(x.images_b, y.images_b)
        assert x.images.shape == (4, 1, 16, 16) and x.images_b.shape == (4, 3, 16, 16)


def test_training_resumes_bit_identically_and_saves_the_pools(tmp_path, domains) -> None:
    data = UnpairedDataConfig(domain_a=str(domains[0]), domain_b=str(domains[1]), resolution=16)
    # constant LR: a run stopped after 3 of 6 steps must not have had a schedule ending at step 3
    full = train_model("cyclegan", data=data, train=small_train(steps=6, lr_schedule="constant"), out=tmp_path / "full",
                             model_kwargs=TINY)
    assert full.steps == 6 and {"loss_g", "loss_d", "cycle_a", "adv_ab"} <= set(full.history[-1])
    assert "identity_ab" not in full.history[-1]  # grey A, colour B: no identity loss
    train_model("cyclegan", data=data, train=small_train(steps=3, lr_schedule="constant"), out=tmp_path / "split",
                      model_kwargs=TINY)
    from atelier.train import resume_run

    resumed = resume_run(tmp_path / "split", {"steps": 6})
    assert resumed.steps == 6
    ckpt_a, ckpt_b = latest_checkpoint(tmp_path / "full"), latest_checkpoint(tmp_path / "split")
    wa, wb = load_tensors(ckpt_a / "model.safetensors"), load_tensors(ckpt_b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = load_train_state(ckpt_a)["step_state"], load_train_state(ckpt_b)["step_state"]
    assert sa["pool_a"]["images"].shape == (24, 1, 16, 16)  # 6 steps x 4 fakes, fewer than 50
    for pool in ("pool_a", "pool_b"):
        assert torch.equal(sa[pool]["images"], sb[pool]["images"])
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["data"]["domain_b"] == str(domains[1]) and saved["model"]["family"] == "cyclegan"


def test_train_cli_then_save_load_round_trip(tmp_path, domains) -> None:
    run = tmp_path / "run"
    args = ["train", "cyclegan", "--domain-a", str(domains[0]), "--domain-b", str(domains[1]), "--resolution", "16",
            "--out", str(run), "--steps", "3", "--batch-size", "4", "--g-width", "4", "--d-width", "4",
            "--n-blocks", "1", "--no-tensorboard", "--no-progress", "--precision", "fp32"]
    assert main(args) == 0
    assert main(["train", "cyclegan", "--out", str(run), "--resume", "--steps", "4", "--no-progress"]) == 0
    assert (run / "samples" / "latest.png").is_file()
    assert json.loads((run / "history.jsonl").read_text().splitlines()[-1])["step"] == 4
    group = load_train_state(latest_checkpoint(run))["optimizers"]["discriminator"]["param_groups"][0]
    assert group["lr"] == pytest.approx(2e-4 * lr_factor(3, 4, "linear")) == pytest.approx(1e-4)  # CycleGAN's decay
    model = load_pretrained(run)
    assert isinstance(model, CycleGAN) and (model.config.channels_a, model.config.channels_b) == (1, 3)
    saved = model.save_pretrained(tmp_path / "saved")
    again = load_pretrained(saved)
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert torch.equal(model.translate(x), again.translate(x))
    assert main(["train", "cyclegan", "--domain-a", str(domains[0]), "--out", str(tmp_path / "x")]) == 2  # no B


# --------------------------------------------------------------------------------- translate CLI
def test_translate_cli_on_a_file_and_a_folder_with_a_corrupt_file(tmp_path, domains, capsys) -> None:
    model = tiny(resolution=16, channels_a=1, channels_b=3)
    saved = model.save_pretrained(tmp_path / "model")
    inp = tmp_path / "inp"
    (inp / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(np.full((30, 40), 128, np.uint8)).save(inp / "one.png")
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(inp / "one.jpg")  # same stem: must not collide
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(inp / "sub" / "deeper" / "two.bmp")
    (inp / "sub" / "broken.png").write_bytes(b"not a png")
    (inp / "notes.txt").write_text("ignored")

    assert main(["translate", str(saved), str(inp), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "translated 3 images" in captured.out
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["one.png", "one_jpg.png", "sub/deeper/two.png"]
    with Image.open(tmp_path / "out" / "one.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"  # A (grey) -> B (RGB) at the training resolution

    # a single file, the other direction, at another size; the output matches the library call
    assert main(["translate", str(saved), str(tmp_path / "out" / "one.png"), "-o", str(tmp_path / "back"),
                 "--direction", "b2a", "--size", "32", "--quiet"]) == 0
    with Image.open(tmp_path / "back" / "one.png") as im:
        assert im.size == (32, 32) and im.mode == "L"
    assert main(["translate", str(saved), str(inp / "sub" / "broken.png"), "-o", str(tmp_path / "none"),
                 "--quiet"]) == 1
    assert main(["translate", str(saved), str(tmp_path / "missing"), "-o", str(tmp_path / "none")]) == 2



def test_translate_cli_stops_between_batches_on_sigterm(tmp_path, capsys, monkeypatch) -> None:
    import os
    import signal

    import atelier.style.translate as translate_module

    saved = tiny(resolution=16, channels_a=1, channels_b=3).save_pretrained(tmp_path / "model")
    inp = tmp_path / "inp"
    inp.mkdir()
    for i in range(5):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(inp / f"{i}.png")
    translate, calls = translate_module.translate_images, []

    def translate_then_signal(*args, **kwargs):  # a real SIGTERM while the first batch is translated
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return translate(*args, **kwargs)

    monkeypatch.setattr(translate_module, "translate_images", translate_then_signal)
    out = tmp_path / "out"
    rc = main(["translate", str(saved), str(inp), "-o", str(out), "--batch-size", "2", "--quiet"])
    assert rc == 128 + signal.SIGTERM and len(calls) == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["0.png", "1.png"]  # the first batch, complete
    for name in ("0.png", "1.png"):
        with Image.open(out / name) as im:
            im.load()
            assert im.size == (16, 16)
    assert "stopped by SIGTERM after 2 of 5 images: wrote 2 complete PNGs" in capsys.readouterr().err

def test_translate_images_converts_channels() -> None:
    from atelier.style.translate import translate_images

    model = tiny(resolution=16, channels_a=3, channels_b=1)
    grey = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    out = translate_images(model, grey, "a2b")
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out, model.translate(grey.expand(-1, 3, -1, -1).float() / 127.5 - 1, "a2b"))


# ------------------------------------------------------------------------------------- domains
@needs_mnist
def test_mnist_domains_are_disjoint_styled_and_written_as_labelled_folders(tmp_path) -> None:
    from atelier.data.domains import apply_style, mnist_domains, write_domain_folders
    from atelier.metrics.translation import apply_table, histogram_matching

    d = mnist_domains("thick", n=60, n_test=20, data_dir=MNIST_DIR, seed=1)
    for split in ("train", "test"):
        a, b = getattr(d, f"a_{split}"), getattr(d, f"b_{split}")
        assert not set(a.meta["source_index"]) & set(b.meta["source_index"])  # no pairs
    raw = load_dataset("mnist", split="train", data_dir=MNIST_DIR, progress=False)
    source = raw.images[d.b_train.meta["source_index"]]
    assert torch.equal(d.b_train.labels, raw.labels[d.b_train.meta["source_index"]])
    assert (d.b_train.images >= source).all() and (d.b_train.images > 0).sum() > 1.5 * (source > 0).sum()
    colour = apply_style(source[:4], "thick+colour")
    assert colour.shape == (4, 3, 28, 28) and colour[0, :, 0, 0].tolist() == [25, 45, 110]  # navy background
    assert torch.equal(apply_style(source[:4], "inverted"), 255 - source[:4])
    with pytest.raises(DataError, match="unknown style"):
        apply_style(source[:4], "wobbly")

    out = write_domain_folders(d, tmp_path / "dom")
    loaded = load_dataset(f"folder:{out / 'b'}", split="test", progress=False)
    assert len(loaded) == 20 and loaded.classes == [str(i) for i in range(10)]
    assert sorted(loaded.labels.tolist()) == sorted(d.b_test.labels.tolist())
    with pytest.raises(DataError, match="not empty"):
        write_domain_folders(d, out)

    # histogram matching, the fixed pixel-value baseline, solves a pointwise style such as inversion
    inv = mnist_domains("inverted", n=200, n_test=10, data_dir=MNIST_DIR)
    mapped = apply_table(inv.a_test.images, histogram_matching(inv.a_train, inv.b_train))
    assert (mapped.float() - (255 - inv.a_test.images.float())).abs().mean() < 25


# ------------------------------------------------------------------------- identity preservation
@needs_mnist
def test_cyclegan_keeps_the_digit_and_reaches_domain_b_better_than_trivial_baselines(tmp_path) -> None:
    """About 50 s on one core: 200 steps of a tiny CycleGAN on plain vs thick MNIST digits (2,000 each,
    disjoint, unpaired), judged on 500 test digits by a digit classifier fitted on B and an A-vs-B
    classifier. Success = the right digit AND judged B."""
    from atelier.data.domains import mnist_domains, write_domain_folders
    from atelier.metrics.translation import evaluate_translation, fit_judges

    start = time.perf_counter()
    d = mnist_domains("thick", n=2000, n_test=500, data_dir=MNIST_DIR, seed=0)
    folders = write_domain_folders(d, tmp_path / "dom")
    data = UnpairedDataConfig(domain_a=str(folders / "a"), domain_b=str(folders / "b"), resolution=28)
    cfg = small_train(steps=200, batch_size=8, lr=5e-4, log_every=50, channels_last=True)
    train_model("cyclegan", data=data, train=cfg, out=tmp_path / "run", model_kwargs=dict(g_width=8, d_width=8, n_blocks=2))
    model = load_pretrained(tmp_path / "run")
    judges = fit_judges(d.a_train, d.b_train, d.a_test, d.b_test, epochs=3, seed=0)
    rows = evaluate_translation(lambda x: model.translate(x, "a2b"), judges, d.a_test, b_train=d.b_train,
                                b_test=d.b_test, a_train=d.a_train)
    print(json.dumps({"seconds": round(time.perf_counter() - start, 1), "judges": judges.provenance, **rows}))
    ours = rows.pop("translation")
    assert judges.provenance["digit_judge_test_accuracy"] > 0.85
    assert judges.provenance["domain_judge_test_accuracy"] > 0.95
    assert rows["identity"]["domain_b_fraction"] < 0.2  # the domain judge sees through doing nothing
    assert rows["random_b"]["digit_accuracy"] < 0.2  # the digit judge is at chance on unrelated digits
    assert ours["digit_accuracy"] > 0.7 and ours["domain_b_fraction"] > 0.7
    assert ours["success"] > max(r["success"] for r in rows.values()) + 0.4
    assert ours["fd_to_b"] < rows["identity"]["fd_to_b"] and ours["fd_to_b"] < rows["histogram_matching"]["fd_to_b"]
