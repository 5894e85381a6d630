"""The flow family: the loss and path worked by hand, the solvers' orders on a flow known exactly,
guidance, editing and inpainting, the DDPM peer, and a short run that beats an untrained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atelier.data import load_dataset, to_float
from atelier.models.flow import FlowConfig, FlowModel, nfe
from atelier.models.registry import create_model
from atelier.objectives.flow import flow_matching_loss, noise_prediction_loss
from atelier.schedulers import DDPMSchedule, ddim_sample, flow_interpolant, flow_target, sample_times, solve, time_grid
from atelier.signals import Stopped


def tiny(**kw) -> FlowModel:
    """A small flow model sampling in fp32, so that the tests below can compare exact arithmetic."""
    torch.manual_seed(0)
    return create_model("flow", width=8, blocks_per_level=1, levels=2, **{"sample_precision": "fp32", **kw})


# -- the path and the loss ----------------------------------------------------------------------------------

def test_flow_matching_loss_and_path_worked_by_hand() -> None:
    x0 = torch.tensor([[[[1.0, 2.0]]], [[[0.0, -1.0]]]])  # (2, 1, 1, 2)
    noise = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 1.0]]]])
    t = torch.tensor([0.25, 1.0])
    # x_t = (1 - t) x0 + t noise
    assert torch.equal(flow_interpolant(x0, noise, t), torch.tensor([[[[0.75, 1.75]]], [[[2.0, 1.0]]]]))
    assert torch.equal(flow_target(x0, noise), torch.tensor([[[[-1.0, -1.0]]], [[[2.0, 2.0]]]]))
    # zero velocity: per-sample mean of the target squared, (1 + 1) / 2 and (4 + 4) / 2
    assert torch.equal(flow_matching_loss(torch.zeros_like(x0), x0, noise), torch.tensor([1.0, 4.0]))
    # the exact velocity costs nothing
    assert torch.equal(flow_matching_loss(noise - x0, x0, noise), torch.zeros(2))
    assert torch.equal(noise_prediction_loss(noise + 1, noise), torch.ones(2))


def test_training_times() -> None:
    g = torch.Generator().manual_seed(0)
    for kind in ("uniform", "logit_normal"):
        t = sample_times(20_000, kind, generator=g)
        assert t.shape == (20_000,) and 0 < t.min() and t.max() < 1
        assert t.mean().item() == pytest.approx(0.5, abs=0.01)
    uniform, logit = sample_times(20_000, "uniform", generator=g), sample_times(20_000, "logit_normal", generator=g)
    middle = lambda t: ((t > 0.25) & (t < 0.75)).float().mean().item()  # noqa: E731
    assert middle(uniform) == pytest.approx(0.5, abs=0.02) and middle(logit) > 0.6  # logit-normal favours the middle
    assert sample_times(4000, "logit_normal", mean=1.0, generator=g).mean() > 0.6  # a positive mean: towards noise
    with pytest.raises(ValueError, match="unknown time sampling"):
        sample_times(2, "cosine")


def test_time_grid() -> None:
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert time_grid(2, start=0.5) == [0.5, 0.25, 0.0]
    shifted = time_grid(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] == pytest.approx(0.75)  # 3 * .5 / (1 + 2 * .5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            time_grid(bad)
    with pytest.raises(ValueError, match="start"):
        time_grid(3, start=0.0)


# -- the solvers on a flow known exactly --------------------------------------------------------------------

MU, S = 0.5, 0.3  # data N(MU, S^2) per coordinate; noise N(0, 1)


def gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """The marginal velocity of straight paths from N(MU, S^2) data to N(0, 1) noise: x_t is Gaussian with
    mean (1 - t) MU and std sigma(t) = sqrt((1 - t)^2 S^2 + t^2), and the flow moves each point along
    with them: v = -MU + sigma'(t) / sigma(t) (x - (1 - t) MU)."""
    sigma2 = (1 - t) ** 2 * S**2 + t**2
    dsigma_over_sigma = (-(1 - t) * S**2 + t) / sigma2
    return -MU + dsigma_over_sigma * (x - (1 - t) * MU)


def errors(method: str, steps_list: list[int]) -> list[float]:
    x1 = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    exact = MU + S * x1  # where the flow takes x1 at t = 1 to at t = 0
    return [(solve(gaussian_velocity, x1, time_grid(k), method).x - exact).abs().max().item() for k in steps_list]


def test_solver_orders_on_an_exact_flow() -> None:
    ks = [8, 16, 32, 64, 128]
    euler, heun, ab2, dpm = (errors(m, ks) for m in ("euler", "heun", "ab2", "dpm++2m"))
    for name, errs, order in (("euler", euler, 1), ("heun", heun, 2), ("ab2", ab2, 2)):
        assert all(e2 < e1 for e1, e2 in zip(errs[:-1], errs[1:])), (name, errs)  # error falls with steps
        ratios = [a / b for a, b in zip(errs[:-1], errs[1:])]
        # halving the step divides the error by about 2^order
        assert ratios[-1] == pytest.approx(2**order, rel=0.1), (name, errs, ratios)
    # DPM-Solver++(2M) on a grid uniform in t: second order inside, but its steps next to t = 1 and t = 0,
    # where log-SNR is infinite, stay first order (their size in log-SNR does not shrink with the step
    # count), so it is judged on accuracy: at every budget well below Euler's error for the same NFE
    assert all(d < e / 1.5 for d, e in zip(dpm, euler)), (dpm, euler)
    assert dpm[-1] < dpm[0] / 20
    assert solve(gaussian_velocity, torch.zeros(3), time_grid(5), "heun").nfe == 10
    for method in ("euler", "dpm++2m", "ab2"):
        assert solve(gaussian_velocity, torch.zeros(3), time_grid(5), method).nfe == 5


def test_solver_hooks_and_stopping() -> None:
    seen = []

    def after(x, t):
        seen.append(t)
        return x * 0 + t

    out = solve(lambda x, t: torch.ones_like(x), torch.zeros(2), time_grid(4), "euler", after_step=after)
    assert seen == [0.75, 0.5, 0.25, 0.0] and torch.equal(out.x, torch.zeros(2))
    with pytest.raises(Stopped, match="step 0 of 4"):
        solve(lambda x, t: x, torch.zeros(2), time_grid(4), "euler", should_stop=lambda: True)
    with pytest.raises(ValueError, match="unknown sampler"):
        solve(lambda x, t: x, torch.zeros(2), time_grid(4), "rk4")


def test_ddpm_schedule_and_ddim_with_the_exact_noise() -> None:
    sched = DDPMSchedule()
    abar = sched.alpha_bar
    assert abar.shape == (1000,) and bool((abar[1:] < abar[:-1]).all())
    assert abar[0].item() == pytest.approx(1 - 1e-4) and abar[-1].item() < 1e-4  # almost pure noise at the end
    assert sched.ddim_steps(4) == [999, 749, 499, 249] and len(sched.ddim_steps(50)) == 50
    # a point mass at c: the exact eps of x_k is (x_k - sqrt(abar) c) / sqrt(1 - abar); DDIM lands on c
    c = torch.tensor([0.3, -0.7], dtype=torch.float64)

    def eps(x, t):
        k = round(t * 1000) - 1
        return (x - abar[k].sqrt() * c) / (1 - abar[k]).sqrt()

    out = ddim_sample(eps, torch.randn(2, dtype=torch.float64), sched, steps=10)
    assert out.nfe == 10 and torch.allclose(out.x, c, atol=1e-9)
    k = torch.tensor([0, 999])
    x = sched.noise(torch.ones(2, 1), torch.zeros(2, 1), k)
    assert x[0].item() == pytest.approx(abar[0].sqrt().item()) and x[1].item() < 0.01


# -- the model ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution,channels,levels", [(28, 1, 3), (32, 3, 4), (64, 3, 4)])
def test_unet_shapes_and_zero_start(resolution, channels, levels) -> None:
    model = create_model("flow", width=8, blocks_per_level=1, levels=levels, resolution=resolution,
                         channels=channels, num_classes=3)
    x = torch.randn(2, channels, resolution, resolution)
    out = model.net(x, torch.rand(2), torch.tensor([0, 3]))  # 3: "no label"
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    with torch.no_grad():  # a trained-looking network: its output depends on x, t and the label
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = model.net(x, torch.full((2,), 0.3), torch.tensor([0, 0]))
    assert not torch.equal(a, model.net(x, torch.full((2,), 0.7), torch.tensor([0, 0])))
    assert not torch.equal(a, model.net(x, torch.full((2,), 0.3), torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="divides by"):
        FlowConfig(resolution=28, levels=4)


def perturbed(model: FlowModel) -> FlowModel:
    with torch.no_grad():
        for p in model.net_ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_guidance_zero_is_the_unconditional_model_and_w_extrapolates() -> None:
    model = perturbed(tiny(num_classes=4))
    x, labels = torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2])
    uncond = model.net_ema(x, torch.full((3,), 0.4), None)
    cond = model.net_ema(x, torch.full((3,), 0.4), labels)
    assert torch.allclose(model.predict(x, 0.4, labels, guidance=0.0), uncond)
    assert torch.allclose(model.predict(x, 0.4, labels, guidance=1.0), cond)
    assert torch.allclose(model.predict(x, 0.4, labels, guidance=3.0), uncond + 3.0 * (cond - uncond), atol=1e-5)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = model.sample(3, labels=labels, generator=g(), steps=3, guidance=0.0)
    assert model.last_nfe == 3
    z = model.sample_latents(3, generator=g()).reshape(3, 1, 28, 28)
    unconditional = solve(lambda x, t: model.net_ema(x, torch.full((3,), t), None), z, time_grid(3),
                          model.config.sampler).x.clamp(-1, 1)
    assert torch.allclose(a, unconditional, atol=1e-6)  # w = 0 is the model without labels
    assert not torch.allclose(a, model.sample(3, labels=labels, generator=g(), steps=3, guidance=1.0))
    model.sample(3, generator=g(), steps=3, guidance=2.0, sampler="heun")
    assert model.last_nfe == 12 == model.planned_nfe(3, "heun", 2.0) == nfe("heun", 3, guided=True)
    with pytest.raises(ValueError, match="unconditional"):
        tiny().sample(2, steps=2, guidance=2.0)


def test_bf16_sampling_stays_close_to_fp32() -> None:
    from atelier.device import cpu_has_native_bf16

    model = perturbed(tiny(num_classes=3))
    assert model.config.sample_precision == "fp32" and create_model("flow").config.sample_precision == "auto"
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    exact = model.sample(6, generator=g(), steps=4, guidance=2.0)
    model.config.sample_precision = "bf16"
    rough = model.sample(6, generator=g(), steps=4, guidance=2.0)
    assert rough.dtype == torch.float32 and not torch.equal(rough, exact)  # bf16 ran, the result is fp32
    assert (rough - exact).abs().mean() < 0.02  # bf16's 8-bit mantissa, not a different sample
    model.config.sample_precision = "auto"
    auto = model.sample(6, generator=g(), steps=4, guidance=2.0)
    assert torch.equal(auto, rough if cpu_has_native_bf16() else exact)
    # a per-call precision overrides the config without changing it
    model.config.sample_precision = "fp32"
    assert torch.equal(model.sample(6, generator=g(), steps=4, guidance=2.0, precision="bf16"), rough)
    assert model.config.sample_precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        model.sample(1, steps=1, precision="fp16")


def test_generate_clamps_unless_asked_not_to() -> None:
    model = perturbed(tiny())
    z = 4.0 * model.sample_latents(8, generator=torch.Generator().manual_seed(1))  # far outside the data
    clipped, raw = model.generate(z, steps=2), model.generate(z, steps=2, clamp=False)
    assert clipped.abs().max() <= 1.0 < raw.abs().max()
    assert torch.equal(clipped, raw.clamp(-1.0, 1.0))


def test_class_weights_morph_between_classes() -> None:
    model = perturbed(tiny(num_classes=3))
    z = model.sample_latents(1, generator=torch.Generator().manual_seed(0)).expand(2, -1)
    hard = model.generate(z, torch.tensor([0, 2]), steps=2, guidance=2.0)
    soft = model.generate(z, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), steps=2, guidance=2.0)
    assert torch.allclose(hard, soft, atol=1e-5)
    mid = model.generate(z[:1], torch.tensor([[0.5, 0, 0.5]]), steps=2, guidance=2.0)
    assert not torch.allclose(mid, hard[:1]) and not torch.allclose(mid, hard[1:])


def test_editing_at_zero_returns_the_input_and_strength_moves_it() -> None:
    model = perturbed(tiny(num_classes=2))
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    assert torch.equal(model.edit(images, 0.0), images) and model.last_nfe == 0
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    light, heavy = model.edit(images, 0.2, steps=4, generator=g()), model.edit(images, 0.9, steps=4, generator=g())
    assert model.last_nfe == 4
    assert (light - images).abs().mean() < (heavy - images).abs().mean()
    model.edit(images, 0.5, labels=1, steps=2, guidance=2.0)
    assert model.last_nfe == 4
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            model.edit(images, bad)
    with pytest.raises(ValueError, match="ddpm"):
        create_model("ddpm", width=8, blocks_per_level=1, levels=2).edit(images, 0.5)


def test_inpainting_keeps_the_unmasked_pixels_exactly() -> None:
    model = perturbed(tiny())
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., 8:20, 8:20] = 1
    for sampler in ("euler", "heun", "dpm++2m", "ab2"):
        out = model.inpaint(images, mask, steps=3, sampler=sampler, generator=torch.Generator().manual_seed(0))
        keep = mask.expand_as(images) == 0
        assert torch.equal(out[keep], images[keep])
        assert not torch.allclose(out[~keep], images[~keep])  # the hole is filled anew
        assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="mask"):
        model.inpaint(images, torch.zeros(1, 1, 14, 14))
    with pytest.raises(ValueError, match="mask values"):
        model.inpaint(images, mask * 2)


def test_settings_are_checked() -> None:
    model = tiny()
    for kwargs, match in (({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"sampler": "rk4"}, "unknown sampler")):
        with pytest.raises(ValueError, match=match):
            model.sample(1, **kwargs)
    cond = tiny(num_classes=2)
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ValueError, match="guidance"):
            cond.sample(1, guidance=bad, steps=1)
    with pytest.raises(ValueError, match="DDIM"):
        create_model("ddpm", width=8, blocks_per_level=1, levels=2).sample(1, sampler="heun", steps=2)


# -- a short run -----------------------------------------------------------------------------------------------

def _features(images: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.avg_pool2d(images.float(), 4).flatten(1).double().numpy()


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu = ((a.mean(0) - b.mean(0)) ** 2).sum()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(mu + np.trace(ca + cb - 2 * root))


def test_short_run_beats_an_untrained_model(tmp_path) -> None:
    """About 30 s: 300 steps of a small conditional flow on the bundled digits."""
    from sklearn.linear_model import LogisticRegression

    from atelier.train import train_model
    from atelier.train.config import DataConfig
    from atelier.train.run import family_train_config

    kwargs = dict(width=16, blocks_per_level=1, levels=3, sample_steps=8)
    train = family_train_config("flow", steps=300, batch_size=64, log_every=50, sample_every=10_000,
                                checkpoint_every=10_000, tensorboard=False, progress=False, precision="fp32")
    torch.manual_seed(0)
    untrained = create_model("flow", resolution=28, channels=1, num_classes=10, **kwargs)
    result = train_model("flow", data=DataConfig(), train=train, out=tmp_path / "run", model_kwargs=kwargs,
                         conditional=True)
    history = result.history
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    trained = FlowModel.from_pretrained(result.run_dir)

    test_set = load_dataset("digits", split="test", progress=False)
    train_set = load_dataset("digits", split="train", progress=False)
    real = _features(to_float(test_set.images))
    judge = LogisticRegression(max_iter=2000).fit(_features(to_float(train_set.images)), train_set.labels.numpy())
    n = 300
    labels = torch.arange(n) % 10
    scores = {}
    for name, model in (("trained", trained), ("untrained", untrained)):
        samples = model.sample(n, labels=labels, generator=torch.Generator().manual_seed(1), guidance=2.0)
        feats = _features(samples)
        scores[name] = (_frechet(feats, real), float((judge.predict(feats) == labels.numpy()).mean()))
    print(scores)
    assert scores["trained"][0] < 0.3 * scores["untrained"][0]
    assert scores["trained"][1] > 0.5 > 0.2 > scores["untrained"][1]
    assert math.isfinite(history[-1]["grad_norm"])


def _bimodal_teacher(steps: int = 300) -> FlowModel:
    """A tiny flow model trained on two images (all +0.6 or all -0.6, 4x4 grey): its paths from noise
    curve, so one Euler step lands near the mean 0, between the two."""
    torch.manual_seed(0)
    model = FlowModel(FlowConfig(resolution=4, channels=1, width=8, levels=1, blocks_per_level=1,
                                 attention=False))
    opt = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = 0.6 * torch.sign(torch.randn(64, 1, 1, 1, generator=g)).expand(64, 1, 4, 4)
        z, t = torch.randn(64, 1, 4, 4, generator=g), torch.rand(64, generator=g)
        loss = flow_matching_loss(model.net(flow_interpolant(x, z, t), t), x, z).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.net_ema.load_state_dict(model.net.state_dict())
    return model.eval()


def test_reflow_makes_one_step_land_where_the_teacher_goes() -> None:
    from atelier.train.reflow import ReflowConfig, reflow

    teacher = _bimodal_teacher()
    cfg = ReflowConfig(pairs=512, teacher_steps=32, teacher_sampler="heun", steps=300, batch_size=64, lr=2e-3,
                       precision="fp32", ema_decay=0.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = reflow(teacher, cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher is untouched
    student = result.student
    assert student.config.sampler == "euler" and student.config.sample_steps == 2 and result.steps == 300
    z = torch.randn(256, 16, generator=torch.Generator().manual_seed(7))
    target = teacher.generate(z, steps=64, sampler="heun")  # where the teacher's flow takes each noise
    assert (target.mean(dim=(1, 2, 3)).abs() > 0.4).float().mean() > 0.9  # it learned the two modes
    one_step_teacher = (teacher.generate(z, steps=1, sampler="euler") - target).pow(2).mean()
    one_step_student = (student.generate(z, steps=1, sampler="euler") - target).pow(2).mean()
    assert one_step_student < 0.25 * one_step_teacher, (one_step_student, one_step_teacher)
    assert result.history and result.history[-1]["loss"] < result.history[0]["loss"]


def test_reflow_refuses_the_ddpm_peer_and_a_diverging_loss() -> None:
    from atelier.train.reflow import ReflowConfig, reflow

    peer = create_model("ddpm", width=8, levels=1, resolution=4, blocks_per_level=1, attention=False)
    with pytest.raises(ValueError, match="ddpm"):
        reflow(peer, ReflowConfig(pairs=4, steps=1), progress=False)
    model = FlowModel(FlowConfig(resolution=4, channels=1, width=8, levels=1, blocks_per_level=1, attention=False))
    with torch.no_grad():
        model.net_ema.conv_out.weight.fill_(float("nan"))
    from atelier.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="step 1"):
        reflow(model, ReflowConfig(pairs=8, teacher_steps=1, steps=5, batch_size=4, precision="fp32"), progress=False)


def test_sample_images_passes_flow_options_and_names_unknown_ones() -> None:
    from atelier.models.sampling import sample_images

    model = perturbed(tiny())
    fp32 = sample_images(model, 4, seed=1, steps=2, precision="fp32").images
    assert fp32.dtype == torch.uint8 and fp32.shape == (4, 1, 28, 28)
    assert torch.equal(fp32, sample_images(model, 4, seed=1, steps=2).images)  # tiny() samples in fp32
    with pytest.raises(ValueError, match=r"temperature: not a sampling option of a flow model \(it takes steps"):
        sample_images(model, 4, temperature=0.5)
