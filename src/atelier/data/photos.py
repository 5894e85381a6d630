"""Photographs bundled with scikit-image: the offline content and style images for style transfer.

scikit-image ships a handful of public-domain / freely licensed test photographs inside its wheel
(astronaut, chelsea the cat, coffee, a rocket, ...). They are found on disk without importing
scikit-image itself. Real users point the style tools at COCO or their own photos instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from atelier.data.base import DataError

#: Colour photographs (content images). Name -> file in skimage/data.
PHOTOS = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "hubble": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "retina": "retina.jpg",
}
#: Texture-like images that serve as offline style images.
TEXTURES = {
    "hubble": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "retina": "retina.jpg",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}


def skimage_data_dir() -> Path:
    """scikit-image's bundled data folder (without importing the package)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled photos come from scikit-image: pip install scikit-image")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def photo_path(name: str) -> Path:
    """Path of one bundled photo or texture by name (see :data:`PHOTOS` and :data:`TEXTURES`)."""
    table = {**PHOTOS, **TEXTURES}
    if name not in table:
        raise DataError(f"unknown bundled photo {name!r}; choose from {', '.join(sorted(table))}")
    path = skimage_data_dir() / table[name]
    if not path.is_file():
        raise DataError(f"{path} is missing from the scikit-image installation")
    return path


def photo_paths(names: list[str] | None = None) -> list[Path]:
    """Paths of the bundled colour photos (all of :data:`PHOTOS` by default)."""
    return [photo_path(n) for n in (names or list(PHOTOS))]
