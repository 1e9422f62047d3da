"""The server's side of ``PUT /batch/``: check a whole batch, then store its files (in a thread).

The format, shared with the client, is :mod:`castore.batch`; the route is
:meth:`castore.server.handlers.FiletrackerApp.put_batch`. A zstd payload is decoded by
the server's one decoder of upload bodies (:class:`castore.server.upload.UploadReader`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from ..batch import BatchFile, BatchLimits, digest_of, parse_manifest, read_manifest
from ..errors import SourceError
from .upload import UploadReader

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["check_batch", "store_batch"]

COMMIT_FILES = 64
"""Small files recorded per transaction: the database stays locked for a few milliseconds at a time."""


def check_batch(body: BinaryIO, body_size: int, limits: BatchLimits) -> list[BatchFile]:
    """Parse and check a whole batch body (every file decoded, its digest compared); store nothing."""
    manifest = read_manifest(body)
    files = parse_manifest(manifest, limits)
    expected = len(manifest) + 1 + sum(f.length for f in files)
    if body_size != expected:
        what = "is truncated" if body_size < expected else "has bytes past its last file"
        raise SourceError(f"the batch body {what}: {body_size} bytes, its manifest says {expected}")
    for index, (file, payload) in enumerate(_payloads(body, files)):
        try:
            content = _content(file, payload, limits.max_zstd_window)
        except SourceError as e:
            raise SourceError(f"batch file {index + 1} ({file.name!r}): {e}") from None
        if len(content) != file.size:
            raise SourceError(f"batch file {index + 1} ({file.name!r}): {len(content)} bytes, not its size {file.size}")
        if digest_of(content) != file.digest:
            raise SourceError(f"batch file {index + 1} ({file.name!r}): the content does not match its digest")
    return files


def store_batch(store: Store, body: BinaryIO, body_size: int, limits: BatchLimits) -> list[str]:
    """Check a batch whole, then store its files in order; the versioned name now current of each.

    Blocking (a worker thread). Nothing is stored when the check fails. Files small
    enough to live in their metadata row share one transaction; a larger one commits
    what came before and is stored on its own (its bytes go to the blob backend under
    a lease of their own, see :meth:`castore.store.Store.put`).
    """
    files = check_batch(body, body_size, limits)
    body.seek(0)
    read_manifest(body)
    inline_max = store.settings()["inline_max"]
    stored: list[str] = []
    run: list[tuple[BatchFile, bytes]] = []  # small files waiting for their shared commit
    for file, payload in _payloads(body, files):
        if file.size <= inline_max and len(run) < COMMIT_FILES:
            run.append((file, payload))
            continue
        stored += _store_run(store, run, limits)
        run = []
        if file.size <= inline_max:
            run.append((file, payload))
        else:
            stored.append(_store_one(store, file, payload, limits))
    return stored + _store_run(store, run, limits)


def _store_run(store: Store, run: list[tuple[BatchFile, bytes]], limits: BatchLimits) -> list[str]:
    items = [(f.path, f.version, payload, f.size if f.encoding == "zstd" else None) for f, payload in run]
    return store.put_many(items, max_window=limits.max_zstd_window) if items else []


def _store_one(store: Store, file: BatchFile, payload: bytes, limits: BatchLimits) -> str:
    if file.encoding == "zstd":  # keep the client's frame as the stored bytes, as PUT does
        return store.put_zstd(file.path, io.BytesIO(payload), file.version, size=file.size,
                              max_window=limits.max_zstd_window)
    return store.put(file.path, payload, file.version, expected_size=file.size)


def _payloads(body: BinaryIO, files: list[BatchFile]) -> Iterator[tuple[BatchFile, bytes]]:
    for file in files:
        yield file, body.read(file.length)


def _content(file: BatchFile, payload: bytes, max_window: int) -> bytes:
    """A file's content from its payload: checked against its size (SourceError otherwise)."""
    if file.encoding == "identity":
        return payload
    reader = UploadReader(io.BytesIO(payload), encoding="zstd", logical_size=file.size, sha256=None,
                          max_size=file.size, max_window=max_window)
    return reader.read_whole(file.size)
