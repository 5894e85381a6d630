"""Training curves as PNG."""

from __future__ import annotations

import io
from pathlib import Path

from atelier.io import atomic_write_bytes


def plot_curves(history: list[dict], path: str | Path, *, title: str = "training losses") -> Path | None:
    """Plot every numeric key (except step/time/throughput) of ``history`` against its step."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "time", "epoch", "images_per_second"}
    keys = [k for k in history[-1] if k not in skip and isinstance(history[-1][k], (int, float))]
    losses = [k for k in keys if k.startswith("loss")]
    others = [k for k in keys if k not in losses]
    steps = [h["step"] for h in history]
    groups = [(group, label) for group, label in ((losses, "loss"), (others, "value")) if group]
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (group, label) in zip(axes[0], groups):
        for key in group:
            ax.plot(steps, [h.get(key, float("nan")) for h in history], label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, *, dpi: int = 100) -> Path:
    """Lay out, write a matplotlib figure as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
