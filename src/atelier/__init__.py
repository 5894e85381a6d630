"""Atelier: image generation and creativity on PyTorch.

The package layout follows the data flow::

    data -> augment -> models -> objectives -> train -> creative / style / metrics -> report -> serve
"""

__version__ = "0.1.0"

from atelier.registry import create_model, list_models, register_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "register_model"]
