"""Named augmentation ops: a registry of kornia augmentations, each with a probability and strengths.

(Over ~400 lines on purpose: thirteen small ops, each a sampler plus an application, registered in one
table; split across files they would scatter the registry the CLI lists and the configs name.)

Every op is a parameter sampler plus a deterministic application (kornia's design), so what was
drawn can be recorded and applied again -- to the same images, to their masks, or to other images
of the same shape. :class:`AugmentOp` wraps one configured op:

    >>> op = AugmentOp("rotate", p=0.5, degrees=20)
    >>> params = op.sample((8, 3, 64, 64))     # which rows are transformed, and how
    >>> out = op.apply(images, params)         # float (8, 3, 64, 64) in [0, 1]

Conventions:
    * images are float (B, C, H, W) in [0, 1] here (:class:`~atelier.augment.pipeline.Pipeline`
      converts uint8 and other ranges); every op keeps shape, dtype and range (``noise`` clamps).
    * the probability gate is drawn by the op itself, then kornia runs at ``p=1`` on the chosen rows
      only: ``p=0`` returns the input tensor untouched and ``p=0.2`` costs a fifth of ``p=1``.
    * random parameters are drawn on the CPU from torch's default generator (whatever the images'
      device), so one seed gives the same augmentation on every device.
    * geometric ops also move masks (nearest-neighbour, so label values survive); photometric ops
      (colour, blur, noise, erase) leave masks alone.
    * grey (1-channel) images: ``color_jitter`` changes brightness and contrast (saturation and hue
      have nothing to act on) and ``grayscale`` leaves them as they are; both refuse channel counts
      other than 1 and 3 with a clear error. Every other op works on any channel count.
    * angles are in degrees; positive ones turn clockwise (kornia's ``RandomAffine``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

import kornia.augmentation as K
from kornia.augmentation import random_generator as rg
from kornia.constants import Resample

GEOMETRIC, PHOTOMETRIC = "geometric", "photometric"
RESAMPLE = ("bilinear", "nearest")
PADDING = ("zeros", "border", "reflection")


@dataclass(frozen=True)
class OpSpec:
    """A registered op: ``build(params, h, w)`` returns the kornia module (run at p=1) for h x w images."""

    name: str
    kind: str
    p: float
    defaults: dict[str, Any]
    build: Callable[[dict[str, Any], int, int], nn.Module]
    help: str
    colour: bool = False
    aliases: tuple[str, ...] = ()


_OPS: dict[str, OpSpec] = {}
_ALIASES: dict[str, str] = {}


def register_op(name: str, *, kind: str, p: float, defaults: dict[str, Any], help: str, colour: bool = False,
                aliases: tuple[str, ...] = ()):
    """Decorator registering ``build(params, h, w) -> kornia module`` under ``name`` (and ``aliases``)."""
    def deco(build):
        if name in _OPS or name in _ALIASES:
            raise ValueError(f"augmentation op {name!r} is already registered")
        _OPS[name] = OpSpec(name, kind, p, dict(defaults), build, help, colour, tuple(aliases))
        for alias in aliases:
            _ALIASES[alias] = name
        return build
    return deco


def list_ops() -> list[str]:
    return sorted(_OPS)


def get_op(name: str) -> OpSpec:
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _OPS:
        raise ValueError(f"unknown augmentation op {name!r}; available: {', '.join(list_ops())} "
                         f"(aliases: {', '.join(sorted(_ALIASES))})")
    return _OPS[key]


# -- parameter checks ------------------------------------------------------------------------
def _num(op: str, key: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{op}: {key} must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{op}: {key} must lie in [{lo}, {hi}], got {value}")
    return float(value)


def _range(op: str, key: str, value: Any, *, lo: float | None = None, hi: float | None = None,
           symmetric: bool = False) -> tuple[float, float]:
    """A [low, high] pair; a single number v means (-v, v) when ``symmetric``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not symmetric:
            raise ValueError(f"{op}: {key} must be a [low, high] pair, got {value!r}")
        v = _num(op, key, value, 0.0)
        pair = (-v, v)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        pair = (_num(op, key, value[0]), _num(op, key, value[1]))
    else:
        raise ValueError(f"{op}: {key} must be a number or a [low, high] pair, got {value!r}")
    if pair[0] > pair[1]:
        raise ValueError(f"{op}: {key} low end {pair[0]} is above its high end {pair[1]}")
    if (lo is not None and pair[0] < lo) or (hi is not None and pair[1] > hi):
        raise ValueError(f"{op}: {key} must lie within [{lo}, {hi}], got {list(pair)}")
    return pair


def _choice(op: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{op}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _odd_kernel(sigma_max: float, h: int, w: int, kernel_size: Any, op: str) -> int:
    """An odd Gaussian kernel size: the one given, or about 3 sigma each side; at most the image allows."""
    k = int(kernel_size) if kernel_size is not None else 2 * math.ceil(3 * sigma_max) + 1
    if kernel_size is not None and (k < 1 or k % 2 == 0 or k != kernel_size):
        raise ValueError(f"{op}: kernel_size must be a positive odd integer, got {kernel_size!r}")
    limit = 2 * min(h, w) - 1  # reflect padding needs pad < side
    return max(1, min(k, limit if limit % 2 else limit - 1))


# -- the ops ---------------------------------------------------------------------------------
@register_op("hflip", kind=GEOMETRIC, p=0.5, defaults={}, aliases=("horizontal_flip",),
             help="mirror left-right (opt-in: changes the meaning of digits and text)")
def _hflip(params, h, w):
    return K.RandomHorizontalFlip(p=1.0)


@register_op("vflip", kind=GEOMETRIC, p=0.5, defaults={}, aliases=("vertical_flip",),
             help="mirror top-bottom (opt-in)")
def _vflip(params, h, w):
    return K.RandomVerticalFlip(p=1.0)


def _geometry_flags(op: str, params) -> dict[str, Any]:
    return {"resample": _choice(op, "resample", params["resample"], RESAMPLE)}


@register_op("rotate", kind=GEOMETRIC, p=0.5, aliases=("rotation",),
             defaults={"degrees": 15.0, "resample": "bilinear", "padding_mode": "zeros"},
             help="rotate by an angle drawn from [-degrees, degrees] (or a [low, high] pair)")
def _rotate(params, h, w):
    degrees = _range("rotate", "degrees", params["degrees"], lo=-360, hi=360, symmetric=True)
    pad = _choice("rotate", "padding_mode", params["padding_mode"], PADDING)
    return K.RandomAffine(degrees=degrees, padding_mode=pad, p=1.0, **_geometry_flags("rotate", params))


@register_op("affine", kind=GEOMETRIC, p=0.5,
             defaults={"degrees": 10.0, "translate": 0.1, "scale": (0.9, 1.1), "shear": 5.0,
                       "resample": "bilinear", "padding_mode": "zeros"},
             help="rotation (degrees), translation (fraction of the side), zoom (scale range) and shear (degrees)")
def _affine(params, h, w):
    degrees = _range("affine", "degrees", params["degrees"], lo=-360, hi=360, symmetric=True)
    t = params["translate"]
    pair = tuple(t) if isinstance(t, (list, tuple)) else (t, t)
    if len(pair) != 2:
        raise ValueError(f"affine: translate must be a fraction or an [x, y] pair of fractions, got {t!r}")
    translate = tuple(_num("affine", "translate", v, 0, 1) for v in pair)
    scale = _range("affine", "scale", params["scale"], lo=1e-3)
    shear = _range("affine", "shear", params["shear"], lo=-89, hi=89, symmetric=True)
    pad = _choice("affine", "padding_mode", params["padding_mode"], PADDING)
    return K.RandomAffine(degrees=degrees, translate=translate, scale=scale, shear=shear, padding_mode=pad, p=1.0,
                          **_geometry_flags("affine", params))


@register_op("perspective", kind=GEOMETRIC, p=0.3, defaults={"distortion": 0.3, "resample": "bilinear"},
             help="move the corners inwards by up to distortion x half the side")
def _perspective(params, h, w):
    distortion = _num("perspective", "distortion", params["distortion"], 0.0, 1.0)
    return K.RandomPerspective(distortion_scale=distortion, p=1.0, **_geometry_flags("perspective", params))


@register_op("resized_crop", kind=GEOMETRIC, p=0.5, aliases=("random_resized_crop",),
             defaults={"scale": (0.8, 1.0), "ratio": (3 / 4, 4 / 3), "resample": "bilinear"},
             help="crop a region of scale x the area and aspect ratio in ratio, resized back to the input size")
def _resized_crop(params, h, w):
    scale = _range("resized_crop", "scale", params["scale"], lo=1e-3, hi=1.0)
    ratio = _range("resized_crop", "ratio", params["ratio"], lo=1e-2, hi=100.0)
    flags = _geometry_flags("resized_crop", params)
    # Resizing takes align_corners=False (as torchvision); nearest takes none at all (kornia < 0.9 passes it on).
    corners = None if flags["resample"] == "nearest" else False
    return K.RandomResizedCrop((h, w), scale=scale, ratio=ratio, align_corners=corners, p=1.0, **flags)


@register_op("crop", kind=GEOMETRIC, p=0.5, aliases=("pad_crop",), defaults={"padding": 0.125, "padding_mode": "constant"},
             help="pad each side by padding (pixels, or a fraction of the side below 1) and crop back at random")
def _crop(params, h, w):
    pad = _num("crop", "padding", params["padding"], 0.0)
    pad_px = int(round(pad * min(h, w))) if pad < 1 else int(pad)
    mode = _choice("crop", "padding_mode", params["padding_mode"], ("constant", "reflect", "replicate"))
    if mode == "reflect":
        pad_px = min(pad_px, min(h, w) - 1)
    return K.RandomCrop((h, w), padding=max(pad_px, 0), padding_mode=mode, p=1.0)


class ColorJitter(K.IntensityAugmentationBase2D):
    """Brightness, contrast, saturation and hue as one per-image colour matrix: a kornia augmentation
    (a parameter sampler plus a pure function) that is several times faster than ``kornia.augmentation.
    ColorJitter`` on CPU, whose HSV round trip for hue alone costs more than the rest of a typical pipeline.

    In order: brightness multiplies by b; contrast blends with the image's mean grey level by c;
    saturation blends with the pixel's luma (BT.601) by s; hue rotates colours about the grey axis by
    h turns (the rotation StyleGAN2-ADA uses; close to, but not the same as, an HSV hue shift). All
    four are linear, so they compose into one 3x3 matrix and offset per image, and the result is
    clamped to [0, 1] once. Grey (1-channel) images get brightness and contrast (saturation and hue do
    not change a grey image)."""

    _LUMA = (0.299, 0.587, 0.114)

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        super().__init__(p=1.0)
        self._param_generator = rg.PlainUniformGenerator(
            ((1.0 - brightness, 1.0 + brightness), "brightness", None, None),
            ((1.0 - contrast, 1.0 + contrast), "contrast", None, None),
            ((1.0 - saturation, 1.0 + saturation), "saturation", None, None),
            ((-hue, hue), "hue", None, None),
        )

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = input.shape
        f = {k: params[k].to(input.device, input.dtype) for k in ("brightness", "contrast", "saturation", "hue")}
        bc = f["brightness"] * f["contrast"]  # (B,)
        if c == 1:
            mean = input.mean((1, 2, 3)) * f["brightness"]  # mean grey level after brightness, (B,)
            offset = (1.0 - f["contrast"]) * mean
            return (input * bc.view(b, 1, 1, 1) + offset.view(b, 1, 1, 1)).clamp_(0.0, 1.0)
        luma = torch.tensor(self._LUMA, device=input.device, dtype=input.dtype)  # (3,)
        mean = (input.mean((2, 3)) @ luma) * f["brightness"]  # (B,)
        eye = torch.eye(3, device=input.device, dtype=input.dtype)
        s = f["saturation"].view(b, 1, 1)
        sat = s * eye + (1.0 - s) * luma.view(1, 1, 3)  # rows: s * x + (1 - s) * luma . x, (B, 3, 3)
        k = torch.full((3,), 3 ** -0.5, device=input.device, dtype=input.dtype)  # the grey axis
        cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=input.device,
                             dtype=input.dtype) * 3 ** -0.5  # [k]_x
        angle = (f["hue"] * 2 * math.pi).view(b, 1, 1)
        rot = torch.cos(angle) * eye + torch.sin(angle) * cross + (1 - torch.cos(angle)) * torch.outer(k, k)  # Rodrigues
        matrix = (rot @ sat) * bc.view(b, 1, 1)  # (B, 3, 3); sat and rot keep grey, so the offset stays grey
        out = torch.bmm(matrix, input.reshape(b, 3, h * w)).view(b, 3, h, w)
        return out.add_(((1.0 - f["contrast"]) * mean).view(b, 1, 1, 1)).clamp_(0.0, 1.0)


@register_op("color_jitter", kind=PHOTOMETRIC, p=0.5, colour=True, aliases=("colour_jitter", "jitter"),
             defaults={"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05},
             help="brightness/contrast/saturation factors in [1-s, 1+s], hue rotation in [-hue, hue] turns "
                  "(grey images: brightness and contrast only)")
def _color_jitter(params, h, w):
    factors = {k: _num("color_jitter", k, params[k], 0.0, 1.0) for k in ("brightness", "contrast", "saturation")}
    return ColorJitter(**factors, hue=_num("color_jitter", "hue", params["hue"], 0.0, 0.5))


@register_op("grayscale", kind=PHOTOMETRIC, p=0.1, colour=True, aliases=("greyscale", "gray", "grey"), defaults={},
             help="replace colour by its luma, kept as 3 channels (no-op on grey images)")
def _grayscale(params, h, w):
    return K.RandomGrayscale(p=1.0)


@register_op("blur", kind=PHOTOMETRIC, p=0.2, aliases=("gaussian_blur",), defaults={"sigma": (0.1, 1.0), "kernel_size": None},
             help="Gaussian blur, sigma (pixels) drawn from a [low, high] range; kernel_size defaults to ~6 sigma")
def _blur(params, h, w):
    sigma = _range("blur", "sigma", params["sigma"], lo=1e-3, hi=100.0)
    k = _odd_kernel(sigma[1], h, w, params["kernel_size"], "blur")
    return K.RandomGaussianBlur(kernel_size=k, sigma=sigma, p=1.0)


class GaussianNoise(K.IntensityAugmentationBase2D):
    """Additive Gaussian noise, clamped to [0, 1]. The noise itself is drawn with the parameters (as
    kornia >= 0.9 does, but not 0.8, which draws it while applying), so replaying reproduces it."""

    def __init__(self, std: float) -> None:
        super().__init__(p=1.0)
        self.std = std

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return {"noise": torch.randn(tuple(batch_shape), device=self.device, dtype=self.dtype) * self.std}

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        return (input + params["noise"].to(input.device, input.dtype)).clamp_(0.0, 1.0)


@register_op("noise", kind=PHOTOMETRIC, p=0.2, aliases=("gaussian_noise",), defaults={"std": 0.03},
             help="add Gaussian noise of standard deviation std (in [0, 1] units), then clamp")
def _noise(params, h, w):
    return GaussianNoise(_num("noise", "std", params["std"], 0.0, 1.0))


@register_op("erase", kind=PHOTOMETRIC, p=0.25, aliases=("cutout", "random_erasing", "erasing"),
             defaults={"scale": (0.02, 0.15), "ratio": (0.3, 3.3), "value": 0.0},
             help="fill a rectangle (scale x the area, aspect ratio in ratio) with value (in [0, 1])")
def _erase(params, h, w):
    scale = _range("erase", "scale", params["scale"], lo=1e-4, hi=1.0)
    ratio = _range("erase", "ratio", params["ratio"], lo=1e-2, hi=100.0)
    return K.RandomErasing(scale=scale, ratio=ratio, value=_num("erase", "value", params["value"], 0.0, 1.0), p=1.0)


@register_op("elastic", kind=GEOMETRIC, p=0.3, aliases=("elastic_transform",),
             defaults={"alpha": 0.03, "sigma": 0.15, "resample": "bilinear", "padding_mode": "zeros"},
             help="smooth random warp: alpha is the typical displacement as a fraction of the side, sigma the "
                  "smoothness (pixels, or a fraction of the side below 1)")
def _elastic(params, h, w):
    alpha = _num("elastic", "alpha", params["alpha"], 0.0, 1.0)
    s = _num("elastic", "sigma", params["sigma"], 1e-3)
    sig_y, sig_x = (s * h, s * w) if s < 1 else (s, s)
    ky, kx = (_odd_kernel(v, n, n, None, "elastic") for v, n in ((sig_y, h), (sig_x, w)))
    # kornia displaces by alpha x (uniform noise blurred with sigma) in normalised coordinates (2 units per
    # side). That blurred noise has a standard deviation of about 0.2 / sigma (measured, reflect padding),
    # so a displacement of alpha x the side needs kornia's alpha = 10 x alpha x sigma.
    ax, ay = 10.0 * alpha * sig_x, 10.0 * alpha * sig_y
    return K.RandomElasticTransform(kernel_size=(ky, kx), sigma=(sig_y, sig_x), alpha=(ax, ay),
                                    padding_mode=_choice("elastic", "padding_mode", params["padding_mode"], PADDING),
                                    p=1.0, **_geometry_flags("elastic", params))


# -- one configured op -----------------------------------------------------------------------
@dataclass
class OpParams:
    """What one op drew for a batch: ``apply`` (B,) bool picks the rows it transforms; ``params`` is
    kornia's parameter dict for those rows only (CPU tensors). ``shape`` is the (B, C, H, W) drawn for."""

    name: str
    shape: tuple[int, int, int, int]
    apply: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)


def _normalise(value: Any) -> Any:
    """YAML/TOML lists -> tuples, so configs from files compare equal to Python ones."""
    return tuple(_normalise(v) for v in value) if isinstance(value, (list, tuple)) else value


class AugmentOp:
    """One op with its probability ``p`` and strength parameters (unset ones take the op's defaults)."""

    def __init__(self, name: str, p: float | None = None, **params: Any) -> None:
        self.spec = get_op(name)
        self.name = self.spec.name
        self.p = self.spec.p if p is None else _num(self.name, "p", p, 0.0, 1.0)
        unknown = sorted(set(params) - set(self.spec.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.spec.defaults)) or "none besides p"
            raise ValueError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
        self.params = {k: _normalise(v) for k, v in {**self.spec.defaults, **params}.items()}
        self.spec.build(self.params, 64, 64)  # validate now, not at the first batch
        self._modules: dict[tuple[int, int], nn.Module] = {}

    @property
    def geometric(self) -> bool:
        return self.spec.kind == GEOMETRIC

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"AugmentOp({self.name!r}, p={self.p}{', ' + args if args else ''})"

    def module(self, h: int, w: int) -> nn.Module:
        """The kornia module for h x w images (built once per size; kept off any device)."""
        if (h, w) not in self._modules:
            self._modules[(h, w)] = self.spec.build(self.params, h, w)
        return self._modules[(h, w)]

    def _check_channels(self, c: int) -> None:
        if self.spec.colour and c not in (1, 3):
            raise ValueError(f"{self.name} works on grey (1-channel) or RGB (3-channel) images, got {c} channels")

    def sample(self, shape: tuple[int, ...]) -> OpParams:
        """Draw the gate and the parameters for a (B, C, H, W) batch, on the CPU default generator."""
        b, c, h, w = (int(s) for s in shape)
        if self.p >= 1.0:
            apply = torch.ones(b, dtype=torch.bool)
        elif self.p <= 0.0:
            apply = torch.zeros(b, dtype=torch.bool)
        else:
            apply = torch.rand(b) < self.p
        n = int(apply.sum())
        self._check_channels(c)
        params = dict(self.module(h, w).forward_parameters((n, c, h, w))) if n else {}
        return OpParams(self.name, (b, c, h, w), apply, params)

    def _check(self, x: torch.Tensor, drawn: OpParams, what: str) -> None:
        if drawn.name != self.name:
            raise ValueError(f"recorded parameters are for {drawn.name!r}, not {self.name!r}: replay them through "
                             f"the pipeline that drew them")
        b, _, h, w = drawn.shape
        if x.shape[0] != b or tuple(x.shape[-2:]) != (h, w):
            raise ValueError(f"{self.name}: parameters were drawn for {b} images of {h}x{w}, got {what} of shape "
                             f"{tuple(x.shape)}")
        if self.name == "noise" and drawn.params and x.shape[1] != drawn.shape[1]:
            raise ValueError(f"noise: parameters hold noise for {drawn.shape[1]} channels, got {x.shape[1]}")

    def _rows(self, x: torch.Tensor, drawn: OpParams, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply ``fn`` to the gated rows of ``x`` only; others are passed through."""
        n = int(drawn.apply.sum())
        if n == 0:
            return x
        if n == x.shape[0]:
            return fn(x)
        index = drawn.apply.nonzero().squeeze(1).to(x.device)
        out = x.clone()
        out[index] = fn(x[index])
        return out

    def apply(self, images: torch.Tensor, drawn: OpParams) -> torch.Tensor:
        """Float (B, C, H, W) images in [0, 1] -> the same, transformed as ``drawn`` says."""
        self._check(images, drawn, "images")
        b, c, h, w = images.shape
        module = self.module(h, w)
        self._check_channels(c)
        if self.name == "grayscale" and c == 1:
            return images  # already grey

        def run(x: torch.Tensor) -> torch.Tensor:
            return module(x, params=dict(drawn.params))

        return self._rows(images, drawn, run)

    def apply_masks(self, masks: torch.Tensor, drawn: OpParams) -> torch.Tensor:
        """Float (B, M, H, W) masks: geometric ops move them with nearest-neighbour sampling, others return them."""
        if not self.geometric:
            return masks
        self._check(masks, drawn, "masks")
        module = self.module(*masks.shape[-2:])

        # The image path with nearest-neighbour sampling (and no antialiasing): label values survive, and
        # it behaves the same on every kornia version (the mask helpers differ between 0.8 and 0.9).
        overrides: dict[str, Any] = {"resample": Resample.get("nearest")} if "resample" in module.flags else {}
        if "antialias" in module.flags:
            overrides["antialias"] = False
        if isinstance(module, K.RandomResizedCrop):
            overrides["align_corners"] = None  # nearest resizing takes none

        def run(m: torch.Tensor) -> torch.Tensor:
            return module(m, params=dict(drawn.params), **overrides)

        return self._rows(masks, drawn, run)
