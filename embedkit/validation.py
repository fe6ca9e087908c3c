"""Shared argument checks: the one ``check_is_fitted`` and small validators used across packages."""

from __future__ import annotations

import math
from collections.abc import Sequence

from embedkit.errors import EmbedkitError, NotFittedError

__all__ = ["check_is_fitted", "check_positive_int", "check_finite_number"]


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
