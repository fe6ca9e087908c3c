"""Shared argument checks: the one ``check_is_fitted`` and small validators used across packages."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from embedkit.errors import EmbedkitError, NotFittedError

__all__ = ["check_is_fitted", "check_positive_int", "check_finite_number", "available_memory", "fmt_size",
           "check_memory"]


def check_is_fitted(estimator, attributes: str | Sequence[str]) -> None:
    """Raise :class:`NotFittedError` unless every learned attribute is set on ``estimator``.

    Learned attributes end in ``_`` (scikit-learn's convention); pass the ones ``fit`` sets.

    Example:
        .. code-block:: python

            check_is_fitted(self, ["rotation_", "mean_"])
    """
    names = [attributes] if isinstance(attributes, str) else list(attributes)
    missing = [a for a in names if getattr(estimator, a, None) is None]
    if missing:
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet (no {missing[0]}); call fit() first"
        )


def check_positive_int(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise a one-line error naming ``name`` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__") and not isinstance(value, float)
    ):
        raise EmbedkitError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if value < minimum:
        raise EmbedkitError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise EmbedkitError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_finite_number(value, name: str, *, low: float | None = None, high: float | None = None,
                        low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Return ``value`` as a float, or raise a one-line error naming ``name`` (NaN/inf and bools refused)."""
    if isinstance(value, bool):
        raise EmbedkitError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EmbedkitError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise EmbedkitError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise EmbedkitError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {v:g}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        raise EmbedkitError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {v:g}")
    return v


# --- memory: refuse a size the machine cannot hold before allocating it ---------------------------

def _cgroup_free() -> int | None:
    """Memory left under this process's cgroup limit (v2 ``memory.max``, v1 ``limit_in_bytes``), if any."""
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f:
                raw = f.read().strip()
            if not raw.isdigit() or int(raw) >= 1 << 60:  # "max", or v1's "no limit" sentinel
                continue
            with open(used) as f:
                return max(0, int(raw) - int(f.read().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_memory() -> int | None:
    """Bytes of RAM this process may still allocate: the system's available memory (``psutil`` if
    installed, else ``/proc/meminfo``'s MemAvailable, else free pages), capped by a cgroup limit;
    None when none of these can be read."""
    avail = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed, or no /proc
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
        if avail is None:
            try:
                avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (AttributeError, ValueError, OSError):
                pass
    cg = _cgroup_free()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def fmt_size(n: float) -> str:
    """``1536`` -> ``1.5 KiB``, up to EiB (sizes the checks below refuse can be huge)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} EiB"


def check_memory(need: int, what: str, *, available: int | None = None, where: str = "this machine") -> None:
    """Raise :class:`~embedkit.errors.ResourceError` when ``need`` bytes exceed what is available.

    ``what`` names the request, e.g. ``"pooling.num_latents: 100000000000 latents of width 384"``;
    ``available`` defaults to :func:`available_memory` (the check is skipped when that is unknown).
    """
    from embedkit.errors import ResourceError

    avail = available_memory() if available is None else available
    if avail is not None and need > avail:
        raise ResourceError(f"{what} need about {fmt_size(need)}; {where} has {fmt_size(avail)} available")
