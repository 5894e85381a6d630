"""A small static HTML page that shows images with captions (the demo and report pages)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from atelier.io import atomic_write_bytes

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; padding: 0 1rem; }
h1 { font-weight: 600; } figure { display: inline-block; margin: 0 1.5rem 2rem 0; vertical-align: top; }
img { image-rendering: pixelated; border: 1px solid #ddd; max-width: 100%; }
figcaption { font-size: 0.9rem; color: #555; max-width: 36rem; } table { border-collapse: collapse; }
td, th { padding: 0.2rem 0.8rem; border-bottom: 1px solid #eee; text-align: left; }
"""


@dataclass
class Figure:
    image: str  # path relative to the page
    title: str
    caption: str = ""


def _table(rows: dict[str, str]) -> str:
    esc = html.escape
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows.items()) + "</table>"


def write_page(path: str | Path, *, title: str, intro: str, figures: list[Figure],
               facts: dict[str, str] | None = None, tables: dict[str, dict[str, str]] | None = None) -> Path:
    """Write the page atomically: intro, a facts table, titled tables, then the figures."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1><p>{esc(intro)}</p>"]
    if facts:
        parts.append(_table(facts))
    for heading, rows in (tables or {}).items():
        parts.append(f"<h2>{esc(heading)}</h2>{_table(rows)}")
    for fig in figures:
        parts.append(f"<figure><h2>{esc(fig.title)}</h2><img src='{esc(fig.image)}' alt='{esc(fig.title)}'>"
                     f"<figcaption>{esc(fig.caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    atomic_write_bytes(Path(path), "".join(parts).encode())
    return Path(path)
