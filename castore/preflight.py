"""What ``castore serve`` learns about a store folder before its workers start, without SQLAlchemy.

Opening a store loads SQLAlchemy (~0.3 s on a quiet 2-core machine, most of a server's
start-up). A server's master only needs to know that its workers will be able to open the
store, so when ``ROOT/metadata.sqlite3`` is a castore store at this code's schema
revision, with all its settings, it looks with the standard library's ``sqlite3`` only,
and each worker opens the store while it already answers ``GET /version``
(:class:`castore.server.serving.PerWorkerApp`). The price: each worker loads SQLAlchemy itself
(~0.3 s of CPU each) instead of sharing the master's load through ``fork``; with one
worker per core they load side by side, and a file request that reaches a worker still
loading waits for it.

A new folder with ``--init`` takes the same path: the master makes the store with the
standard library (:func:`castore.creating.create_folder`: the schema SQLAlchemy would
create, kept as a file in the package; safe against a second creator and a ``kill -9``),
then looks at it as above. So the store exists when ``castore serve`` prints its start-up
line (a script may use it from then on), and SQLAlchemy is still not loaded in the master.

Anything else (another metadata URL, an older schema, a database that cannot be read or
made) is :data:`None`: the master opens the store itself as before, which creates
(``--init``), migrates or fails with its usual one-line error, and its workers are forked
with SQLAlchemy loaded.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .creating import CREATION_ERRORS, create_folder
from .layout import ACCESS_SETTING, METADATA_FILE, SETTING_NAMES, access_closed
from .metadata.migrate import SCHEMA_REVISION

__all__ = ["SETTING_NAMES", "Preflight", "preflight"]


@dataclass(frozen=True)
class Preflight:
    """A current store folder, which the workers can open themselves."""

    closed: bool
    """Requests need an access token (then ``/version`` needs one, and is not answered early)."""


def preflight(root: str | os.PathLike[str], *, create: bool = False) -> Preflight | None:
    """The store folder ``root`` when it is current, or None when the master must open it itself.

    ``create`` (``serve --init``): a folder without a store gets one first, with the
    default settings; when that fails, None (the master's own attempt gives the error).
    """
    database = Path(root) / METADATA_FILE
    if create and not database.exists():
        try:
            create_folder(root)
        except CREATION_ERRORS:
            return None
    if not database.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        names = {row[0] for row in connection.execute("SELECT name FROM settings")}
        tokens = connection.execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is not None
        access = connection.execute("SELECT value FROM settings WHERE name = ?", (ACCESS_SETTING,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    if revision != [(SCHEMA_REVISION,)] or not SETTING_NAMES <= names:
        return None
    return Preflight(closed=access_closed(access[0] if access else None, tokens))
