"""The pipeline façade: load any saved model once, then call it with tensors in and tensors out.

``Pipeline.load(path)`` takes a training run directory, one of its checkpoints, or a saved model
directory, of any family, and gives the same small set of calls the CLI and the HTTP service use::

    pipe = Pipeline.load("runs/cgan")
    grid = pipe.sample(16, seed=0, label=3)            # (16, C, H, W) uint8
    frames = pipe.interpolate(seeds=(0, 1), steps=8)   # (8, C, H, W) uint8
    recon = pipe.reconstruct(images)                   # VAE: (N, C, H, W) uint8 reconstructions
    styled = pipe.stylize(photo)                       # fast-style model: (3, H, W) float in [0, 1]
    fake_b = pipe.translate(images, "a2b")             # CycleGAN: (N, C', H, W) uint8

Loading refuses a model whose weights hold NaN or +-inf (a :class:`NonFiniteWeightsError` naming the
tensors) unless ``allow_nonfinite=True``, which loads it with a warning: such a model gives black
images without a word otherwise. ``sample`` warns when samples hold NaN/inf pixels;
``sample_batches`` streams any number of samples up to :data:`MAX_SAMPLES` in bounded memory.

Each call says clearly when the model's family cannot do it. Images come back as uint8 (stylised
photos as floats in [0, 1], as :mod:`atelier.style` returns them); inputs may be uint8 or floats in
[-1, 1] (photos for ``stylize``: floats in [0, 1]).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import torch

from atelier.data.base import to_float, to_uint8
from atelier.models.pretrained import NonFiniteWeightsError, load_opened, open_pretrained
from atelier.models.sampling import MAX_SAMPLES, SampleSet, iter_samples, sample_images

__all__ = ["MAX_SAMPLES", "NonFiniteWeightsError", "Pipeline", "SampleSet", "load"]

#: What each operation needs of a model, to name the fault when it is missing.
_NEEDS = {"sample": "a generative model (e.g. a GAN or VAE)", "interpolate": "a generative model (e.g. a GAN or VAE)",
          "reconstruct": "a model with an encoder (e.g. a VAE)", "stylize": "a fast-style network",
          "translate": "an image-to-image model (e.g. a CycleGAN)", "edit": "a flow model (atelier train flow)",
          "inpaint": "a flow model (atelier train flow)"}


def _as_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images or floats in [-1, 1] -> float (N, C, H, W) in [-1, 1]."""
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    return to_float(images) if images.dtype == torch.uint8 else images.float()


@dataclass
class Pipeline:
    """A loaded model of any family (``family`` says which) and the operations it supports."""

    model: Any
    path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
             allow_nonfinite: bool = False, key: Any = None) -> "Pipeline":
        """Load a run directory, checkpoint directory, saved model directory or encrypted model (opened
        with ``key``, an :class:`atelier.protect.envelope.Key`, in memory only) onto ``device``.

        Weights holding NaN or +-inf raise :class:`NonFiniteWeightsError` (naming the tensors and
        counts); ``allow_nonfinite=True`` loads them anyway with a ``NonFiniteWeightsWarning``."""
        return cls.from_opened(open_pretrained(path, key), device=device, allow_nonfinite=allow_nonfinite)

    @classmethod
    def from_opened(cls, opened: tuple[Path, dict[str, Any], bytes | None], *, device: str | torch.device = "cpu",
                    allow_nonfinite: bool = False) -> "Pipeline":
        """The pipeline of what :func:`atelier.models.pretrained.open_pretrained` returned (an encrypted model
        already opened in memory is not decrypted again)."""
        model = load_opened(opened, map_location=device, allow_nonfinite=allow_nonfinite)
        return cls(model.eval(), opened[0], opened[1])

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def class_names(self) -> list[str] | None:
        """The class names of a conditional model (from its training data, else "0", "1", ...); None
        for an unconditional one."""
        k = getattr(getattr(self.model, "config", None), "num_classes", 0) if getattr(self.model, "conditional",
                                                                                      False) else 0
        if not k:
            return None
        names = (self.config.get("dataset") or {}).get("classes") if isinstance(self.config, dict) else None
        return [str(c) for c in names] if isinstance(names, list) and len(names) == k else [str(i) for i in range(k)]

    def class_index(self, value: int | str, what: str = "label") -> int:
        """A class of this conditional model given by name (``"airplane"``) or index (``3``, ``"3"``), as its
        index; ValueError naming ``what`` and the classes there are for anything else."""
        names = self.class_names
        if names is None:
            raise ValueError(f"{what} needs a class-conditional model; {self.path} holds an unconditional "
                             f"{self.family} model, which has no classes")
        if isinstance(value, str) and value in names:
            return names.index(value)
        text = str(value).strip()
        if not isinstance(value, bool) and text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
            return int(text)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise ValueError(f"{what} {value!r} is not a class of this model: use a name ({shown}) or an index "
                         f"0..{len(names) - 1}")

    @property
    def operations(self) -> list[str]:
        """The operations this model supports (its class's ``tasks``), e.g. for listings in the studio."""
        return list(getattr(self.model, "tasks", ()))

    def _require(self, operation: str) -> None:
        if operation not in self.operations:
            raise ValueError(f"{self.path} holds a {self.family} model; {operation} needs {_NEEDS[operation]}")

    # -- generation ---------------------------------------------------------------------------------
    def sample(self, n: int, *, seed: int = 0, label: int | None = None, truncation: float | None = None,
               batch_size: int = 500, with_labels: bool = False, **options) -> Any:
        """``n`` samples as (n, C, H, W) uint8, reproducible from ``seed``; ``label`` fixes the class of a
        conditional model (otherwise classes cycle 0..K-1). ``with_labels``: (images, labels or None).
        All ``n`` are held in memory (``n`` <= :data:`MAX_SAMPLES`); :meth:`sample_batches` streams them.
        Warns (``NonFiniteSamplesWarning``) when samples held NaN/inf pixels. ``options``: a flow model's
        ``steps``, ``sampler`` and ``guidance`` (see :attr:`nfe` for what a draw cost)."""
        self._require("sample")
        with torch.no_grad():
            drawn = sample_images(self.model, n, seed=seed, label=label, truncation=truncation, batch_size=batch_size,
                                  **options)
        return (drawn.images, drawn.labels) if with_labels else drawn.images

    def sample_batches(self, n: int, *, seed: int = 0, label: int | None = None, truncation: float | None = None,
                       batch_size: int = 500, **options) -> Iterator[SampleSet]:
        """The samples of :meth:`sample` (the same images for the same arguments), as :class:`SampleSet`
        batches of ``batch_size`` drawn one at a time: memory bounded by a batch whatever ``n``. Each
        batch counts its images that held NaN/inf pixels (``nonfinite``). Arguments are checked at
        once, before any batch is drawn."""
        self._require("sample")
        batches = iter_samples(self.model, n, seed=seed, label=label, truncation=truncation, batch_size=batch_size,
                               **options)

        def drawn() -> Iterator[SampleSet]:
            while True:
                with torch.no_grad():  # entered per batch: a no_grad around a yield would leak to the caller
                    batch = next(batches, None)
                if batch is None:
                    return
                yield batch

        return drawn()

    def interpolate(self, *, seeds: tuple[int, int] | None = None, classes: tuple[int, int] | None = None,
                    steps: int = 10, seed: int = 0, label: int | None = None, method: str = "slerp",
                    truncation: float | None = None) -> torch.Tensor:
        """Frames (steps, C, H, W) uint8 from the latent of ``seeds[0]`` to that of ``seeds[1]`` (with
        ``label`` for a conditional model), or, with ``classes``, one latent (that of ``seed``) morphing
        from one class to the other."""
        from atelier.creative.interpolate import interpolate_classes, interpolate_seeds

        self._require("interpolate")
        if (seeds is None) == (classes is None):
            raise ValueError("give either seeds=(a, b) or classes=(a, b)")
        with torch.no_grad():
            if seeds is not None:
                frames = interpolate_seeds(self.model, seeds[0], seeds[1], steps, label=label, method=method,
                                           truncation=truncation)
            else:
                frames = interpolate_classes(self.model, classes[0], classes[1], steps, seed=seed,
                                             truncation=truncation)
        return frames if frames.dtype == torch.uint8 else to_uint8(frames)

    @property
    def nfe(self) -> int | None:
        """Network evaluations per image of the latest sampling, editing or inpainting call of a flow
        model (None for a model that samples in one pass)."""
        return getattr(self.model, "last_nfe", None)

    # -- images in ---------------------------------------------------------------------------------
    def edit(self, images: torch.Tensor, *, strength: float = 0.6, labels: Any = None, seed: int = 0,
             **options) -> torch.Tensor:
        """A flow model's edit of uint8 or [-1, 1] images (a sketch, a photo): noised to time ``strength``
        (0 keeps them, 1 ignores them), then solved back; uint8 out. ``labels``: a class (name or index)
        or one per image, for a conditional model. ``options``: steps, sampler, guidance."""
        self._require("edit")
        images = _as_model_input(images)
        with torch.no_grad():
            out = self.model.edit(images, strength, self._image_labels(labels, len(images)),
                                  generator=torch.Generator().manual_seed(seed), **options)
        return to_uint8(out)

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, *, labels: Any = None, seed: int = 0,
                **options) -> torch.Tensor:
        """A flow model's fill of the region where ``mask`` ((N or 1, 1, H, W), 1 = fill) is set; the other
        pixels are returned as given. uint8 out."""
        self._require("inpaint")
        images = _as_model_input(images)
        with torch.no_grad():
            out = self.model.inpaint(images, mask, self._image_labels(labels, len(images)),
                                     generator=torch.Generator().manual_seed(seed), **options)
        return to_uint8(out)

    def _image_labels(self, labels: Any, n: int) -> torch.Tensor | None:
        """None, one class (name or index) for all ``n`` images, or one per image, as indices."""
        if labels is None:
            return None
        if isinstance(labels, (str, int)) and not isinstance(labels, bool):
            return torch.full((n,), self.class_index(labels), dtype=torch.long)
        return torch.tensor([self.class_index(v) for v in labels], dtype=torch.long)

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """VAE reconstructions (posterior means decoded) of uint8 or [-1, 1] images, as uint8."""
        self._require("reconstruct")
        with torch.no_grad():
            return to_uint8(self.model.reconstruct(_as_model_input(images), labels))

    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior (mean, logvar) of uint8 or [-1, 1] images."""
        self._require("reconstruct")
        return self.model.encode_images(_as_model_input(images), labels)

    def translate(self, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """CycleGAN translation of uint8 or [-1, 1] images, ``a2b`` or ``b2a``, as uint8."""
        self._require("translate")
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
        return to_uint8(self.model.translate(_as_model_input(images), direction))

    def stylize(self, images: torch.Tensor, *, strength: float = 1.0, precision: str = "fp32") -> torch.Tensor:
        """Fast-style stylisation of (3, H, W) or (B, 3, H, W) photos in [0, 1]; same shape, in [0, 1]."""
        from atelier.style.fast import stylize_with_model

        self._require("stylize")
        return stylize_with_model(self.model, images, strength, precision=precision)


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", allow_nonfinite: bool = False,
         key: Any = None) -> Pipeline:
    """``Pipeline.load``: any saved model, ready for ``sample`` / ``interpolate`` / ``reconstruct`` /
    ``stylize`` / ``translate``."""
    return Pipeline.load(path, device=device, allow_nonfinite=allow_nonfinite, key=key)
