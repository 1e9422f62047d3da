"""A blob backend on S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage, R2), with boto3.

Layout in the bucket, below the URL's prefix: ``ab/cd/abcd…(32 hex)``, one object per
blob, as the file backend's tree. A blob is staged in a local temporary file (bounded
memory whatever its size), then uploaded straight to its final key: content addressing
makes a repeated upload write the same bytes, so no rename is needed. boto3's managed
transfer splits large blobs into a multipart upload of 8 MiB parts.

Reads stream the object (a GET, or ranged GETs after a seek). An optional local read
cache (``cache_dir``, ``cache_size``) keeps hot blobs on the server's disk, least
recently used first out, so that many judging machines fetching the same test inputs
do not all go to the bucket; cached bytes are verified like any read, and a cached copy
that fails is dropped (:meth:`S3BlobBackend.refresh`) and read again from the bucket.

Credentials and the default region come from the standard AWS environment variables
and files (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``…).
"""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BlobsUnusable, MissingBlob
from ..keys import BlobKey, is_stored_name
from ..sizes import parse_size
from .base import BlobBackend, StagedBlob
from .fs import key_to_relpath
from .staging import locked_new_file, sweep_unheld

__all__ = ["S3BlobBackend"]

PART_SIZE = 8 << 20
"""Multipart part size and threshold: a blob larger than this is uploaded in parts."""


_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def _forget_clients_after_fork() -> None:
    """In a forked child: the parent's clients (and their pooled keep-alive sockets) are not ours.

    A connection shared by two processes carries requests of both on one socket; a child killed
    in the middle of a PUT leaves the parent waiting out boto3's 60 s read timeout on it. The
    parent's clients are dropped, not closed (closing them here could end the parent's requests),
    and the lock is new, in case another thread of the parent held it at the fork.
    """
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_clients_after_fork)


def _client(endpoint_url: str | None, region: str | None) -> Any:
    """One boto3 S3 client per endpoint and region in a process (thread-safe, and slow to make).

    Per process: a child forked after a client was made makes its own (``_forget_clients_after_fork``).
    """
    with _clients_lock:
        client = _clients.get((endpoint_url, region))
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(max_pool_connections=32, retries={"max_attempts": 5, "mode": "standard"}),
            )
            _clients[(endpoint_url, region)] = client
        return client


class _S3Staged(StagedBlob):
    """Bytes staged in a local file until uploaded; the file stays locked until aborted.

    The lock (:mod:`castore.blobs.staging`) keeps a sweep of the staging folder, which
    every S3 store of the machine may share, from removing the file while this put still
    uploads or may upload it again.
    """

    def __init__(self, directory: Path) -> None:
        self._held, path = locked_new_file(directory)
        self.path: Path | None = path
        self._file = os.fdopen(os.dup(self._held), "wb")  # closing it at finish keeps the lock

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)

    def finish(self) -> int:
        self._file.flush()
        size = self._file.tell()
        self._file.close()
        return size

    def open(self) -> BinaryIO:
        assert self.path is not None, "open() needs a finished blob"
        return open(self.path, "rb")

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
            os.close(self._held)


class _ObjectReader(io.RawIOBase):
    """The bytes of one object: a streaming GET, reopened with a Range header after a seek."""

    def __init__(self, backend: S3BlobBackend, key: BlobKey, size: int, body: Any) -> None:
        super().__init__()
        self._backend = backend
        self._key = key
        self._size = size
        self._body = body
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._body is None:
            if self._position >= self._size:
                return 0
            self._body = self._backend._get(self._key, f"bytes={self._position}-")["Body"]
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._position += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = max(0, base + offset)
        if position != self._position:
            self._drop_body()
            self._position = position
        return position

    def tell(self) -> int:
        return self._position

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class S3BlobBackend(BlobBackend):
    """Blobs as objects under ``prefix`` in ``bucket``.

    ``endpoint_url`` and ``region`` select the service (MinIO, moto…); ``staging_dir``
    is where blobs are written before their upload (default: the system's temporary
    folder); ``cache_dir`` with ``cache_size`` (e.g. ``4G``) turns on the local read cache.
    """

    local = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        staging_dir: str | None = None,
        cache_dir: str | None = None,
        cache_size: str | int | None = None,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        _client(endpoint_url, region)  # made now (slow), not on the first request
        self._transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                                        max_concurrency=4)
        self._staging = Path(staging_dir or tempfile.gettempdir()) / "castore-s3-staging"
        self._staging.mkdir(parents=True, exist_ok=True)
        self.cache = None
        if cache_dir is not None:
            self.cache = _ReadCache(Path(cache_dir), parse_size(str(cache_size or "1G")))
        elif cache_size is not None:
            raise ValueError("cache_size needs cache_dir")

    @property
    def _client(self) -> Any:
        """This process's client: a backend made before a ``fork`` does not use its parent's in the child."""
        return _client(self.endpoint_url, self.region)

    def object_name(self, key: BlobKey) -> str:
        return self.prefix + key_to_relpath(key)

    # -- setup ---------------------------------------------------------------------

    def check_setup(self, create: bool = False) -> None:
        """The bucket exists (made with ``create``) and a small object can be put, read and deleted
        under the prefix; BlobsUnusable otherwise, in one line that says what to do."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"s3://{self.bucket}/{self.prefix}"
        try:
            if not self._bucket_exists():
                if not create:
                    raise BlobsUnusable(self._missing_bucket_advice())
                self._create_bucket()
            self._probe(where)
        except ClientError as e:
            error = e.response.get("Error", {})
            verb = {"PutObject": "write to", "GetObject": "read from", "DeleteObject": "delete in"}.get(
                e.operation_name, "use")
            raise BlobsUnusable(
                f"cannot {verb} {where}{self._at()}: {e.operation_name} answered {error.get('Code', '?')}"
                f"{' (' + error['Message'] + ')' if error.get('Message') else ''}; these credentials need "
                "s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket there") from None
        except NoCredentialsError:
            raise BlobsUnusable(f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials)") from None
        except BotoCoreError as e:
            raise BlobsUnusable(f"cannot reach the S3 service for {where}: {e}") from None

    def _at(self) -> str:
        return f" at {self.endpoint_url}" if self.endpoint_url else ""

    def _bucket_exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                return False
            raise
        return True

    def _missing_bucket_advice(self) -> str:
        region = self._client.meta.region_name
        options = f" --endpoint-url {self.endpoint_url}" if self.endpoint_url else ""
        options += f" --region {region}" if region else ""
        return (f"the bucket {self.bucket} does not exist{self._at()}: make it with castore init --create-bucket "
                f"(or serve --init --create-bucket), or yourself: aws s3 mb s3://{self.bucket}{options}")

    def _create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        region = self._client.meta.region_name
        where = {"CreateBucketConfiguration": {"LocationConstraint": region}} \
            if region and region != "us-east-1" else {}
        try:
            self._client.create_bucket(Bucket=self.bucket, **where)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":  # made meanwhile
                raise

    def _probe(self, where: str) -> None:
        """Put, read back and delete a small object (its name is no blob key: listings skip it)."""
        name = f"{self.prefix}castore-setup-check-{secrets.token_hex(8)}"
        body = secrets.token_bytes(32)
        self._client.put_object(Bucket=self.bucket, Key=name, Body=body)
        try:
            with self._client.get_object(Bucket=self.bucket, Key=name)["Body"] as stream:
                read = stream.read()
        finally:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        if read != body:
            raise BlobsUnusable(f"{where}{self._at()} gave back other bytes than castore put there")

    # -- writing -------------------------------------------------------------------

    def stage(self) -> StagedBlob:
        return _S3Staged(self._staging)

    def publish(self, staged: StagedBlob, key: BlobKey) -> None:
        assert isinstance(staged, _S3Staged) and staged.path is not None
        self._client.upload_file(str(staged.path), self.bucket, self.object_name(key), Config=self._transfer)

    def put_bytes(self, key: BlobKey, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self.object_name(key), Body=data)

    def delete(self, key: BlobKey) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self.object_name(key))
        if self.cache is not None:
            self.cache.forget(key)

    def refresh(self, key: BlobKey) -> bool:
        if self.cache is None:
            return False
        self.cache.forget(key)
        return True

    def sweep_staging(self, older_than: float) -> int:
        """Remove staging files older than ``older_than`` that no live writer holds (locks)."""
        return sweep_unheld(self._staging, older_than)

    # -- reading -------------------------------------------------------------------

    def open(self, key: BlobKey) -> BinaryIO:
        if self.cache is not None:
            cached = self.cache.open(key)
            if cached is not None:
                return cached
        response = self._get(key)
        size = int(response["ContentLength"])
        if self.cache is not None and self.cache.would_keep(size):
            return self.cache.fill(key, response["Body"])
        return io.BufferedReader(_ObjectReader(self, key, size, response["Body"]), 1 << 20)

    def _get(self, key: BlobKey, byte_range: str | None = None) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        options = {"Range": byte_range} if byte_range else {}
        try:
            response: dict[str, Any] = self._client.get_object(
                Bucket=self.bucket, Key=self.object_name(key), **options
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingBlob(f"blob {key} is missing from s3://{self.bucket}/{self.prefix}") from None
            raise
        return response

    def _head(self, key: BlobKey) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=self.object_name(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingBlob(f"blob {key} is missing from s3://{self.bucket}/{self.prefix}") from None
            raise
        return head

    def stored_size(self, key: BlobKey) -> int:
        return int(self._head(key)["ContentLength"])

    def modified(self, key: BlobKey) -> float:
        return float(self._head(key)["LastModified"].timestamp())

    def __contains__(self, key: object) -> bool:
        if not is_stored_name(key):
            return False
        try:
            self.stored_size(key)  # type: ignore[arg-type]
        except MissingBlob:
            return False
        return True

    def __iter__(self) -> Iterator[BlobKey]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if is_stored_name(name):
                    yield BlobKey(name)

    def close(self) -> None:
        """Nothing to release: the S3 client is shared by the stores of this process."""


class _ReadCache:
    """Whole blobs on local disk, at most ``limit`` bytes, least recently read evicted first.

    A blob is written to a temporary file and renamed into place, so a reader sees either
    no file or a whole one; eviction by access time (updated on every hit).
    """

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._used = sum(p.stat().st_size for p in self.directory.glob("*") if is_stored_name(p.name))

    def would_keep(self, size: int) -> bool:
        return size <= self.limit // 4

    def open(self, key: BlobKey) -> BinaryIO | None:
        path = self.directory / key
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the caller closes the returned stream
        except FileNotFoundError:
            return None
        os.utime(path)  # most recently used
        return handle

    def fill(self, key: BlobKey, body: Any) -> BinaryIO:
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := body.read(1 << 20):
                    out.write(chunk)
                size = out.tell()
            os.replace(name, self.directory / key)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        finally:
            body.close()
        handle = open(self.directory / key, "rb")  # noqa: SIM115 - the caller closes it
        with self._lock:
            self._used += size
            if self._used > self.limit:
                self._evict()
        return handle

    def forget(self, key: BlobKey) -> None:
        path = self.directory / key
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._used -= size

    def _evict(self) -> None:
        """Remove the least recently used blobs until the cache is at 3/4 of its limit."""
        entries = []
        for entry in os.scandir(self.directory):
            if is_stored_name(entry.name):
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                entries.append((stat.st_mtime, stat.st_size, entry.path))
        self._used = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if self._used <= self.limit * 3 // 4:
                break
            Path(path).unlink(missing_ok=True)  # an open reader keeps its bytes until it closes
            self._used -= size
