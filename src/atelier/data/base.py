"""The in-memory image dataset every loader returns, and the errors bad data raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Option:
    """A setting an error message names, e.g. the ``verify=False`` in "pass verify=False to ...".

    Attributes:
        key: which setting (and choice) it is, e.g. ``"no_verify_weights"``, so that a front end with
            its own spelling (the CLI's flags) can put that in instead; see :meth:`Message.render`.
        text: how the Python API spells it in this message, e.g. ``"verify=False"``.
    """

    key: str
    text: str


class Message:
    """Text in parts, some of them :class:`Option` s; ``str()`` spells every option as the Python API does.

    Concatenating with ``+`` (with a str or another Message) keeps the parts, so advice assembled from
    pieces can still be re-spelled. f-strings and ``str()`` give plain text.
    """

    __slots__ = ("parts",)

    def __init__(self, *parts: str | Option | Message) -> None:
        flat: list[str | Option] = []
        for part in parts:
            for p in part.parts if isinstance(part, Message) else (part,):
                if isinstance(p, str) and flat and isinstance(flat[-1], str):
                    flat[-1] += p
                elif p != "":
                    flat.append(p)
        self.parts: tuple[str | Option, ...] = tuple(flat)

    @property
    def options(self) -> tuple[Option, ...]:
        """The options named, in order."""
        return tuple(p for p in self.parts if isinstance(p, Option))

    def render(self, spell: Callable[[Option], str | None] | None = None) -> str:
        """The text, each option spelled by ``spell`` (None from it, or no ``spell``: the Python spelling)."""
        return "".join(p if isinstance(p, str) else ((spell(p) if spell else None) or p.text) for p in self.parts)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"Message{self.parts!r}"

    def __add__(self, other: object) -> Message:
        return Message(self, other) if isinstance(other, (str, Option, Message)) else NotImplemented

    def __radd__(self, other: object) -> Message:
        return Message(other, self) if isinstance(other, (str, Option)) else NotImplemented

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __iter__(self) -> Iterator[str | Option]:
        return iter(self.parts)


class ConversionNote(UserWarning):
    """The user's images were changed before use (resized, cropped, converted between grey and RGB) in a
    way that affects the result; the message says what and why. Front ends show it to the user (the
    CLI as a ``note:`` line), so a result is never silently computed on something else."""


class DataError(ValueError):
    """Bad or missing data. The message names the file or setting at fault and what to do.

    The message may be a :class:`Message`: ``str(exc)`` then spells the settings it names as the
    Python API does (``verify=False``), and ``exc.message.render(spell)`` lets a front end spell them
    its own way (the CLI: ``--no-verify-weights``). ``exc.options`` lists them.
    """

    def __init__(self, message: str | Message = "", *args: object) -> None:
        self.message = message if isinstance(message, Message) else Message(str(message))
        super().__init__(str(message), *args)

    @property
    def options(self) -> tuple[Option, ...]:
        """The settings the message names (what would help, or what caused it)."""
        return self.message.options


@dataclass
class ImageDataset:
    """Images held in memory as one uint8 tensor, so an epoch never decodes a file again.

    Attributes:
        images: uint8 tensor of shape (N, C, H, W), C in {1, 3}, values 0..255.
        labels: int64 tensor of shape (N,) or None when the data has no classes.
        classes: class names (index -> name) or None.
        name: a short description of where the data came from, e.g. ``"mnist:train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    name: str = "dataset"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must be a uint8 tensor (N, C, H, W), "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise DataError(f"{self.name}: images must have 1 or 3 channels, got {self.images.shape[1]}")
        if self.labels is not None:
            if self.labels.shape != (self.images.shape[0],):
                raise DataError(
                    f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images"
                )
            self.labels = self.labels.long()
            if self.classes is None:
                self.classes = [str(i) for i in range(int(self.labels.max()) + 1)] if len(self.labels) else []

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.labels is not None and self.classes else 0

    def subset(self, index: torch.Tensor | slice) -> "ImageDataset":
        labels = self.labels[index] if self.labels is not None else None
        return ImageDataset(self.images[index], labels, self.classes, self.name, dict(self.meta))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range generators produce (tanh)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding and clamping."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class Batch:
    """What the trainer feeds a step: (B, C, H, W) float images on the training device (in [-1, 1]
    unless a family says otherwise), and (B,) int64 labels or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
