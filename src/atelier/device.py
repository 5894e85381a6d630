"""Devices and numeric precision: which device to run on, and bf16 autocast where it pays.

One place for what every training loop, style optimiser and sampler needs: ``precision`` is one of
:data:`PRECISIONS`, resolved once per run by :func:`resolve_precision` and applied by :func:`autocast`.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix work runs at about twice the fp32 rate. Without them PyTorch
    emulates bf16 on the CPU, which is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` on CUDA devices and CPUs with native bf16, else ``fp32``.

    Measured on DCGAN training (BENCHMARKS.md): bf16 autocast nearly doubles images/s on a Zen 4 CPU
    with no loss of sample quality at the scales tested."""
    check_precision(precision)
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context in which matrix work runs in bf16 when ``precision`` resolves to bf16; else a no-op."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's local rank under torchrun) when available, else the CPU."""
    if str(name) == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    return check_device(name)


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this machine has; ValueError naming it otherwise (not PyTorch's RuntimeError
    from deep inside the first allocation)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(name)!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(name)!r}: this machine has no CUDA GPU (use cpu or auto)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(name)!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    elif device.type not in ("cpu", "meta", "mps"):
        raise ValueError(f"device {str(name)!r}: Atelier runs on cpu or cuda")
    return device


# -- memory: refuse work that cannot fit, before allocating it -----------------------------------------

MEMORY_LIMIT_ENV = "ATELIER_MEMORY_LIMIT"  # e.g. "8G": the memory Atelier may plan to use (default: all of it)


class TooLargeError(ValueError):
    """Work that would need more memory than the machine has; ``needed`` and ``available`` in bytes."""

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed, self.available = needed, available


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; ``2.2e12`` -> ``2.0 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a plain number of bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r}: expected a size such as 8G, 512M or a number of bytes")
    scale = 1024 ** "BKMGTP".index((m.group(2) or "B").upper())
    return int(float(m.group(1)) * scale)


def memory_capacity(device: torch.device | str = "cpu") -> int:
    """Bytes of memory on ``device``: the GPU's total, or the machine's RAM; ``$ATELIER_MEMORY_LIMIT``
    lowers (or states) it, e.g. on a shared machine or in a container whose limit /proc does not show."""
    import os

    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        return parse_bytes(limit)
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: no way to tell, so no refusal
        return 2**62


def ensure_fits(needed: int, what: str, *, device: torch.device | str = "cpu", advice: str = "") -> None:
    """Raise :class:`TooLargeError` when ``needed`` bytes exceed the memory of ``device``, saying how much
    ``what`` would take; a clear refusal instead of an allocation that swaps, is killed, or hangs."""
    available = memory_capacity(device)
    if needed > available:
        where = "this GPU has" if torch.device(device).type == "cuda" else "this machine has"
        raise TooLargeError(f"{what} would need {format_bytes(needed)} of memory; {where} "
                            f"{format_bytes(available)}{'. ' + advice if advice else ''}",
                            needed=needed, available=available)
