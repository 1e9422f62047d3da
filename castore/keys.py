"""Blob keys: the 128-bit xxh3 hash of a blob's original bytes, with the store's secret seed.

xxh3 is not a cryptographic hash. What keeps outsiders from crafting two contents
with one key is the per-store random seed, created at ``castore init`` and never sent
to clients; keys are always computed by the store from the bytes it received. The
remaining risks are written down in ``docs/design.md`` (threat model).
"""

from __future__ import annotations

import re
import secrets
from typing import NewType

import xxhash

__all__ = ["KEY_HEX_LENGTH", "BlobKey", "Hasher", "check_key", "is_valid_key", "new_seed"]

BlobKey = NewType("BlobKey", str)
"""32 lowercase hex digits: xxh3-128 of the original (uncompressed) bytes."""

KEY_HEX_LENGTH = 32
_KEY = re.compile(r"[0-9a-f]{32}")


def is_valid_key(key: object) -> bool:
    """True when ``key`` has the form of a blob key."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def check_key(key: object) -> BlobKey:
    """Return ``key`` as a :data:`BlobKey`, or raise ValueError."""
    if not is_valid_key(key):
        raise ValueError(f"invalid blob key {key!r}")
    return BlobKey(str(key))


def new_seed() -> int:
    """A fresh random 64-bit seed for a new store."""
    return secrets.randbits(64)


class Hasher:
    """Incremental keyed xxh3-128 that also counts the bytes it has seen."""

    __slots__ = ("_state", "size")

    def __init__(self, seed: int) -> None:
        self._state = xxhash.xxh3_128(seed=seed)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._state.update(data)
        self.size += len(data)

    def key(self) -> BlobKey:
        return BlobKey(self._state.hexdigest())
