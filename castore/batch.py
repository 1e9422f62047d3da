"""Batched puts: many small files in one request, stored with one commit (``PUT /batch/``).

A castore extension of the Filetracker protocol (``docs/protocol.md``, "PUT /batch/");
Filetracker's client never sends it, castore's client sends it only to a server whose
``GET /version`` advertises it, and falls back to one PUT per file otherwise.

The body is a manifest line, then every file's bytes, back to back::

    {"files": [{"name": "/a/b.txt@1700000000", "size": 65536, "encoding": "zstd",
                "length": 20480, "digest": "xxh3-128-chunks-1m=<32 hex>"}, ...]}\\n
    <20480 bytes of the first file><bytes of the second file>...

``size`` is the file's content size, ``length`` its bytes in the body (``identity``:
the content itself, ``length == size``; ``zstd``: a zstd stream decoding to ``size``
bytes: one frame or several, skippable frames included, as ``PUT /files/`` takes them;
every frame within the window limit, the whole within :func:`max_frame_size`),
``digest`` the content digest the server checks (:mod:`castore.digests`).

Each file is stored as ``PUT /files/`` would store it, in manifest order (an older
version never replaces a newer one, an equal one replaces the content, a second entry
for one path acts as a second PUT), and the answer lists the name now current for each
file. The batch is checked whole first — manifest, sizes, every body decoded and its
digest compared — and a batch with any fault is refused with a 4xx naming the first
faulty file, storing nothing. Runs of small files (up to :data:`COMMIT_FILES`) are then
hashed and compressed, and recorded in one metadata transaction each
(:meth:`castore.store.Store.put_many`), committed before the answer; a file too large to
be stored inline is stored on its own after the run before it, so that blob bytes are
never published under an uncommitted row.

This module holds the format, for the client and the server alike: it imports nothing of
either. The server's work (:func:`castore.server.batch.store_batch`, in a thread) and its
route (:meth:`castore.server.handlers.FiletrackerApp.put_batch`) live in the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

from .content_coding import MAX_ZSTD_WINDOW, max_frame_size
from .digests import ChunkDigester, content_digest
from .errors import InvalidName, SourceError, UploadTooLarge
from .names import parse_name
from .protocol import format_content_digest, format_version, parse_content_digest

__all__ = [
    "BATCH_MEDIA_TYPE",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_FILES",
    "MAX_FILE_SIZE",
    "MAX_MANIFEST",
    "BatchFile",
    "BatchLimits",
    "batch_body",
    "batch_entry",
    "digest_of",
    "parse_answer",
    "parse_manifest",
    "read_manifest",
]

MAX_BATCH_FILES = 1000
"""Files in one batch, at most."""
MAX_BATCH_BYTES = 64 << 20
"""Bytes of one batch's body, at most (beyond the in-memory budget it waits in a spool file)."""
MAX_FILE_SIZE = 1 << 20
"""Content size of one file of a batch, at most (larger files go by ``PUT /files/``)."""
MAX_MANIFEST = 1 << 20
"""Bytes of the manifest line, at most (~150 bytes a file: room for the longest names)."""
ENCODINGS = ("identity", "zstd")
BATCH_MEDIA_TYPE = "application/x-castore-batch"


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold (advertised by ``GET /version``, enforced by the server: :mod:`castore.server.batch`)."""

    max_files: int = MAX_BATCH_FILES
    max_bytes: int = MAX_BATCH_BYTES
    max_file_size: int = MAX_FILE_SIZE
    max_zstd_window: int = MAX_ZSTD_WINDOW

    def advertised(self) -> dict[str, int]:
        return {"max_files": self.max_files, "max_bytes": self.max_bytes, "max_file_size": self.max_file_size}


@dataclass(frozen=True)
class BatchFile:
    """One file of a batch: ``path@version``, its content size and digest, its bytes on the wire."""

    path: str
    version: int
    size: int
    digest: str
    """32 hex digits: :func:`castore.digests.content_digest` of the content."""
    encoding: str
    length: int

    @property
    def name(self) -> str:
        return f"{self.path}@{self.version}"


def digest_of(content: bytes | memoryview) -> str:
    """The content digest of a whole content in memory (what a batch entry carries)."""
    digester = ChunkDigester()
    digester.update(content)
    return content_digest(digester.digests())


def batch_entry(path: str, version: int, size: int, digest: str, encoding: str, sent: bytes) -> dict[str, Any]:
    """The manifest entry of one file whose bytes on the wire are ``sent``."""
    return {
        "name": f"{path}@{version}",
        "size": size,
        "encoding": encoding,
        "length": len(sent),
        "digest": format_content_digest(digest),
    }


def batch_body(entries: list[dict[str, Any]], payloads: list[bytes]) -> list[bytes]:
    """The body of ``PUT /batch/``: the manifest line, then the payloads, as pieces to send."""
    manifest = json.dumps({"files": entries}, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return [manifest + b"\n", *payloads]


def parse_answer(body: bytes, count: int) -> list[str]:
    """The versioned names a server answered for a batch of ``count`` files (ValueError if malformed)."""
    answer = json.loads(body)
    names = [entry["stored"] for entry in answer["files"]]
    if len(names) != count or not all(isinstance(name, str) for name in names):
        raise ValueError(f"the answer names {len(names)} files, the batch had {count}")
    return names


def _fault(index: int, entry: object, message: str) -> SourceError:
    name = entry.get("name") if isinstance(entry, dict) else None
    label = f"file {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
    return SourceError(f"batch {label}: {message}")


def _natural(value: object) -> int | None:
    """``value`` if it is a whole number of bytes (not a bool, a float or a string), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_manifest(line: bytes, limits: BatchLimits) -> list[BatchFile]:
    """The files a manifest line lists, checked (SourceError or InvalidName, naming the file)."""
    try:
        manifest = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested too deep (an attack, not a manifest)
        raise SourceError("the batch manifest is not JSON") from None
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise SourceError('the batch manifest must be {"files": [...]}')
    if len(entries) > limits.max_files:
        raise UploadTooLarge(f"the batch has {len(entries)} files, over this server's limit of {limits.max_files}")
    files = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fault(index, entry, "an entry must be an object")
        name, size, length = entry.get("name"), _natural(entry.get("size")), _natural(entry.get("length"))
        encoding, digest = entry.get("encoding", "identity"), entry.get("digest")
        if not isinstance(name, str):
            raise _fault(index, entry, "no name")
        try:
            parsed = parse_name(name)
            if parsed.version is None:
                raise InvalidName(f"{name!r} has no @version: a batch names each file's version")
            format_version(parsed.version)  # a version a GET can answer with (as PUT's dates)
        except InvalidName as e:
            raise InvalidName(f"batch file {index + 1}: {e}") from None
        if size is None or length is None:
            raise _fault(index, entry, "size and length must be whole numbers of bytes")
        if size > limits.max_file_size:
            raise UploadTooLarge(
                f"batch file {index + 1} ({name!r}) has {size} bytes, over this server's limit of "
                f"{limits.max_file_size} per file in a batch (send it with PUT /files/)"
            )
        if encoding not in ENCODINGS:
            raise _fault(index, entry, f"unsupported encoding {encoding!r} (identity or zstd)")
        if encoding == "identity" and length != size:
            raise _fault(index, entry, f"an identity entry's length ({length}) must be its size ({size})")
        if encoding == "zstd" and length > max_frame_size(size):
            # the store refuses such a frame (castore.ingest): refused here, before any file is stored
            raise _fault(index, entry, f"a zstd entry's length ({length}) is far larger than its size ({size})")
        parsed_digest = parse_content_digest(digest if isinstance(digest, str) else None)
        if parsed_digest is None:
            raise _fault(index, entry, "no valid digest (xxh3-128-chunks-1m=<32 hex>)")
        files.append(BatchFile(parsed.path, parsed.version, size, parsed_digest, encoding, length))
    return files


def read_manifest(body: BinaryIO) -> bytes:
    """The manifest line at the start of a batch body, without its newline."""
    line = body.readline(MAX_MANIFEST + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_MANIFEST:
            raise UploadTooLarge(f"the batch manifest is longer than {MAX_MANIFEST} bytes")
        raise SourceError("the batch body ends before its manifest line does")
    return line[:-1]
