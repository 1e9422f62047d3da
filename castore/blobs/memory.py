"""A blob backend in memory: for tests, and a model of what a backend must do."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import MissingBlob
from ..keys import BlobKey
from .base import BlobBackend, StagedBlob

__all__ = ["MemoryBlobBackend"]


class _MemoryStaged(StagedBlob):
    def __init__(self) -> None:
        self.buffer: io.BytesIO | None = io.BytesIO()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self.buffer is not None, "write after abort"
        self.buffer.write(data)

    def finish(self) -> int:
        assert self.buffer is not None, "finish after abort"
        return self.buffer.getbuffer().nbytes

    def open(self) -> BinaryIO:
        assert self.buffer is not None, "open after abort"
        return io.BytesIO(self.buffer.getvalue())

    def abort(self) -> None:
        self.buffer = None


class MemoryBlobBackend(BlobBackend):
    """Blobs in a dict; thread-safe, gone with the process."""

    local = True

    def __init__(self) -> None:
        self._blobs: dict[BlobKey, bytes] = {}
        self._written: dict[BlobKey, float] = {}
        self._lock = threading.Lock()

    def stage(self) -> StagedBlob:
        return _MemoryStaged()

    def publish(self, staged: StagedBlob, key: BlobKey) -> None:
        assert isinstance(staged, _MemoryStaged) and staged.buffer is not None
        data = staged.buffer.getvalue()
        with self._lock:
            if self._blobs.setdefault(key, data) is data:
                self._written[key] = time.time()
        staged.abort()

    def open(self, key: BlobKey) -> BinaryIO:
        with self._lock:
            data = self._blobs.get(key)
        if data is None:
            raise MissingBlob(f"blob {key} is missing from the memory backend")
        return io.BytesIO(data)

    def delete(self, key: BlobKey) -> None:
        with self._lock:
            self._blobs.pop(key, None)
            self._written.pop(key, None)

    def stored_size(self, key: BlobKey) -> int:
        with self._lock:
            data = self._blobs.get(key)
        if data is None:
            raise MissingBlob(f"blob {key} is missing from the memory backend")
        return len(data)

    def modified(self, key: BlobKey) -> float:
        with self._lock:
            written = self._written.get(key)
        if written is None:
            raise MissingBlob(f"blob {key} is missing from the memory backend")
        return written

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._blobs

    def __iter__(self) -> Iterator[BlobKey]:
        with self._lock:
            return iter(list(self._blobs))
