"""Deterministic pseudo-randomness for the simulator: a stateless 64-bit hash of integers.

Hashing (seed, token, step) instead of drawing from a shared RNG keeps every instrument's price
path independent of which other instruments are subscribed and of request order.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a fast, well-spread 64-bit hash of one integer."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def hash_ints(*values: int) -> int:
    """Hash a tuple of integers to 64 bits; order matters."""
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = mix64(h ^ (value & _MASK64))
    return h


def unit(h: int) -> float:
    """Map a 64-bit hash to a float in [0, 1)."""
    return (h >> 11) / 9007199254740992.0
