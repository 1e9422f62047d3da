"""castore: a content-addressed, deduplicating file store with Filetracker semantics.

The public API in one import::

    from castore import Store
    with Store.open("castore-data", create=True) as store:
        name = store.put("/problems/1/a.in", b"1 2\n")      # '/problems/1/a.in@1700000000'
        store.read_bytes(name)

Over HTTP, with the API of Filetracker's client (``castore.client``)::

    from castore.client import Client
    client = Client(remote_url="http://127.0.0.1:9999", cache_dir="/var/cache/castore")
"""

from .errors import (
    CastoreError,
    CorruptBlob,
    FileNotAvailable,
    FiletrackerError,
    HashCollision,
    IntegrityError,
    InvalidName,
    InvalidPath,
    InvalidVersion,
    MissingBlob,
    NotFound,
    SourceError,
    StoreNotFound,
    VersionNotFound,
)
from .names import Name, parse_name, versioned_name
from .store import FileInfo, GcReport, Store

__all__ = [
    "CastoreError",
    "CorruptBlob",
    "FileInfo",
    "FileNotAvailable",
    "FiletrackerError",
    "GcReport",
    "HashCollision",
    "IntegrityError",
    "InvalidName",
    "InvalidPath",
    "InvalidVersion",
    "MissingBlob",
    "Name",
    "NotFound",
    "SourceError",
    "Store",
    "StoreNotFound",
    "VersionNotFound",
    "parse_name",
    "versioned_name",
]
