"""Domain extractors for labelled image folders, fitted once and cached by the folder's content.

    >>> fit = fit_folder_classifier("photos/")     # photos/CLASS/*.jpg, or photos/{train,test}/CLASS/*.jpg
    >>> fit.name, fit.cached, fit.fitted.test_accuracy
    ('folder-cnn:3f2a9c01d4e7', False, 0.87)
    >>> find_folder_extractor("photos/")           # what evaluation against folder:photos/ uses by default
    'folder-cnn:3f2a9c01d4e7'

Offline, with no InceptionV3 weights, a folder whose images sit in class sub-folders can still be
evaluated: a :class:`~atelier.metrics.colour_classifier.ResNetClassifier` is trained to tell its classes
apart and its pooled features replace Inception's. Its numbers compare models evaluated against the
same folder with the same extractor, not with papers.

The cache key is a SHA-256 of the folder's content, the relative path, size and bytes of every image
file the loader reads (as :func:`atelier.data.images.scan_images` lists them, hidden files left out),
together with the resolution the network is trained at; the extractor's name carries its first 12 hex
digits. Any added, removed, renamed or edited image gives another key, so a stale extractor is never
used for changed data; hashing reads the files but decodes none (about a second for CIFAR-10's 60,000
JPEGs). The held-out split is the folder's test/ sub-folder when it has train/ and test/ ones, else
10% of each class chosen with a fixed seed.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.data import DataError, ImageDataset, cache_dir
from atelier.metrics.classifier import (FittedClassifier, classifier_path, fit_classifier, load_classifier,
                                        save_classifier)
from atelier.metrics.colour_classifier import ARCH

PREFIX = "folder-cnn:"
DEFAULT_RESOLUTION = 32
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0  # the held-out images do not change with the training seed
MIN_STEPS = 500  # small folders are trained for more epochs, so every fit takes at least this many steps


@dataclass
class FolderContent:
    root: Path
    files: list[Path]  # every image file the loader reads, sorted
    classes: list[str] | None  # first-level class folders (below train/ and test/ if present); None: unlabelled
    has_splits: bool  # train/ and test/ sub-folders
    sha256: str = ""  # of the relative paths, sizes and bytes (filled by content_sha256)


def folder_of_spec(spec: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder a dataset spec names ("folder:PATH", "folder" with ``data_dir``, or an existing folder's
    path), as :func:`atelier.data.load_dataset` reads it; None for a named dataset."""
    text = os.fspath(spec).strip()
    key = text.lower()
    if key == "folder":
        return Path(data_dir).expanduser() if data_dir else None
    if key.startswith("folder:"):
        try:
            return Path(text[len("folder:"):]).expanduser() if text[len("folder:"):] else None
        except RuntimeError:  # an unknown ~user: load_dataset names the problem
            return None
    if key in ("digits", "mnist", "cifar10") or not text:
        return None
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # an unknown ~user
        return None
    return path if is_folder(path) else None


def is_folder(path: Path) -> bool:
    """``path.is_dir()``, False for a name no file system could hold (too long, a NUL byte)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def scan_folder(path: str | os.PathLike) -> FolderContent:
    """The images of a folder and its classes, as the folder loader sees them (nothing decoded)."""
    from atelier.data.images import scan_images

    root = Path(path).expanduser()
    if not is_folder(root):
        raise DataError(f"image folder {root} does not exist or is not a folder")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    split_roots = [root / "train", root / "test"] if has_splits else [root]
    files, names, labelled = [], set(), True
    for split_root in split_roots:
        for file in scan_images(split_root):
            files.append(file)
            parts = file.relative_to(split_root).parts
            if len(parts) > 1:
                names.add(parts[0])
            else:
                labelled = False
    if not files:
        raise DataError(f"no images found in {root}")
    return FolderContent(root, files, sorted(names) if labelled else None, has_splits)


def content_sha256(content: FolderContent) -> str:
    """SHA-256 over every image file's relative path, size and bytes, in sorted order (cached on ``content``)."""
    if not content.sha256:
        h = hashlib.sha256(b"atelier folder content v1\0")
        for file in sorted(content.files, key=lambda f: f.relative_to(content.root).as_posix()):
            data = file.read_bytes()
            h.update(file.relative_to(content.root).as_posix().encode() + b"\0" + len(data).to_bytes(8, "little"))
            h.update(data)
        content.sha256 = h.hexdigest()
    return content.sha256


def extractor_name(content_hash: str, resolution: int) -> str:
    """``folder-cnn:<12 hex>``: the first digits of a SHA-256 of the content hash and the resolution."""
    return PREFIX + hashlib.sha256(f"{content_hash}:{resolution}".encode()).hexdigest()[:12]


def _needs_classes(content: FolderContent) -> None:
    where = f"{content.root}/{{train,test}}" if content.has_splits else str(content.root)
    if content.classes is None:
        raise DataError(f"fit-classifier needs class sub-folders (at least two): {where} holds images that are not in "
                        f"a class folder. Put each class's images in a sub-folder named after it "
                        f"({where}/CLASS/*.png); unlabelled images can be evaluated in InceptionV3 features "
                        "(`atelier evaluate ... --extractor inception-v3`)")
    if len(content.classes) < 2:
        raise DataError(f"fit-classifier needs class sub-folders (at least two): {where} has only the class "
                        f"{content.classes[0]!r}, and a classifier of one class learns nothing; evaluate it in "
                        "InceptionV3 features (`atelier evaluate ... --extractor inception-v3`)")


def holdout_split(data: ImageDataset, fraction: float = HOLDOUT_FRACTION) -> tuple[ImageDataset, ImageDataset]:
    """(train, held-out): ``fraction`` of each class (at least one image), chosen with a fixed seed."""
    g = torch.Generator().manual_seed(HOLDOUT_SEED)
    held = []
    for c in range(data.num_classes):
        idx = (data.labels == c).nonzero().flatten()
        if len(idx) < 2:
            name = data.classes[c] if data.classes else c
            raise DataError(f"{data.name}: class {name!r} has {len(idx)} image(s); a held-out split needs at least "
                            "two per class (or give the folder train/ and test/ sub-folders)")
        take = max(1, round(fraction * len(idx)))
        held.append(idx[torch.randperm(len(idx), generator=g)[:take]])
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[torch.cat(held)] = True
    return data.subset(~mask), data.subset(mask)


@dataclass
class FolderFit:
    name: str  # folder-cnn:<12 hex>
    fitted: FittedClassifier
    cached: bool  # True: found in the cache, nothing was trained
    path: Path  # the cached weights


def fit_folder_classifier(path: str | os.PathLike, *, resolution: int = DEFAULT_RESOLUTION, epochs: int | None = None,
                          batch_size: int | None = None, seed: int = 0, refit: bool = False,
                          progress: bool = True) -> FolderFit:
    """Fit (or find in the cache) the domain extractor of a labelled image folder.

    A cache hit (same content, same ``resolution``) trains nothing unless ``refit``. Otherwise a
    ResNet-9 is trained at ``resolution`` on the training images (train/ if present, else 90% of each
    class) for ``epochs`` (default: 4, more for small folders so that at least 500 steps are taken)
    and its accuracy measured on the held-out ones; accuracy, content hash and weights hash are saved
    with it. DataError when the folder has no class sub-folders, or fewer than two classes."""
    from atelier.data import load_dataset
    from atelier.data.resize import check_resolution

    check_resolution(resolution)
    content = scan_folder(path)
    _needs_classes(content)
    name = extractor_name(content_sha256(content), resolution)
    if not refit and (found := load_classifier(name)) is not None:
        return FolderFit(name, found, True, classifier_path(name))
    spec = f"folder:{content.root}"
    if content.has_splits:
        train, test = (load_dataset(spec, resolution=resolution, split=s, progress=progress) for s in ("train", "test"))
        held = "the test/ sub-folder"
    else:
        train, test = holdout_split(load_dataset(spec, resolution=resolution, split="train", progress=progress))
        held = f"{HOLDOUT_FRACTION:.0%} of each class (seed {HOLDOUT_SEED})"
    _check_loaded(train, content)
    batch = batch_size or min(256, max(16, len(train) // 8))
    epochs = epochs or max(4, math.ceil(MIN_STEPS / max(1, len(train) // batch)))
    fitted = fit_classifier(train, test, arch=ARCH, epochs=epochs, batch_size=batch, seed=seed, progress=progress)
    fitted.info.update({"trained_on": f"image folder {content.root}", "source": str(content.root),
                        "content_sha256": content.sha256, "n_files": len(content.files), "held_out": held})
    return FolderFit(name, fitted, False, save_classifier(fitted, name))


def _check_loaded(train: ImageDataset, content: FolderContent) -> None:
    if train.labels is None or train.num_classes < 2:  # the loader saw other files than the scan (changed meanwhile)
        raise DataError(f"{content.root}: changed while it was read; run the command again")


def find_folder_extractor(path: str | os.PathLike, resolution: int | None = None) -> str | None:
    """The name of the fitted extractor for the folder's current content (the one fitted at the resolution
    closest to ``resolution``, default 32), or None when none is cached (or the folder does not exist)."""
    from atelier.io import load_json

    root = Path(path).expanduser()
    folder = cache_dir() / "classifiers"
    if not is_folder(root) or not folder.is_dir():
        return None
    candidates = [p for p in folder.glob(f"{PREFIX.replace(':', '-')}*.json")]
    if not candidates:
        return None
    try:
        digest = content_sha256(scan_folder(root))
    except DataError:
        return None
    fitted = []
    for meta_path in candidates:
        try:
            meta = load_json(meta_path)
        except ValueError:
            continue
        if isinstance(meta, dict) and meta.get("content_sha256") == digest and isinstance(meta.get("resolution"), int):
            fitted.append((abs(meta["resolution"] - (resolution or DEFAULT_RESOLUTION)), -meta["resolution"],
                           meta.get("name", "")))
    fitted = [f for f in fitted if f[2] == extractor_name(digest, -f[1])]
    return min(fitted)[2] if fitted else None


def fitted_folder_extractors() -> list[dict]:
    """What the cache holds for folders: each extractor's saved description (name, source, accuracy, ...)."""
    from atelier.io import load_json

    folder = cache_dir() / "classifiers"
    out = []
    for meta_path in sorted(folder.glob(f"{PREFIX.replace(':', '-')}*.json")) if folder.is_dir() else []:
        try:
            meta = load_json(meta_path)
        except ValueError:
            continue
        if isinstance(meta, dict) and re.fullmatch(r"folder-cnn:[0-9a-f]{12}", str(meta.get("name", ""))):
            out.append(meta)
    return out
