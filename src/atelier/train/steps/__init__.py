"""Per-family training steps: :mod:`base` plus one module per family, each ending in its one
``register_family(...)``. Importing this package imports every module in it (found by listing the
package), so a new family's module is registered without editing anything here."""

import importlib
import pkgutil

from atelier.train.steps.base import GenerativeStep, RunSetup, TrainStep, make_adam, prepare

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["GenerativeStep", "RunSetup", "TrainStep", "make_adam", "prepare"]
