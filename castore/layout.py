"""What a store folder holds and what a new store chooses, as plain constants (no SQLAlchemy).

:mod:`castore.store` uses them, and so do the steps of ``castore serve`` that run before
any worker loads SQLAlchemy (:mod:`castore.preflight`, :mod:`castore.creating`).
"""

from __future__ import annotations

from .codec import DEFAULT_LEVEL

__all__ = [
           "ACCESS_CLOSED",
           "ACCESS_OPEN",
           "ACCESS_SETTING",
           "BLOBS_DIR",
           "DEFAULTS",
           "DEFAULT_INLINE_MAX",
           "DEFAULT_LEVEL",
           "DEFAULT_RETENTION",
           "METADATA_FILE",
           "SETTINGS",
           "SETTING_NAMES",
           "access_closed",
]

METADATA_FILE = "metadata.sqlite3"
"""The SQLite database of a store folder (its metadata)."""
BLOBS_DIR = "blobs"
"""The folder of a store folder's blob files."""

SETTINGS = ("retention", "inline_max", "zstd_level")
"""What a store chooses at creation (``Store.open(root, create=True, retention=3)``)."""

DEFAULT_RETENTION = 10
DEFAULT_INLINE_MAX = 128 * 1024
"""Contents up to this size live inline in the metadata database (see docs/design.md)."""
DEFAULTS = {"retention": DEFAULT_RETENTION, "inline_max": DEFAULT_INLINE_MAX, "zstd_level": DEFAULT_LEVEL}
"""A new store's settings when none is given."""

SETTING_NAMES = frozenset({"seed", *SETTINGS})
"""The rows a store's ``settings`` table holds: its settings and its random ``seed`` (castore.keys)."""

ACCESS_SETTING = "access"
"""The setting that says whether the HTTP server wants an access token (``castore/server/tokens.py``).

Not one of :data:`SETTING_NAMES`: a store has no such row until its first token is made."""
ACCESS_CLOSED = "closed"
"""``access`` once a token was made (``castore token create``): every request but ``/health`` needs a token."""
ACCESS_OPEN = "open"
"""``access`` after ``castore token open-access --yes``: requests need no token."""


def access_closed(access: str | None, has_tokens: bool) -> bool:
    """Whether a store with this ``access`` setting (None: no row) and tokens, or none, is closed.

    Closed by the setting, and by any token: a store whose tokens were made before the
    setting existed has no row, and stays closed too.
    """
    return has_tokens or access == ACCESS_CLOSED
