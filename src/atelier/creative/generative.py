"""Generative augmentation: labelled samples from a trained class-conditional GAN or VAE.

    >>> gen = generate_labelled("runs/cgan", per_class=100, min_confidence=0.9, seed=0)
    >>> gen.images, gen.labels                  # uint8 (N, C, H, W), int64 (N,), class by class
    >>> gen.save("data/extra")                  # data/extra/<class>/gen_00000.png ... (a labelled folder)
    >>> gen.dataset()                           # an ImageDataset, to concatenate with the real one

With ``min_confidence`` every sample is shown to a classifier and kept only when it predicts the class
the sample was drawn for with at least that softmax probability. The classifier is, by default, the
domain classifier of the run's dataset (``digits-cnn`` / ``mnist-cnn`` / ``cifar10-cnn``, or for a
``folder:PATH`` run the extractor fitted on that folder with ``atelier metrics fit-classifier``; see
:mod:`atelier.metrics.extractors`); or an extractor name, a classifier ``.safetensors`` file saved by
:func:`atelier.metrics.classifier.save_classifier` (any architecture it saves: the digit CNN, the
colour ResNet), or any callable from uint8 images to (N, K) logits. Classes are oversampled until ``per_class`` samples are kept, up to ``max_oversample`` x
``per_class`` draws per class; past that the call fails (writing nothing) and names each class that
fell short with its acceptance rate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from atelier.data.base import ImageDataset, to_uint8

Classifier = Callable[[torch.Tensor], Any]


@dataclass
class GeneratedSet:
    images: torch.Tensor  # uint8 (N, C, H, W), per_class images of class 0, then class 1, ...
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]  # class names (folder names when saved)
    confidence: torch.Tensor | None = None  # (N,) classifier probability of the intended class
    drawn: list[int] = field(default_factory=list)  # samples drawn per class before filtering
    info: dict[str, Any] = field(default_factory=dict)  # how they were made (run, seed, classifier, ...)

    def dataset(self) -> ImageDataset:
        return ImageDataset(self.images, self.labels, list(self.classes), name=f"generated:{self.info.get('run', '?')}",
                            meta=dict(self.info))

    def save(self, out_dir: str | os.PathLike, *, prefix: str = "gen", manifest: bool = True) -> list[Path]:
        """Write ``out_dir/<class>/<prefix>_00000.png``, ... (atomically) and ``out_dir/generated.json``."""
        from atelier.data.images import save_image
        from atelier.io import atomic_write_json

        out = Path(out_dir).expanduser()
        written = []
        counters: dict[int, int] = {}
        for image, label in zip(self.images, self.labels.tolist()):
            i = counters[label] = counters.get(label, -1) + 1
            written.append(save_image(image, out / folder_name(self.classes, label) / f"{prefix}_{i:05d}.png"))
        if manifest:
            atomic_write_json(out / "generated.json", {**self.info, "written": len(written)})
        return written


def folder_name(classes: list[str], label: int) -> str:
    """A class's folder name: its name with path separators replaced, or its index when it has none."""
    name = str(classes[label]).replace("/", "_").replace("\\", "_").strip() if label < len(classes) else ""
    return name if name not in ("", ".", "..") else str(label)


def planned_paths(classes: list[str], per_class: int, out_dir: Path, prefix: str = "gen") -> list[Path]:
    """The files :meth:`GeneratedSet.save` writes for ``per_class`` images of every class."""
    return [out_dir / folder_name(classes, c) / f"{prefix}_{i:05d}.png" for c in range(len(classes))
            for i in range(per_class)]


@dataclass
class ConditionalRun:
    """A loaded class-conditional model and what its run says about its data."""

    model: Any
    classes: list[str]  # class names in label order (the training data's, else "0", "1", ...)
    dataset: str | None  # the run's data spec (e.g. "cifar10", "folder:PATH"), when it was saved
    data_dir: str | None = None  # the run's --data-dir
    resolution: int | None = None  # the model's image side


def load_conditional(run: str | os.PathLike | torch.nn.Module, *, device: str = "cpu") -> tuple[Any, list[str], str | None]:
    """(model, class names, dataset name) of a conditional GAN/VAE run; a clear error for anything else."""
    loaded = load_conditional_run(run, device=device)
    return loaded.model, loaded.classes, loaded.dataset


def load_conditional_run(run: str | os.PathLike | torch.nn.Module, *, device: str = "cpu") -> ConditionalRun:
    """The conditional GAN/VAE in ``run`` with its class names and data; a clear error for anything else."""
    from atelier.models import load_pretrained
    from atelier.models.pretrained import resolve_pretrained

    if isinstance(run, torch.nn.Module):
        model, config = run, {}
    else:
        _, config = resolve_pretrained(run)
        model = load_pretrained(run, map_location=device)
    if not hasattr(model, "conditional") or not hasattr(model, "sample"):
        raise ValueError(f"{run}: holds a {getattr(model, 'family', type(model).__name__)!r} model; generative "
                         f"augmentation needs a class-conditional GAN or VAE")
    if not model.conditional:
        raise ValueError(f"{run}: this {model.family.upper()} is unconditional, so its samples have no labels; "
                         f"generative augmentation needs a class-conditional model (train it with --conditional)")
    k = model.config.num_classes
    names = (config.get("dataset") or {}).get("classes")
    classes = [str(c) for c in names] if isinstance(names, list) and len(names) == k else [str(i) for i in range(k)]
    data = config.get("data") or {}
    return ConditionalRun(model, classes, data.get("name"), data.get("data_dir"),
                          getattr(model.config, "resolution", None))


def _load_classifier_file(path: Path, device: str) -> Classifier:
    """A classifier saved by :func:`atelier.metrics.classifier.save_classifier`: its architecture (digit CNN,
    colour ResNet) rebuilt from the JSON beside it, the weights checked against the hash saved there."""
    from atelier.data import DataError
    from atelier.io import load_json, load_tensors
    from atelier.metrics.classifier import FittedClassifier, build_classifier, weights_sha256
    from atelier.metrics.extractors import ClassifierExtractor

    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: classifier weights need {meta_path.name} beside them (arch, num_classes, "
                                f"channels), as written by atelier.metrics.classifier.save_classifier")
    meta = load_json(meta_path)
    if not isinstance(meta, dict) or not {"num_classes", "channels"} <= meta.keys():
        raise DataError(f"{meta_path}: not a classifier description (it needs num_classes and channels, as "
                        f"atelier.metrics.classifier.save_classifier writes them)")
    try:
        model = build_classifier(meta)
        model.load_state_dict(load_tensors(path, what="classifier weights"))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: these weights do not fit the {meta.get('arch', 'digit-cnn')} classifier that "
                        f"{meta_path.name} describes: {exc}") from None
    digest = weights_sha256(model)
    if meta.get("sha256", digest) != digest:
        raise DataError(f"{path}: the weights have changed since they were saved (sha256 {digest[:12]}, "
                        f"{meta_path.name} says {str(meta['sha256'])[:12]})")
    info = {k: v for k, v in meta.items() if k not in ("test_accuracy", "sha256")}
    fitted = FittedClassifier(model.eval(), meta.get("test_accuracy", float("nan")), digest, info)
    return ClassifierExtractor(path.stem, fitted, device)


def resolve_classifier(classifier: str | os.PathLike | Classifier | None, dataset: str | None, *,
                       data_dir: str | None = None, resolution: int | None = None,
                       device: str = "cpu") -> tuple[Classifier, str]:
    """(callable from uint8 images to logits or ExtractedFeatures, a description for the record).

    ``classifier`` None: the domain classifier of ``dataset`` (fitted and cached on first use, from
    ``data_dir``), or for an image folder the extractor fitted on it (at the size closest to ``resolution``)."""
    from atelier.metrics.extractors import DEFAULT_EXTRACTORS, dataset_family, list_extractors, load_extractor
    from atelier.metrics.folder_classifier import find_folder_extractor, folder_of_spec

    if callable(classifier) and not isinstance(classifier, (str, os.PathLike)):
        return classifier, getattr(classifier, "name", type(classifier).__name__)
    if classifier is None:
        family = dataset_family(dataset) if dataset else None
        folder = folder_of_spec(dataset, data_dir) if dataset and family not in DEFAULT_EXTRACTORS else None
        fitted = find_folder_extractor(folder, resolution) if folder is not None else None
        if family in DEFAULT_EXTRACTORS:
            classifier = DEFAULT_EXTRACTORS[family]
        elif fitted is not None:
            classifier = fitted
        else:
            fit = (f"; or fit one on the run's labelled folder once with `atelier metrics fit-classifier --data "
                   f"folder:{folder}`" if folder is not None else "")
            raise ValueError(f"no domain classifier for the run's dataset {dataset!r} (there are ones for "
                             f"{', '.join(sorted(DEFAULT_EXTRACTORS))}){fit}; or pass a classifier: an extractor "
                             f"name, a classifier .safetensors file, or a callable")
    text = os.fspath(classifier)
    if text == "inception-v3":
        raise ValueError("inception-v3 predicts ImageNet classes, not the run's classes; use a domain classifier "
                         "(digits-cnn, mnist-cnn, cifar10-cnn, a folder's fitted folder-cnn:...) or a classifier file")
    if text in list_extractors():
        return load_extractor(text, device=device, data_dir=data_dir), text
    path = Path(text).expanduser()
    if path.is_file():
        return _load_classifier_file(path, device), str(path)
    raise ValueError(f"classifier {text!r} is neither an extractor ({', '.join(list_extractors())}) nor a file")


def _logits(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    out = classifier(images)
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"the classifier must return (N, K) logits for N images, got {type(out).__name__}")
    return logits.float().cpu()


#: The most samples kept per class (all classes' samples are held in memory before anything is written).
MAX_PER_CLASS = 10_000


def generate_labelled(
    run: str | os.PathLike | torch.nn.Module, per_class: int, *, out_dir: str | os.PathLike | None = None,
    min_confidence: float | None = None, classifier: str | os.PathLike | Classifier | None = None, seed: int = 0,
    max_oversample: int = 20, truncation: float | None = None, batch_size: int = 256, device: str = "cpu",
) -> GeneratedSet:
    """``per_class`` samples of every class of the conditional model in ``run`` (a run, checkpoint or
    model directory, or a loaded model), optionally filtered by ``classifier`` confidence (see the module
    docstring), written to ``out_dir`` as a labelled folder when given. Reproducible from ``seed``."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= MAX_PER_CLASS:
        raise ValueError(f"per_class must be an integer from 1 to {MAX_PER_CLASS:,} (all samples are held in "
                         f"memory until every class has its share), got {per_class!r}")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
    if max_oversample < 1:
        raise ValueError(f"max_oversample must be at least 1, got {max_oversample}")
    loaded = load_conditional_run(run, device=device)
    model, classes = loaded.model, loaded.classes
    judge, judge_name = (None, None) if min_confidence is None else resolve_classifier(
        classifier, loaded.dataset, data_dir=loaded.data_dir, resolution=loaded.resolution, device=device)
    k = model.config.num_classes
    generator = torch.Generator().manual_seed(seed)
    images, confidences, drawn, accepted = [], [], [], []
    for c in range(k):
        kept: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        have, count, cap = 0, 0, per_class * max_oversample
        while have < per_class and count < cap:
            rate = have / count if count else 1.0
            want = math.ceil((per_class - have) / max(rate, 0.05) * (1.2 if judge else 1.0))
            n = max(1, min(want, batch_size, cap - count))
            batch = to_uint8(model.sample(n, labels=c, generator=generator, truncation=truncation))
            count += n
            if judge is not None:
                probs = _logits(judge, batch).softmax(1)
                if probs.shape[1] != k:
                    raise ValueError(f"the classifier {judge_name} predicts {probs.shape[1]} classes; the model has {k}")
                conf = probs[:, c]
                keep = (probs.argmax(1) == c) & (conf >= min_confidence)
                batch, conf = batch[keep], conf[keep]
                scores.append(conf)
            kept.append(batch)
            have += batch.shape[0]
        drawn.append(count)
        accepted.append(have)
        images.append(torch.cat(kept)[:per_class])
        if judge is not None:
            confidences.append(torch.cat(scores)[:per_class])
    short = [(classes[c], images[c].shape[0], drawn[c]) for c in range(k) if images[c].shape[0] < per_class]
    if short:
        detail = ", ".join(f"{name}: {n} of {per_class} kept from {d} draws ({n / d:.1%})" for name, n, d in short)
        raise ValueError(f"the classifier ({judge_name}) kept too few samples at min_confidence={min_confidence}: "
                         f"{detail}. Lower min_confidence, raise max_oversample (now {max_oversample}), or train the "
                         f"model longer. Nothing was written.")
    info = {"run": str(run) if not isinstance(run, torch.nn.Module) else type(run).__name__, "per_class": per_class,
            "seed": seed, "min_confidence": min_confidence, "classifier": judge_name, "truncation": truncation,
            "classes": classes, "drawn_per_class": drawn,
            "acceptance_per_class": [round(a / d, 4) for a, d in zip(accepted, drawn)]}
    result = GeneratedSet(torch.cat(images), torch.arange(k).repeat_interleave(per_class), classes,
                          torch.cat(confidences) if judge is not None else None, drawn, info)
    if out_dir is not None:
        result.save(out_dir)
    return result
