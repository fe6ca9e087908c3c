"""Row arrays that grow by appending: amortised doubling instead of a copy of everything per add."""

from __future__ import annotations

import numpy as np

__all__ = ["Growable"]


class Growable:
    """A 1-d or 2-d array of rows with spare capacity; :meth:`view` is the filled part.

    Appends write past the filled part, so a view taken earlier (held by a reader) never changes;
    callers that let readers run during an append must still publish the new view only when the
    add succeeded (and :meth:`truncate` back otherwise).

    Example:
        >>> g = Growable.from_array(np.zeros((0, 4), np.float16))
        >>> g.append(np.ones((3, 4), np.float16)); g.view().shape
        (3, 4)
    """

    def __init__(self, shape_tail: tuple[int, ...], dtype):
        self.buf = np.zeros((0, *shape_tail), dtype=dtype)
        self.n = 0

    @classmethod
    def from_array(cls, X: np.ndarray) -> Growable:
        """A growable copy of ``X`` (which may be read-only or memory-mapped)."""
        g = cls(X.shape[1:], X.dtype)
        g.append(X)
        return g

    def append(self, X: np.ndarray) -> None:
        need = self.n + len(X)
        if need > len(self.buf):
            new = np.zeros((max(need, 2 * len(self.buf), 1024), *self.buf.shape[1:]), dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new
        self.buf[self.n: need] = X
        self.n = need

    def truncate(self, n: int) -> None:
        self.n = n

    def view(self) -> np.ndarray:
        return self.buf[: self.n]
