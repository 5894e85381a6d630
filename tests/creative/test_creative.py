"""Latent-space exploration on tiny untrained models: behaviour, not image quality."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from PIL import Image

from atelier.creative import (image_arithmetic, interpolate_classes, interpolate_images, interpolate_seeds,
                              kl_per_dimension, latent_arithmetic, latent_map, lerp, nearest_neighbour_pairs,
                              reconstruction_grid, seed_arithmetic, seed_latents, slerp, traverse)
from atelier.models import GAN, VAE, GANConfig, VAEConfig
from atelier.report.gif import save_gif

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_vae(num_classes: int = 0, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig(resolution=28, latent_dim=4, width=4, hidden=16, num_classes=num_classes)).eval()


def _tiny_gan(num_classes: int = 0, seed: int = 0) -> GAN:
    torch.manual_seed(seed)
    return GAN(GANConfig(resolution=28, latent_dim=8, g_width=8, d_width=8, num_classes=num_classes,
                         class_embed_dim=4)).eval()


@pytest.fixture(scope="module")
def vae():
    return _tiny_vae()


@pytest.fixture(scope="module")
def cvae():
    return _tiny_vae(num_classes=3, seed=1)


@pytest.fixture(scope="module")
def gan():
    return _tiny_gan()


@pytest.fixture(scope="module")
def cgan():
    return _tiny_gan(num_classes=3, seed=2)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# -- slerp / lerp -------------------------------------------------------------------------------
def test_slerp_endpoints_and_shapes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    assert path.shape == (5, 16)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    batch_a, batch_b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    batched = slerp(batch_a, batch_b, t)
    assert batched.shape == (5, 3, 16)
    torch.testing.assert_close(batched[0], batch_a)
    torch.testing.assert_close(batched[-1], batch_b)
    torch.testing.assert_close(batched[2, 1], slerp(batch_a[1], batch_b[1], 0.5))  # rows are independent
    assert slerp(a, b, 0.25).shape == (16,) and lerp(a, b, t).shape == (5, 16)
    torch.testing.assert_close(lerp(a, b, 0.5), (a + b) / 2)


def test_slerp_keeps_gaussian_norms_and_lerp_does_not():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(512, generator=g), torch.randn(512, generator=g)
    t = torch.linspace(0, 1, 11)
    root = math.sqrt(512)
    slerp_norms = slerp(a, b, t).norm(dim=-1) / root
    assert ((slerp_norms - 1).abs() < 0.08).all(), slerp_norms
    mid = lerp(a, b, 0.5).norm() / root
    assert 0.6 < mid < 0.8  # ~1 / sqrt(2): two independent draws are nearly orthogonal


def test_slerp_parallel_falls_back_to_lerp():
    a = torch.randn(8, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0, 1, 7)
    for b in (2 * a, -a, a.clone(), torch.zeros(8)):
        out = slerp(a, b, t)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, lerp(a, b, t))


# -- interpolation ------------------------------------------------------------------------------
def test_interpolate_seeds_endpoints_match_generate(gan, cvae):
    frames = interpolate_seeds(gan, 3, 7, steps=6)
    assert frames.shape == (6, 1, 28, 28)
    z = seed_latents(gan, [3, 7])
    torch.testing.assert_close(frames[[0, -1]], gan.generate(z), atol=1e-5, rtol=1e-5)
    lerped = interpolate_seeds(gan, 3, 7, steps=6, method="lerp")
    torch.testing.assert_close(lerped[[0, -1]], frames[[0, -1]], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(lerped[2], frames[2])

    frames = interpolate_seeds(cvae, 3, 7, steps=4, label=2)
    torch.testing.assert_close(frames[[0, -1]], cvae.generate(seed_latents(cvae, [3, 7]), torch.tensor([2, 2])),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        interpolate_seeds(gan, 0, 1, label=1)
    with pytest.raises(ValueError, match="out of range"):
        interpolate_seeds(cvae, 0, 1, label=5)
    with pytest.raises(ValueError, match="steps"):
        interpolate_seeds(gan, 0, 1, steps=1)


def test_interpolate_classes_endpoints_are_hard_labels(cgan, cvae, gan):
    for model in (cgan, cvae):
        frames = interpolate_classes(model, 0, 2, steps=5, seed=4)
        assert frames.shape == (5, 1, 28, 28)
        z = seed_latents(model, [4]).repeat(2, 1)
        torch.testing.assert_close(frames[[0, -1]], model.generate(z, torch.tensor([0, 2])), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        interpolate_classes(gan, 0, 1)
    with pytest.raises(ValueError, match="out of range"):
        interpolate_classes(cvae, 0, 3)


def test_interpolate_images_ends_are_reconstructions(vae, cvae, gan):
    images = _images(2)
    frames = interpolate_images(vae, images[0], images[1], steps=5)
    assert frames.shape == (5, 1, 28, 28)
    torch.testing.assert_close(frames[[0, -1]], vae.reconstruct(images), atol=1e-5, rtol=1e-5)
    frames = interpolate_images(cvae, images[0], images[1], steps=3, labels=(0, 2))
    torch.testing.assert_close(frames[[0, -1]], cvae.reconstruct(images, torch.tensor([0, 2])), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs an encoder"):
        interpolate_images(gan, images[0], images[1])
    with pytest.raises(ValueError, match="labels"):
        interpolate_images(cvae, images[0], images[1])
    with pytest.raises(ValueError, match="shape"):
        interpolate_images(vae, torch.zeros(1, 32, 32, dtype=torch.uint8), images[1])


# -- traversal ----------------------------------------------------------------------------------
def test_traversal_changes_one_dimension_per_row(gan, cvae):
    values = torch.linspace(-3, 3, 5)
    images, dims, info = traverse(gan, dims=[1, 6], values=values, seed=11)
    assert images.shape == (10, 1, 28, 28) and dims == [1, 6]
    base, latents = info["base"], info["latents"]
    torch.testing.assert_close(base, seed_latents(gan, [11])[0])
    for r, dim in enumerate(dims):
        row = latents[r * 5 : (r + 1) * 5]
        others = [d for d in range(8) if d != dim]
        torch.testing.assert_close(row[:, others], base[others].expand(5, -1))
        torch.testing.assert_close(row[:, dim], values)
        row_images = images[r * 5 : (r + 1) * 5]
        assert not torch.allclose(row_images[0], row_images[-1])
    images, dims, info = traverse(cvae, label=1)
    assert dims == [0, 1, 2, 3] and images.shape == (36, 1, 28, 28)
    assert torch.count_nonzero(info["base"]) == 0
    with pytest.raises(ValueError, match="out of range"):
        traverse(gan, dims=[8])


def test_traversal_orders_dimensions_by_kl(vae, monkeypatch):
    images = _images(12)
    from atelier.objectives.vae import kl_standard_normal

    mean, logvar = vae.encode_images(images)
    expected = kl_standard_normal(mean, logvar, per_dim=True).mean(0)
    _, dims, info = traverse(vae, order_by_kl_data=images, max_rows=3)
    torch.testing.assert_close(info["kl_per_dim"], expected)
    assert dims == expected.argsort(descending=True)[:3].tolist()

    def fake_encode(x, labels=None):  # dimension 2 carries by far the most information
        n = x.shape[0]
        m = torch.zeros(n, 4)
        m[:, 2], m[:, 0] = 3.0, 1.0
        return m, torch.zeros(n, 4)

    monkeypatch.setattr(vae, "encode_images", fake_encode)
    _, dims, info = traverse(vae, order_by_kl_data=images)
    assert dims[:2] == [2, 0]
    torch.testing.assert_close(kl_per_dimension(vae, images), torch.tensor([0.5, 0.0, 4.5, 0.0]))


def test_traverse_around_an_image_needs_an_encoder(vae, gan):
    image = _images(1)[0]
    _, _, info = traverse(vae, base_image=image, dims=[0])
    torch.testing.assert_close(info["base"], vae.encode_images(image[None])[0][0])
    with pytest.raises(ValueError, match="needs an encoder"):
        traverse(gan, base_image=torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="needs an encoder"):
        traverse(gan, order_by_kl_data=image[None])


# -- arithmetic ---------------------------------------------------------------------------------
def test_latent_arithmetic_formula():
    g = torch.Generator().manual_seed(5)
    a, b, c = torch.randn(4, 6, generator=g), torch.randn(3, 6, generator=g), torch.randn(2, 6, generator=g)
    torch.testing.assert_close(latent_arithmetic(a, b, c), a.mean(0) - b.mean(0) + c)
    assert latent_arithmetic(a[0], b[0], c[0]).shape == (1, 6)
    with pytest.raises(ValueError, match="differ"):
        latent_arithmetic(a, b[:, :5], c)


def test_image_and_seed_arithmetic(vae, cvae, gan):
    a, b, c = _images(5, 1), _images(4, 2), _images(3, 3)
    out, z = image_arithmetic(vae, a, b, c, return_latents=True)
    assert out.shape == (6, 1, 28, 28) and z.shape == (3, 4)
    torch.testing.assert_close(out[0::2], c.float() / 127.5 - 1)  # each row starts with its C image
    torch.testing.assert_close(out[1::2], vae.generate(z), atol=1e-5, rtol=1e-5)
    labels = lambda n, k: torch.full((n,), k, dtype=torch.long)  # noqa: E731
    out = image_arithmetic(cvae, a, b, c, labels_a=labels(5, 0), labels_b=labels(4, 1), labels_c=labels(3, 2))
    assert out.shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="labels_a"):
        image_arithmetic(cvae, a, b, c)
    with pytest.raises(ValueError, match="needs an encoder"):
        image_arithmetic(gan, a, b, c)
    out, z = seed_arithmetic(gan, [1, 2], [3], [4, 5], return_latents=True)
    za, zb, zc = seed_latents(gan, [1, 2]), seed_latents(gan, [3]), seed_latents(gan, [4, 5])
    torch.testing.assert_close(z, za.mean(0) - zb.mean(0) + zc)
    assert out.shape == (4, 1, 28, 28)


# -- reconstruction, latent map, novelty ----------------------------------------------------------
def test_reconstruction_grid(vae, cvae, gan):
    images = _images(11)
    grid, metrics = reconstruction_grid(vae, images, nrow=4)
    assert grid.shape == (24, 1, 28, 28)  # 3 bands of (4 originals + 4 reconstructions), last padded
    torch.testing.assert_close(grid[:4], images[:4].float() / 127.5 - 1)
    torch.testing.assert_close(grid[4:8], vae.reconstruct(images[:4]), atol=1e-5, rtol=1e-5)
    assert (grid[19:20] == 1).all() and (grid[23:] == 1).all()  # white padding tiles
    assert {"mse", "psnr", "ssim"} <= set(metrics)
    grid, _ = reconstruction_grid(cvae, images[:4], torch.tensor([0, 1, 2, 0]))
    assert grid.shape == (8, 1, 28, 28)
    with pytest.raises(ValueError, match="needs an encoder"):
        reconstruction_grid(gan, images)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_latent_map(vae, cvae, tmp_path, method):
    images, labels = _images(60), torch.arange(60) % 3
    path = tmp_path / f"map_{method}.png"
    coords = latent_map(vae, images, method=method, path=path, color_labels=labels, class_names=["a", "b", "c"])
    assert coords.shape == (60, 2) and torch.isfinite(coords).all()
    assert Image.open(path).format == "PNG"
    assert latent_map(cvae, images[:10], labels[:10], method=method).shape == (10, 2)
    assert not list(tmp_path.glob(".*.tmp"))


def test_latent_map_errors(gan, vae):
    with pytest.raises(ValueError, match="needs an encoder"):
        latent_map(gan, _images(5))
    with pytest.raises(ValueError, match="method"):
        latent_map(vae, _images(5), method="umap")


def test_novelty_finds_exact_copies(gan):
    train = _images(30, 7)
    samples = torch.cat([_images(3, 8), train[[17, 4]]])
    result = nearest_neighbour_pairs(samples, train, k=2)
    assert result.pairs.shape == (4, 1, 28, 28) and result.distances.shape == (5,)
    assert result.shown.tolist() == [3, 4]
    assert result.distances[3] == 0 and result.distances[4] == 0
    assert result.train_indices[3:].tolist() == [17, 4]
    assert torch.equal(result.pairs[0], result.pairs[1]) and torch.equal(result.pairs[1], train[17])
    # generated [-1, 1] images at another resolution are converted to the training format first
    big = nearest_neighbour_pairs(gan.sample(3, generator=torch.Generator().manual_seed(0)),
                                  _images(10).repeat(1, 3, 1, 1)[:, :, :14, :14].contiguous(), k=8)
    assert big.pairs.shape == (6, 3, 14, 14)


# -- GIF ----------------------------------------------------------------------------------------
def test_save_gif_frames_and_atomic_write(tmp_path, monkeypatch):
    import atelier.io as atelier_io

    writes = []
    real = atelier_io.atomic_write_bytes
    monkeypatch.setattr(atelier_io, "atomic_write_bytes", lambda path, data: (writes.append(path), real(path, data)))
    frames = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = save_gif(frames, tmp_path / "a.gif")
    assert writes == [path]
    with Image.open(path) as gif:
        assert gif.n_frames == 6 + 4 and gif.size == (64, 64)  # boomerang: forward, then back without the ends
    save_gif(_images(5).expand(-1, 3, -1, -1), tmp_path / "b.gif", boomerang=False, scale=1)
    with Image.open(tmp_path / "b.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (28, 28)
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="frames"):
        save_gif(torch.zeros(3, 28, 28), tmp_path / "c.gif")


# -- CLI ----------------------------------------------------------------------------------------
def _cli(*argv):
    from atelier.cli.explore import add_explore_parser

    parser = argparse.ArgumentParser(prog="atelier")
    add_explore_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["explore", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: str(model.save_pretrained(root / name)) for name, model in
            (("vae", _tiny_vae()), ("cvae", _tiny_vae(num_classes=10, seed=3)), ("gan", _tiny_gan()),
             ("cgan", _tiny_gan(num_classes=10, seed=4)))}


def test_cli_interpolate(saved, tmp_path, capsys):
    assert _cli("interpolate", saved["gan"], "--seeds", 1, 2, "--steps", 4, "--out", tmp_path / "s.png") == 0
    assert Image.open(tmp_path / "s.png").format == "PNG"
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 6
    assert _cli("interpolate", saved["cvae"], "--images", 0, 5, "--data", "digits", "--out", tmp_path / "i.png") == 0
    assert _cli("interpolate", saved["cgan"], "--classes", 1, 7, "--no-gif", "--out", tmp_path / "c") == 0
    assert (tmp_path / "c" / "interpolation.png").exists() and not (tmp_path / "c" / "interpolation.gif").exists()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(ValueError, match="needs an encoder"):
        _cli("interpolate", saved["gan"], "--images", 0, 1, "--data", "digits", "--out", tmp_path / "x.png")
    with pytest.raises(ValueError, match="out of range"):
        _cli("interpolate", saved["vae"], "--images", 0, 9999, "--data", "digits", "--out", tmp_path / "x.png")
    with pytest.raises(ValueError, match="class-conditional"):
        _cli("interpolate", saved["vae"], "--classes", 0, 1, "--out", tmp_path / "x.png")


def test_cli_traverse_and_arithmetic(saved, tmp_path, capsys):
    assert _cli("traverse", saved["vae"], "--data", "digits", "--kl-n", 50, "--max-rows", 2, "--steps", 5,
                "--out", tmp_path / "t.png") == 0
    assert "mean KL per dimension" in capsys.readouterr().out
    assert _cli("traverse", saved["gan"], "--dims", "0,3", "--seed", 2, "--out", tmp_path / "g.png") == 0
    with pytest.raises(ValueError, match="needs an encoder"):
        _cli("traverse", saved["gan"], "--data", "digits", "--out", tmp_path / "x.png")
    assert _cli("arithmetic", saved["cvae"], "--data", "digits", "--a", 1, "--b", "7", "--c-indices", "0,1,2",
                "--group-size", 20, "--out", tmp_path / "a.png") == 0
    assert _cli("arithmetic", saved["gan"], "--a-seeds", "1,2", "--b-seeds", "3", "--c-seeds", "4,5",
                "--out", tmp_path / "b.png") == 0
    assert (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()
    with pytest.raises(ValueError, match="not a class"):
        _cli("arithmetic", saved["vae"], "--data", "digits", "--a", "cat", "--b", 1, "--c-indices", "0",
             "--out", tmp_path / "x.png")
    with pytest.raises(ValueError, match="needs an encoder"):
        _cli("arithmetic", saved["gan"], "--data", "digits", "--a", 1, "--b", 2, "--c-indices", "0",
             "--out", tmp_path / "x.png")


def test_cli_reconstruct_latent_map_novelty(saved, tmp_path, capsys):
    assert _cli("reconstruct", saved["cvae"], "--data", "digits", "--n", 6, "--out", tmp_path / "r.png") == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "SSIM" in out and (tmp_path / "r.png").exists()
    assert _cli("latent-map", saved["vae"], "--data", "digits", "--n", 40, "--out", tmp_path) == 0
    assert (tmp_path / "latent_map_pca.png").exists()
    assert _cli("novelty", saved["gan"], "--data", "digits", "--n", 8, "--k", 4, "--out", tmp_path / "n.png") == 0
    assert "median" in capsys.readouterr().out and (tmp_path / "n.png").exists()
    with pytest.raises(ValueError, match="needs an encoder"):
        _cli("reconstruct", saved["gan"], "--data", "digits", "--out", tmp_path / "x.png")
    with pytest.raises(ValueError, match="--data"):
        _cli("latent-map", saved["vae"], "--out", tmp_path / "x.png")
