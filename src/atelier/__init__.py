"""Atelier: image generation and creativity on PyTorch.

The package layout follows the data flow (each layer imports only from those below it; the contract
is in pyproject.toml and checked by ``lint-imports``)::

    io, device -> config -> data -> report -> augment -> objectives -> models -> metrics -> train
        -> creative, style -> pipelines -> demo -> serve -> cli
"""

from atelier._version import __version__
from atelier.models.registry import create_model, list_models, register_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "register_model"]
