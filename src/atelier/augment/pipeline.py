"""Augmentation pipelines: a sequence of named ops, declared in Python, a dict, or a YAML/TOML/JSON file.

    >>> pipe = Pipeline.from_file("aug.yaml")          # or Pipeline([{"name": "rotate", "degrees": 20}, "blur"])
    >>> out = pipe(images, seed=0)                    # uint8 or float [0, 1] (B, C, H, W), any device
    >>> out, masks_out = pipe(images, masks=masks)    # masks follow the geometric ops only
    >>> again = pipe.replay(other, pipe.params)       # the same draws, applied to other images

A config file lists the ops in order; each entry is a name, its probability ``p`` (the op's default
when left out) and strength parameters (``atelier augment --list-ops`` shows them all):

    ops:                              # YAML          [[ops]]                # TOML
      - {name: affine, degrees: 10}                    name = "affine"
      - name: noise                                    degrees = 10
        p: 0.3
        std: 0.05

Every call draws its parameters first (on the CPU generator; with ``seed`` from a forked generator,
so the global random state is left untouched and the result does not depend on it), records them in
``.params`` and applies them; ``replay`` applies recorded parameters again. Rows that no op touched
come back bit-for-bit identical to the input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atelier.augment.ops import AugmentOp, OpParams, _normalise
from atelier.config import Config, Probability, check_config_data, read_config_text

ImagesOrPair = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# -- configuration -----------------------------------------------------------------------------
@dataclass
class OpConfig(Config):
    """One op of a pipeline: its registered ``name``, probability ``p`` (None: the op's default) and
    strength ``params`` (unset ones take the op's defaults)."""

    name: str
    p: Probability | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.params = {str(k): _normalise(v) for k, v in dict(self.params).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> "OpConfig":
        """``"blur"`` or ``{"name": "blur", "p": 0.3, "sigma": [0.1, 2]}`` (a nested ``params`` mapping also works)."""
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"an augmentation op is a name or a mapping with a 'name', got {data!r}")
        rest = dict(data)
        name = rest.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"augmentation op {dict(data)!r} has no 'name' (e.g. name: rotate)")
        p = rest.pop("p", None)
        params = dict(rest.pop("params", None) or {})
        params.update(rest)
        return cls(name, p, params)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.p is not None:
            out["p"] = self.p
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items() if v is not None})
        return out

    def build(self) -> AugmentOp:
        return AugmentOp(self.name, self.p, **self.params)


@dataclass
class AugmentConfig(Config):
    """The ops of a pipeline, in order."""

    ops: list[OpConfig] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Iterable[Any]) -> "AugmentConfig":
        """``{"ops": [...]}`` or a bare list of ops."""
        if isinstance(data, Mapping):
            unknown = sorted(map(repr, set(data) - {"ops"}))
            if unknown:
                raise ValueError(f"unknown augmentation config key(s) {', '.join(unknown)}; the config holds 'ops', "
                                 f"a list of ops (each a name or a mapping with name, p and parameters)")
            data = data.get("ops") or []
        if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise ValueError(f"'ops' must be a list of ops, got {data!r}")
        return cls([d if isinstance(d, OpConfig) else OpConfig.from_dict(d) for d in data])

    @classmethod
    def from_file(cls, path: str | Path) -> "AugmentConfig":
        """Read a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file (see the module docstring). FileNotFoundError
        when it is missing; ValueError naming it for anything wrong, including more than 1 MiB, more than
        10,000 values counting repeated YAML aliases, or nesting past 64 levels (docs/errors.md)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: augmentation config not found")
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".toml", ".json"):
            raise ValueError(f"{path}: augmentation configs are .yaml, .yml, .toml or .json files")
        text = read_config_text(path, "augmentation config")
        try:
            if suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                # libyaml's parser when it is there: linear in the text and refusing nesting past 1000
                # levels; the pure-Python one slows down sharply on deeply nested flow collections
                data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except Exception as exc:  # noqa: BLE001 - TOML/JSON/YAML parse errors: report the parser's words
            raise ValueError(f"{path}: not a valid {suffix[1:].upper()} file ({exc})") from exc
        if data is None:
            raise ValueError(f"{path}: the file is empty; list the ops under 'ops'")
        check_config_data(data, str(path))  # YAML aliases can expand exponentially, or refer to themselves
        try:
            config = cls.from_dict(data)
            Pipeline.from_config(config)  # check every op and parameter now, naming the file
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return config

    def to_dict(self) -> dict[str, Any]:
        return {"ops": [op.to_dict() for op in self.ops]}


# -- tensors in and out ------------------------------------------------------------------------
def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a (low, high) pair, got {value_range!r}") from None
    if not hi > lo:
        raise ValueError(f"value_range must have high > low, got {value_range!r}")
    return lo, hi


def _to_unit(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """uint8 [0, 255] or float ``value_range`` -> float [0, 1] (float32, or float64 for float64 input)."""
    if images.dtype == torch.uint8:
        return images.float().div(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
    lo, hi = value_range
    x = images if images.dtype == torch.float64 else images.float()
    return x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo)


def _from_unit(x: torch.Tensor, like: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    if like.dtype == torch.uint8:
        return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    lo, hi = value_range
    return (x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo).to(like.dtype)


def _masks_in(masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, M, H, W) masks of any dtype -> float (B, M, H, W) on the images' device."""
    m = masks.unsqueeze(1) if masks.dim() == 3 else masks
    if m.dim() != 4 or m.shape[0] != images.shape[0] or m.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks must be (B, H, W) or (B, M, H, W) matching images {tuple(images.shape)}, "
                         f"got {tuple(masks.shape)}")
    return m.to(images.device, torch.float64 if m.dtype == torch.float64 else torch.float32)


def _masks_out(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    m = m.squeeze(1) if like.dim() == 3 else m
    if like.dtype == torch.bool:
        return m > 0.5
    if not like.is_floating_point():
        return m.round().to(like.dtype)
    return m.to(like.dtype)


# -- the pipeline ------------------------------------------------------------------------------
OpLike = AugmentOp | OpConfig | Mapping[str, Any] | str


class Pipeline(nn.Module):
    """Ops applied in order to (B, C, H, W) batches -- uint8 [0, 255] or float (``value_range``, default
    [0, 1]) -- on any device. The output has the input's shape, dtype, device and range."""

    def __init__(self, ops: Iterable[OpLike] | AugmentConfig = ()) -> None:
        super().__init__()
        items = ops.ops if isinstance(ops, AugmentConfig) else list(ops)
        self.ops: list[AugmentOp] = []
        for item in items:
            if isinstance(item, AugmentOp):
                self.ops.append(item)
            elif isinstance(item, OpConfig):
                self.ops.append(item.build())
            else:
                self.ops.append(OpConfig.from_dict(item).build())
        self._params: list[OpParams] | None = None

    @classmethod
    def from_config(cls, config: AugmentConfig | Mapping[str, Any] | Iterable[Any]) -> "Pipeline":
        return cls(config if isinstance(config, AugmentConfig) else AugmentConfig.from_dict(config))

    @classmethod
    def from_file(cls, path: str | Path) -> "Pipeline":
        return cls(AugmentConfig.from_file(path))

    @property
    def config(self) -> AugmentConfig:
        """The resolved config: every op with its probability and all its parameters."""
        return AugmentConfig([OpConfig(op.name, op.p, dict(op.params)) for op in self.ops])

    @property
    def params(self) -> list[OpParams] | None:
        """The parameters drawn by the last call (one :class:`OpParams` per op), for :meth:`replay`."""
        return self._params

    def __len__(self) -> int:
        return len(self.ops)

    def extra_repr(self) -> str:
        return "\n".join(repr(op) for op in self.ops)

    def sample_params(self, shape: tuple[int, ...] | torch.Size, *, seed: int | None = None) -> list[OpParams]:
        """Draw every op's parameters for a (B, C, H, W) batch. With ``seed`` they depend on it alone
        (a forked CPU generator; the global random state is left as it was)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4:
            raise ValueError(f"expected a (B, C, H, W) shape, got {shape}")
        if seed is None:
            return [op.sample(shape) for op in self.ops]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return [op.sample(shape) for op in self.ops]

    def forward(self, images: torch.Tensor, *, masks: torch.Tensor | None = None, seed: int | None = None,
                value_range: tuple[float, float] = (0.0, 1.0)) -> ImagesOrPair:
        """Augment ``images`` ((B, C, H, W), or one (C, H, W) image); returns them, or ``(images, masks)``
        when ``masks`` ((B, H, W) or (B, M, H, W), any dtype) are given."""
        shape = images.shape if images.dim() == 4 else (1, *images.shape)
        self._params = self.sample_params(shape, seed=seed)
        return self.replay(images, self._params, masks=masks, value_range=value_range)

    def replay(self, images: torch.Tensor | None, params: list[OpParams], *, masks: torch.Tensor | None = None,
               value_range: tuple[float, float] = (0.0, 1.0)) -> ImagesOrPair:
        """Apply recorded ``params`` (from :attr:`params` or :meth:`sample_params`) to ``images`` and/or
        ``masks``. With ``images=None`` only the masks are transformed and returned."""
        if len(params) != len(self.ops) or any(p.name != op.name for p, op in zip(params, self.ops)):
            raise ValueError(f"the parameters were drawn for ops {[p.name for p in params]}, but this pipeline has "
                             f"{[op.name for op in self.ops]}")
        if images is None:
            if masks is None:
                raise ValueError("replay needs images, masks or both")
            b, _, h, w = params[0].shape if params else (masks.shape[0], 0, *masks.shape[-2:])
            m = _masks_in(masks, torch.empty(b, 1, h, w, device=masks.device))
            for op, drawn in zip(self.ops, params):
                m = op.apply_masks(m, drawn)
            return _masks_out(m, masks)
        if images.dim() == 3:
            out = self.replay(images[None], params, masks=None if masks is None else masks[None], value_range=value_range)
            return (out[0][0], out[1][0]) if isinstance(out, tuple) else out[0]
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got shape {tuple(images.shape)}")
        value_range = _check_range(value_range)
        x = _to_unit(images, value_range)
        m = _masks_in(masks, images) if masks is not None else None
        touched = torch.zeros(images.shape[0], dtype=torch.bool)
        for op, drawn in zip(self.ops, params):
            x = op.apply(x, drawn)
            if m is not None:
                m = op.apply_masks(m, drawn)
            touched |= drawn.apply
        if not touched.any():
            out = images
        elif touched.all():
            out = _from_unit(x, images, value_range)
        else:  # untouched rows stay bit-for-bit what they were (no range round trip)
            keep = touched.to(images.device).view(-1, 1, 1, 1)
            out = torch.where(keep, _from_unit(x, images, value_range), images)
        return out if m is None else (out, _masks_out(m, masks))


def default_pipeline(channels: int = 3, resolution: int = 64) -> Pipeline:
    """A label-safe default for (channels x resolution x resolution) images: mild affine (rotation up
    to 10 degrees, 8% shift, 0.9-1.1 zoom, 5 degrees shear), a mild resized crop, colour jitter
    (brightness and contrast only on grey data), light blur, light noise and a small cutout.

    There are no flips: a mirrored digit, letter or face-left/face-right class changes meaning. Add
    ``hflip`` yourself where mirror images keep their label (most photos)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    sigma_high = round(max(0.6, 0.6 * resolution / 64), 2)  # 0.6 px at 28-64 px, 2.4 px at 256 px
    colour = channels == 3
    return Pipeline([
        AugmentOp("affine", p=0.5, degrees=10.0, translate=0.08, scale=(0.9, 1.1), shear=5.0),
        AugmentOp("resized_crop", p=0.3, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
        AugmentOp("color_jitter", p=0.5, brightness=0.2, contrast=0.2, saturation=0.2 if colour else 0.0,
                  hue=0.02 if colour else 0.0),
        AugmentOp("blur", p=0.2, sigma=(0.1, sigma_high)),
        AugmentOp("noise", p=0.2, std=0.03),
        AugmentOp("erase", p=0.25, scale=(0.02, 0.1)),
    ])
