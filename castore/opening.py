"""Opening a store: :func:`open_store`, given a folder or two URLs (``from castore import open_store``).

The machinery is :mod:`castore.location` (where a store lives, creating and upgrading it,
opening its two parts); this module makes the :class:`~castore.store.Store` from those
parts, and is the public face of both: its names are the ones the CLI, the server, the
Django bridge and the tests open stores with. ``Store.open(root)`` is the same call
(:func:`castore.location.open_parts`, then :meth:`Store.of`), spelt for a folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .location import (
    BLOBS_DIR,
    METADATA_FILE,
    Location,
    initialize,
    locate,
    migrate,
    open_blobs,
    open_parts,
    upgrade_schema_of,
)
from .store import Store

__all__ = [
    "BLOBS_DIR",
    "METADATA_FILE",
    "Location",
    "initialize",
    "locate",
    "migrate",
    "open_blobs",
    "open_store",
    "upgrade_schema_of",
]


def open_store(
    root: str | os.PathLike[str] | None = None,
    *,
    metadata: str | None = None,
    blobs: str | None = None,
    create: bool = False,
    retention: int | None = None,
    inline_max: int | None = None,
    zstd_level: int | None = None,
    clock: Callable[[], float] | None = None,
    read_only: bool | None = None,
    check_blobs: bool | None = None,
    create_bucket: bool = False,
) -> Store:
    """Open (with ``create=True``: create, or upgrade) the store at ``root`` or at two URLs.

    ``retention``, ``inline_max`` and ``zstd_level`` are the store's settings: a new
    store takes them (defaults otherwise); for an existing store each one given must
    equal the stored value (ValueError otherwise: they cannot change after creation).
    Raises StoreNotFound when there is no store and ``create`` is false, and
    SchemaOutdated when the store needs ``castore migrate-schema``.

    ``read_only`` (a folder only): True opens it for reading, writing nothing; None
    does so when the folder is on a read-only filesystem. A folder also keeps its
    disk-space reserve (:func:`castore.location.open_parts` says it all).

    ``check_blobs`` (default: when ``create``) first checks that the blob storage takes
    writes (BlobsUnusable otherwise, saying what to do); ``create_bucket`` makes a missing
    S3 bucket.
    """
    wanted: dict[str, Any] = {
        name: value
        for name, value in (("retention", retention), ("inline_max", inline_max), ("zstd_level", zstd_level))
        if value is not None
    }
    parts = open_parts(root, metadata=metadata, blobs=blobs, create=create, read_only=read_only, settings=wanted,
                       check_blobs=check_blobs, create_bucket=create_bucket)
    return Store.of(parts, clock=clock or time.time)
