"""ImageNet weights for :class:`atelier.models.vgg.VGGFeatures`, and the random fallback without them.

(Over ~400 lines: about a third is this docstring, the one place the loading order and the checks are
written down; the code is the loading chain it describes, which reads best in one file.)

Which weights. The VGG-16/19 files torchvision has distributed since 2017 (``IMAGENET1K_V1``), the
ones style-transfer code in PyTorch has almost always used:

* ``vgg19-dcbb9e9d.pth`` (574,673,361 bytes) and ``vgg16-397923af.pth`` (553,433,881 bytes), at
  ``https://download.pytorch.org/models/<file>``. The 8 hex digits in a name are the start of the
  file's SHA-256, which is all torch.hub checks. The full digests below were pinned only because
  several independent public projects that download and check these files agree on them (and both
  agree with the prefix in the name); see ``VGG_FILES``.

Where they come from, in order:

1. ``weights=PATH``: the torchvision ``.pth`` (the whole model: its ``classifier.*`` tensors are
   ignored) or a ``.safetensors`` of the ``features.*`` tensors. A ``.pth`` is converted into the
   cache, so the next run reads ~80 MB of safetensors instead of unpickling ~550 MB.
2. The cache: ``$ATELIER_HOME/weights/vgg19-dcbb9e9d.safetensors`` (``features.*`` only, with the
   source file's name and SHA-256 in its metadata, which is what ``verify`` checks); failing that, the
   standard ``.pth`` put by hand at ``$ATELIER_HOME/weights/vgg19-dcbb9e9d.pth`` or left in torch.hub's
   cache by torchvision (``$TORCH_HOME/hub/checkpoints``), converted as in 1.
3. A download (``url=``, else ``$ATELIER_VGG_URL``, else the torchvision URL; a URL ending in ``/`` is a
   folder the standard file name is appended to) into a temporary file, checked, converted into the
   cache atomically and deleted.
4. Nothing worked (offline, or ``download=False``) and ``fallback=True``: a
   :class:`~atelier.models.random_features.RandomFeatures` network with the same layer names, announced
   with a :class:`RandomFallbackWarning` and in ``model.description``. With ``fallback=False`` the
   error says which file to download from where and where to put it.

Which files are accepted. Keys and shapes are always checked. The SHA-256 is checked against the pinned
one of the official file; ``sha256=HEX`` accepts instead the file (your own weights, in torchvision's
``features.N.weight/bias`` layout) whose hash is HEX, and ``verify=False`` accepts any file. Errors
name these settings as :class:`~atelier.data.base.Option` s (keys ``no_verify_weights``,
``weights_sha256``, ``weights_path``, ``downloads_off``), so the CLI can name its flags instead.

Every returned model carries ``description`` (one line for logs and the CLI) and ``provenance`` (a
dict for run metadata): file name, SHA-256 and how it was checked, or "random fallback, seed N";
:func:`weights_provenance` gives either in one shape.

    >>> vgg = load_vgg("vgg19", ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2"])
    >>> feats = vgg(images)          # images (B, 3, H, W) in [0, 1] -> {layer: activation}
    >>> print(describe(vgg))
"""

from __future__ import annotations

import os
import string
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from atelier.data.base import DataError, Message, Option
from atelier.models.random_features import RandomFeatures
from atelier.models.vgg import BLOCK_WIDTHS, VGGFeatures, layer_names
from atelier.weights import (
    MIN_PREFIX,
    WeightSpec,
    WeightsUnavailableError,
    check_state_dict,
    fetch,
    hash_matches,
    read_state_dict,
    sha256_file,
    weights_dir,
)
from atelier.io import read_safetensors, save_tensors

__all__ = [
    "DEFAULT_LAYERS",
    "RandomFallbackWarning",
    "URL_ENV",
    "VGG_FILES",
    "describe",
    "display_name",
    "expected_shapes",
    "load_vgg",
    "vgg_spec",
    "weights_provenance",
]

#: arch -> (file name, full SHA-256). Each digest is the one pinned, for the same URL and byte count,
#: by several unrelated public projects that download these files and check them (e.g. for VGG-16
#: snap-research/discoscene's models/perceptual_model.py, a Disco Diffusion model downloader and
#: LPIPS/metric set-up scripts; for VGG-19 several style-transfer and VQGAN-CLIP weight manifests);
#: both begin with the 8 hex digits torchvision put in the file name.
VGG_FILES = {
    "vgg19": ("vgg19-dcbb9e9d.pth", "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44"),
    "vgg16": ("vgg16-397923af.pth", "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"),
}
BASE_URL = "https://download.pytorch.org/models/"
#: Overrides the download URL: a full URL, or a folder (ending in "/") holding the standard files.
URL_ENV = "ATELIER_VGG_URL"
#: Gatys et al.'s style layers and their content layer.
DEFAULT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2")
_META_FORMAT = "atelier-vgg-features"


class RandomFallbackWarning(UserWarning):
    """No ImageNet VGG weights could be had, so random features stand in (see ``model.description``)."""


def display_name(arch: str) -> str:
    """``"vgg19"`` -> ``"VGG-19"``."""
    return arch.upper().replace("VGG", "VGG-")


def vgg_spec(arch: str) -> WeightSpec:
    """The standard weight file of ``arch`` (``"vgg19"`` or ``"vgg16"``)."""
    if arch not in VGG_FILES:
        raise ValueError(f"unknown VGG architecture {arch!r}; choose from {sorted(VGG_FILES)}")
    filename, sha = VGG_FILES[arch]
    name = display_name(arch)
    return WeightSpec(
        filename=filename,
        url=BASE_URL + filename,
        sha256=sha,
        what=f"{name} ImageNet weights",
        url_env=URL_ENV,
        purpose=f"Style losses use the {name} ImageNet weights ({filename}, torchvision's IMAGENET1K_V1).",
        hint=Message(", or pass the file's path as ", Option("weights_path", "weights=PATH"), "."),
    )


def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """``features.N.weight`` / ``.bias`` -> shape for every convolution of the full ``arch``."""
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    for i, name in enumerate(layer_names(arch)):
        if name.startswith("conv"):
            c_out = BLOCK_WIDTHS[int(name[4]) - 1]
            shapes[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
            shapes[f"features.{i}.bias"] = (c_out,)
            c_in = c_out
    return shapes


def _resolve_url(spec: WeightSpec, url: str | None) -> str:
    url = spec.resolve_url(url)
    return url + spec.filename if url.endswith("/") else url


def _local_copies(spec: WeightSpec) -> list[Path]:
    """Where an unconverted standard file may already be: our weights folder, torch.hub's cache."""
    return [spec.cache_path(), Path(torch.hub.get_dir()) / "checkpoints" / spec.filename]


def _cache_file(arch: str, source_sha: str) -> Path:
    """The converted file's name follows torch.hub's: arch and the source's hash prefix."""
    return weights_dir() / f"{arch}-{source_sha[:8]}.safetensors"


def _write_cache(arch: str, features: dict[str, torch.Tensor], source: str, source_sha: str) -> Path | None:
    """Save ``features.*`` tensors into the cache atomically; a cache we cannot write only warns."""
    meta = {"format": _META_FORMAT, "arch": arch, "source_file": source, "source_sha256": source_sha}
    try:
        return save_tensors(features, _cache_file(arch, source_sha), metadata=meta)
    except (OSError, DataError) as exc:
        warnings.warn(f"could not cache the converted VGG weights ({exc}); they will be converted again next time")
        return None


def _features_only(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    shapes = expected_shapes(arch)
    return {k: v for k, v in state.items() if k in shapes}


def _check(state: dict[str, torch.Tensor], model: VGGFeatures, source: str | Path) -> dict[str, torch.Tensor]:
    """The tensors ``model`` needs, after checking them; everything else must be ignorable."""
    full = expected_shapes(model.arch)
    needed = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(
        state, needed, source=source, what=f"{display_name(model.arch)} features",
        # deeper convolutions than the cut and the classifier are not needed, and not an error
        ignore=lambda k: k in full or k.startswith("classifier."),
    )
    return {k: state[k] for k in needed}


_NO_VERIFY = Option("no_verify_weights", "verify=False")


def _read_converted(path: Path, model: VGGFeatures, expected: str | None, verify: bool,
                    given: bool = False) -> tuple[dict, dict]:
    """(tensors ``model`` needs, metadata) of a safetensors file, checking the recorded source hash.

    ``given``: ``expected`` is the hash the caller asked for (``sha256=``), not the pinned one.
    """
    state, meta = read_safetensors(path, what="VGG weights")
    if verify and expected is not None:
        recorded = meta.get("source_sha256", "")
        if not (recorded and hash_matches(recorded, expected)) and not hash_matches(sha256_file(path), expected):
            if given:
                raise DataError(Message(
                    f"{path}: neither this file nor the source it records (sha256 {recorded or '(none)'}) has the "
                    f"sha256 {expected} that was asked for. Check the hash, or pass ", _NO_VERIFY,
                    " to accept any file with the right tensors.",
                ))
            raise DataError(Message(
                f"{path}: not converted from the expected {display_name(model.arch)} weights: it records source sha256 "
                f"{recorded or '(none)'}, expected {expected}. If it is a stale cache file, delete it; to use "
                f"deliberately different weights pass ", _NO_VERIFY, ", or ", Option("weights_sha256", "sha256="),
                " of the source or of this file.",
            ))
    return _check(state, model, path), meta


def _from_pth(path: Path, model: VGGFeatures, expected: str | None, verify: bool,
              given: bool = False) -> tuple[dict, str]:
    """(tensors ``model`` needs, source sha256) of a torchvision-style .pth, converted into the cache.

    ``given``: ``expected`` is the hash the caller asked for (``sha256=``), not the pinned one.
    """
    actual = sha256_file(path)
    if verify and expected is not None and not hash_matches(actual, expected):
        if given:
            raise DataError(Message(
                f"{path}: sha256 {actual} does not match the sha256 {expected} that was asked for. The file may be "
                f"damaged or not the one meant; check the hash, or pass ", _NO_VERIFY,
                " to accept any file with the right tensors.",
            ))
        raise DataError(Message(
            f"{path}: not the expected {display_name(model.arch)} ImageNet weights: sha256 {actual}, "
            f"expected {expected}. The file may be damaged or different weights; pass ", _NO_VERIFY,
            " to use deliberately different weights, or ", Option("weights_sha256", "sha256=HEX"),
            " with the SHA-256 you expect your file to have.",
        ))
    cached = _cache_file(model.arch, actual)
    if cached.is_file():  # converted before: skip unpickling the whole file
        state, meta = read_safetensors(cached, what="VGG weights")
        if meta.get("source_sha256") == actual:
            return _check(state, model, cached), actual
    state = read_state_dict(path, what="VGG weights")
    needed = _check(state, model, path)
    _write_cache(model.arch, _features_only(state, model.arch), path.name, actual)
    return needed, actual


def _finish(model: VGGFeatures, state: dict, device, *, file: str, sha: str, source: str, verified: bool,
            given: bool = False) -> VGGFeatures:
    """Load ``state`` and record where it came from.

    ``verified``: the hash was checked; ``given``: against the one the caller asked for, not the pinned one.
    """
    model.load_state_dict(state, strict=True)
    model.pretrained = True
    name = display_name(model.arch)
    pinned = VGG_FILES[model.arch][1]
    official = len(sha) >= 8 and pinned.startswith(sha.lower())
    against = ("given" if given else "pinned") if verified else None
    check = f"verified against the {against} sha256" if verified else "not verified"
    kind = "ImageNet weights" if official else "weights (not the official file)"
    model.description = f"{name} {kind} from {file} (sha256 {sha[:16]}..., {check}; {source})"
    model.provenance = {"weights": "imagenet" if official else "custom", "arch": model.arch, "file": file,
                        "sha256": sha, "verified": verified, "verified_against": against,
                        "matches_pinned": official, "pinned_sha256": pinned, "source": source}
    return model.requires_grad_(False).eval().to(device)


def _fallback(arch: str, layers, pool: str, seed: int, device, reason: str) -> RandomFeatures:
    model = RandomFeatures(arch, layers, pool, seed=seed)
    name = display_name(arch)
    model.description = (
        f"RANDOM multi-scale features (fallback seed {seed}) standing in for {name}: {reason}"
    )
    model.provenance = {"weights": "random", "arch": arch, "seed": seed, "reason": reason}
    warnings.warn(
        f"No {name} ImageNet weights: {reason} Using a RANDOM multi-scale feature network (seed {seed}) "
        f"instead: it synthesises textures, but style transfer will look different from, and usually "
        f"worse than, results with {name}. Get the real weights with `atelier style weights --arch {arch}` "
        f"(online) or pass --weights PATH; fallback=False (CLI --no-fallback) makes this an error.",
        RandomFallbackWarning,
        stacklevel=3,
    )
    return model.requires_grad_(False).eval().to(device)


def load_vgg(
    arch: str = "vgg19",
    layers: Sequence[str] = DEFAULT_LAYERS,
    *,
    weights: str | os.PathLike | None = None,
    pool: str = "max",
    download: bool = True,
    url: str | None = None,
    verify: bool = True,
    sha256: str | None = None,
    fallback: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> nn.Module:
    """VGG features with ImageNet weights (frozen, eval mode), or random features when there are none.

    Args:
        arch: ``"vgg19"`` or ``"vgg16"``.
        layers: layer names to return (``convB_i``, ``reluB_i``, ``poolB``); the network is cut after
            the deepest.
        weights: a local ``.pth`` (torchvision's file) or ``.safetensors``; must exist.
        pool: ``"max"`` or ``"avg"`` pooling.
        download: fetch the standard file when it is not cached.
        url: download URL (default ``$ATELIER_VGG_URL``, else torchvision's); ending in ``/``: a folder.
        verify: check the SHA-256 of what is loaded (for a converted file: the source it records);
            False accepts any file whose keys and shapes are right (they are always checked).
        sha256: the SHA-256 you expect your file to have, instead of the pinned one of the official file
            (full, or a prefix of >= 8 hex digits): your own weights are accepted when it matches.
        fallback: without weights (offline, or not cached with ``download=False``) return
            :class:`RandomFeatures` and warn, instead of raising.
        seed: seed of the random fallback.
        device: where the returned model lives.
        progress: show a progress bar while downloading.

    Returns:
        a module whose ``forward(x in [0, 1]) -> {layer: activation}``, with ``pretrained``,
        ``description`` and ``provenance`` attributes.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        WeightsUnavailableError: (a DataError) no weights at hand and ``fallback=False``; the message
            says which file to download from where and where to put it.
        DataError: a file is damaged, has the wrong hash or wrong tensors; a download's checksum does
            not match (never papered over by the fallback). Its ``message`` names the settings that
            would help as :class:`~atelier.data.base.Option` s.
    """
    spec = vgg_spec(arch)
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    model = VGGFeatures(arch, layers, pool)  # checks the layer names before any file is touched
    given = sha256 is not None
    if given and (len(sha256) < MIN_PREFIX or any(c not in string.hexdigits for c in sha256)):  # before any file
        raise ValueError(f"a sha256 to check against needs at least {MIN_PREFIX} hex digits, got {sha256!r}")
    expected = sha256.lower() if given else spec.sha256
    checked = verify and expected is not None
    url = _resolve_url(spec, url)
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"VGG weights not found at {p}; expected e.g. {spec.filename} (download it from {url})")
        if p.suffix == ".safetensors":
            state, meta = _read_converted(p, model, expected, verify, given)
            sha = meta.get("source_sha256") or sha256_file(p)
            return _finish(model, state, device, file=meta.get("source_file", p.name), sha=sha, source=str(p),
                           verified=checked, given=given)
        state, sha = _from_pth(p, model, expected, verify, given)
        return _finish(model, state, device, file=p.name, sha=sha, source=str(p), verified=checked, given=given)

    cached = _cache_file(arch, expected)
    if cached.is_file():
        state, meta = _read_converted(cached, model, expected, verify, given)
        return _finish(model, state, device, file=meta.get("source_file", spec.filename),
                       sha=meta.get("source_sha256", expected), source=f"cache {cached}", verified=checked, given=given)
    for p in _local_copies(spec):  # the .pth put there by hand, or downloaded by torchvision before
        if p.is_file():
            state, sha = _from_pth(p, model, expected, verify, given)
            return _finish(model, state, device, file=p.name, sha=sha, source=str(p), verified=checked, given=given)
    dest = spec.cache_path()  # where to put the .pth by hand
    if not download:
        if fallback:
            reason = f"{spec.filename} is not in the cache and downloading is off."
            return _fallback(arch, layers, pool, seed, device, reason)
        reason = Message(f"{spec.filename} is not in the cache and ", Option("downloads_off", "download=False"), ".")
        raise WeightsUnavailableError(reason + " " + spec.advice(url, dest), url=url, dest=dest, reason=reason)
    weights_dir().mkdir(parents=True, exist_ok=True)
    # The big .pth goes to a temporary folder beside the cache (not /tmp, often a small RAM disk) and
    # is deleted once converted; a failed or bad download leaves nothing behind either.
    with tempfile.TemporaryDirectory(prefix=f".{arch}-download-", dir=weights_dir()) as tmp:
        target = Path(tmp) / spec.filename
        try:
            fetch(spec, target, url=url, sha256=expected if verify else None, progress=progress)
        except WeightsUnavailableError as exc:  # offline; a checksum mismatch is never papered over
            if not fallback:
                raise WeightsUnavailableError(
                    f"could not download {url} ({exc.reason}). " + spec.advice(url, dest),
                    url=url, dest=dest, reason=exc.reason,
                ) from exc
            return _fallback(arch, layers, pool, seed, device, f"could not download {url} ({exc.reason}).")
        sha = expected if verify and len(expected) == 64 else sha256_file(target)
        state = read_state_dict(target, what="VGG weights")
        needed = _check(state, model, url)
        _write_cache(arch, _features_only(state, arch), spec.filename, sha)
    return _finish(model, needed, device, file=spec.filename, sha=sha, source=url, verified=checked, given=given)


def weights_provenance(model: nn.Module) -> dict:
    """Which weights a feature network uses, for run records, in one shape whatever it is.

    Always has ``weights`` (``"imagenet"``, ``"custom"``, ``"random fallback"`` or ``"unknown"``),
    ``sha256`` (of the file loaded; None for the random fallback) and ``verified`` (whether that hash was
    checked; ``verified_against`` says against the ``"pinned"`` one or the ``"given"`` one), plus what
    ``model.provenance`` holds.
    """
    prov = dict(getattr(model, "provenance", None) or {})
    if prov.get("weights") == "random":
        return {**prov, "weights": "random fallback", "sha256": None, "verified": False, "verified_against": None}
    if not prov:
        return {"weights": "unknown", "sha256": None, "verified": False, "verified_against": None,
                "description": describe(model)}
    return prov


def describe(model: nn.Module) -> str:
    """One line saying which weights a feature network uses (for logs, the CLI and run metadata)."""
    text = getattr(model, "description", None)
    if text:
        return text
    if getattr(model, "pretrained", False):
        return f"{getattr(model, 'arch', 'VGG')} with pretrained weights (source not recorded)"
    return f"{getattr(model, 'arch', 'VGG')} with untrained random weights (no ImageNet weights loaded)"




def feature_network(cfg: object, *, weights: str | os.PathLike | None = None, download: bool = True,
                    verify: bool = True, sha256: str | None = None, fallback: bool = True,
                    device: str | torch.device = "cpu") -> nn.Module:
    """The VGG feature network a style config needs (Gatys or fast style: anything with ``arch``,
    ``pool``, ``content_layers`` and ``style_layers``), cut after its deepest loss layer.

    ``weights``, ``download``, ``verify``, ``sha256`` and ``fallback`` are those of :func:`load_vgg`."""
    layers = list(dict.fromkeys([*cfg.content_layers, *cfg.style_layers]))  # type: ignore[attr-defined]
    return load_vgg(cfg.arch, layers, weights=weights, pool=cfg.pool, download=download,  # type: ignore[attr-defined]
                    verify=verify, sha256=sha256, fallback=fallback, device=device)
