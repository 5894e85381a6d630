"""Image grids, plots and HTML pages: what a person looks at."""

from atelier.report.grid import make_grid, save_grid
from atelier.data.images import save_image

__all__ = ["make_grid", "save_grid", "save_image"]
