"""Stable, seeded 64-bit hashing of categorical values (never Python's ``hash()``).

Integers are mixed with the SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014; the
"variant 13" constants of Stafford's MurmurHash3 finaliser study) written with ``torch.int64``
operations: multiplication wraps modulo 2**64 and the right shifts are made logical with a
mask, so the result is the same unsigned 64-bit arithmetic in every process, on every machine.

Strings are turned into non-negative int64 ids with BLAKE2b (8-byte digest, top bit cleared),
so they can be fed to every table, :class:`~embedkit.tables.FullTables` included.

A salt (an int64 derived from the seed, the feature name and the chunk number by
:func:`derive_salt`) selects one member of the hash family:
``hash64(v, salt) = splitmix64(v XOR splitmix64(salt))``, and ``bucket(v, salt, m)`` takes the
low 63 bits of that modulo ``m``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

_MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_LOW63 = (1 << 63) - 1


def _signed(x: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical (unsigned) right shift of an int64 tensor."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 output for state ``x``: ``mix(x + 0x9E3779B97F4A7C15)`` on int64 bits.

    Example:
        >>> hex(splitmix64(torch.tensor([0])).item() & (2**64 - 1))
        '0xe220a8397b1dcdaf'
    """
    z = x + _signed(GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    return z ^ _shr(z, 31)


def _splitmix64_int(x: int) -> int:
    """Pure-Python SplitMix64 on an unsigned 64-bit int (used for scalar salts)."""
    z = (x + GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * MIX2) & _MASK64
    return z ^ (z >> 31)


def derive_salt(seed: int, *parts: object) -> int:
    """An int64 salt from a seed and any labels (feature name, chunk number), via BLAKE2b."""
    text = "\x1f".join([str(int(seed)), *map(str, parts)])
    return _signed(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"))


def hash64(values: torch.Tensor, salt: int) -> torch.Tensor:
    """Seeded 64-bit hash of int64 ``values`` (any sign); same shape, int64 bits."""
    key = _signed(_splitmix64_int(salt & _MASK64))
    return splitmix64(values.to(torch.int64) ^ key)


def bucket(values: torch.Tensor, salt: int, num_buckets: int) -> torch.Tensor:
    """Row index in ``[0, num_buckets)`` of each value under the hash selected by ``salt``."""
    return (hash64(values, salt) & _LOW63) % int(num_buckets)


def hash_strings(strings: Iterable[str], salt: int = 0) -> torch.Tensor:
    """Stable non-negative int64 ids of strings (BLAKE2b-64 of UTF-8, top bit cleared).

    Args:
        strings: the raw string values (e.g. zip codes).
        salt: optional int mixed into the digest's key; 0 gives the ids used by the tables'
            automatic string handling.

    Returns:
        A 1-D ``torch.int64`` tensor with one id per string.

    Example:
        >>> ids = hash_strings(["02139", "T8H1N"])
        >>> ids.dtype, bool((ids >= 0).all())
        (torch.int64, True)
    """
    key = b"" if salt == 0 else (salt & _MASK64).to_bytes(8, "little")
    out = []
    for s in strings:
        if not isinstance(s, str):
            raise TypeError(f"hash_strings expects str values, got {type(s).__name__}: {s!r}")
        h = hashlib.blake2b(s.encode("utf-8"), digest_size=8, key=key).digest()
        out.append(int.from_bytes(h, "little") & _LOW63)
    return torch.tensor(out, dtype=torch.int64)
