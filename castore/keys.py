"""Blob keys: the 128-bit xxh3 hash of a blob's original bytes, with the store's secret seed.

xxh3 is not a cryptographic hash, and the key is not what keeps two contents apart:
a put that finds its key taken compares bytes before sharing a blob, and stores a
different content under the next key of its *probe sequence* (:func:`probe_keys`). The
seed only makes collisions hard to aim at, so it is never exposed: nothing a client
sees is computed from a key except through a keyed one-way function (:func:`etag`).
The remaining risks are written down in ``docs/design.md`` (threat model).

The key function is injectable (``Store(..., key_function=...)``) so that tests can
prove the store safe with a deliberately weak one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from typing import NewType, Protocol

import xxhash

from .digests import ChunkDigester, content_digest

__all__ = [
    "KEY_HEX_LENGTH",
    "MAX_PROBES",
    "BlobKey",
    "Hasher",
    "KeyFunction",
    "KeyState",
    "check_key",
    "etag",
    "frame_name",
    "is_stored_name",
    "is_valid_key",
    "new_seed",
    "probe_keys",
    "stored_name_key",
    "xxh3_key",
]

BlobKey = NewType("BlobKey", str)
"""32 lowercase hex digits: xxh3-128 of the original (uncompressed) bytes, or a probe key."""

KEY_HEX_LENGTH = 32
_KEY = re.compile(r"[0-9a-f]{32}")
MAX_PROBES = 64
"""Keys tried for one content before a put gives up (each step needs another collision)."""


class KeyState(Protocol):
    """An incremental hash: what a key function returns."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


KeyFunction = Callable[[int], KeyState]
"""``seed -> fresh incremental hash`` whose ``hexdigest()`` is 32 lowercase hex digits."""


def xxh3_key(seed: int) -> KeyState:
    """The default key function: keyed xxh3-128."""
    return xxhash.xxh3_128(seed=seed)


def is_valid_key(key: object) -> bool:
    """True when ``key`` has the form of a blob key."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


_FRAME_NAME = re.compile(r"([0-9a-f]{32})\.([1-9][0-9]{0,9})")


def frame_name(key: BlobKey, frame: int) -> BlobKey:
    """The blob backend's name for frame ``frame`` of ``key``'s content: the key itself for 0.

    A content recompressed by ``castore compact`` gets a new name (``<key>.<frame>``, the
    row's ``frame``), so that its row can switch to the new bytes in one transaction while
    the old file stays readable under the old name (``docs/design.md``, "Compaction").
    """
    return key if frame == 0 else BlobKey(f"{key}.{frame}")


def stored_name_key(name: object) -> tuple[BlobKey, int] | None:
    """``(key, frame)`` of a name :func:`frame_name` makes; None for anything else."""
    if is_valid_key(name):
        return BlobKey(str(name)), 0
    match = _FRAME_NAME.fullmatch(name) if isinstance(name, str) else None
    return None if match is None else (BlobKey(match.group(1)), int(match.group(2)))


def is_stored_name(name: object) -> bool:
    """True for a name a blob backend may hold: a key, or a key's later frame (:func:`frame_name`)."""
    return stored_name_key(name) is not None


def check_key(key: object) -> BlobKey:
    """Return ``key`` as a :data:`BlobKey`, or raise ValueError."""
    if not is_valid_key(key):
        raise ValueError(f"invalid blob key {key!r}")
    return BlobKey(str(key))


def new_seed() -> int:
    """A fresh random 64-bit seed for a new store."""
    return secrets.randbits(64)


def _secret(seed: int, purpose: bytes) -> bytes:
    return hashlib.blake2b(seed.to_bytes(8, "big"), person=purpose, digest_size=32).digest()


def probe_keys(seed: int, key: BlobKey, digests: bytes) -> Iterator[BlobKey]:
    """Where a content may be stored: its key, then keys derived from it and its chunk digests.

    Deterministic, so that identical contents meet at the same key; keyed with a secret
    drawn from the seed, so that outsiders cannot aim at a probe key either. A content
    whose key is taken by another content (a collision, or an attack) goes to the next
    probe key; which one a blob got is simply the key its row is stored under.
    """
    yield key
    secret = _secret(seed, b"castore-probe")
    for step in range(1, MAX_PROBES):
        message = b"%s\0%s\0%d" % (key.encode(), content_digest(digests).encode(), step)
        yield BlobKey(hashlib.blake2b(message, key=secret, digest_size=16).hexdigest())


def etag(seed: int, key: BlobKey) -> str:
    """The ETag of a blob: a keyed one-way function of its key, so the key cannot be learned."""
    return hashlib.blake2b(key.encode(), key=_secret(seed, b"castore-etag"), digest_size=16).hexdigest()


class Hasher:
    """Incremental key and chunk digests of a content, and its size."""

    __slots__ = ("_chunks", "_state")

    def __init__(self, seed: int, key_function: KeyFunction = xxh3_key) -> None:
        self._state = key_function(seed)
        self._chunks = ChunkDigester()

    @property
    def size(self) -> int:
        return self._chunks.size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._state.update(data)
        self._chunks.update(data)

    def key(self) -> BlobKey:
        return BlobKey(self._state.hexdigest())

    def digests(self) -> bytes:
        return self._chunks.digests()
