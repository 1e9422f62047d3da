"""One contract, run against every blob backend."""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from castore.blobs.base import BlobBackend
from castore.blobs.fs import FileBlobBackend, key_to_relpath
from castore.blobs.memory import MemoryBlobBackend
from castore.blobs.s3 import PART_SIZE, S3BlobBackend
from castore.codec import Codec
from castore.digests import CHUNK_SIZE
from castore.errors import CorruptBlob, MissingBlob, ReadOnlyStore
from castore.keys import BlobKey, check_key
from castore.opening import open_blobs, open_store
from castore.store import Store

from ..backends import S3Server

KEY_A = BlobKey("a" * 32)
KEY_B = BlobKey("0123456789abcdef" * 2)


class BackendContract:
    """Subclasses provide ``backend``; every test here must hold for each backend."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> BlobBackend:
        raise NotImplementedError

    def test_absent_key(self, backend: BlobBackend) -> None:
        assert KEY_A not in backend
        with pytest.raises(MissingBlob):
            backend.open(KEY_A)
        with pytest.raises(MissingBlob):
            backend.stored_size(KEY_A)
        backend.delete(KEY_A)  # deleting nothing is fine
        assert list(backend) == []

    def test_stage_then_publish(self, backend: BlobBackend) -> None:
        staged = backend.stage()
        staged.write(b"hello ")
        staged.write(memoryview(b"world"))
        assert staged.finish() == 11
        assert KEY_A not in backend  # not visible before publish
        backend.publish(staged, KEY_A)
        staged.abort()  # harmless after publish
        assert KEY_A in backend
        with backend.open(KEY_A) as f:
            assert f.read() == b"hello world"
        assert backend.stored_size(KEY_A) == 11
        assert list(backend) == [KEY_A]

    def test_modified_is_the_time_of_writing(self, backend: BlobBackend) -> None:
        with pytest.raises(MissingBlob):
            backend.modified(KEY_A)
        before = time.time()
        backend.put_bytes(KEY_A, b"x")
        assert before - 2 <= backend.modified(KEY_A) <= time.time() + 2
        backend.delete(KEY_A)
        with pytest.raises(MissingBlob):
            backend.modified(KEY_A)

    def test_abort_leaves_nothing(self, backend: BlobBackend) -> None:
        staged = backend.stage()
        staged.write(b"x" * 1000)
        staged.abort()
        staged.abort()
        assert list(backend) == []

    def test_publish_is_idempotent(self, backend: BlobBackend) -> None:
        backend.put_bytes(KEY_B, b"same")
        backend.put_bytes(KEY_B, b"same")
        assert list(backend) == [KEY_B]
        with backend.open(KEY_B) as f:
            assert f.read() == b"same"

    def test_delete(self, backend: BlobBackend) -> None:
        backend.put_bytes(KEY_A, b"1")
        backend.put_bytes(KEY_B, b"2")
        backend.delete(KEY_A)
        assert KEY_A not in backend and KEY_B in backend
        assert sorted(backend) == [KEY_B]

    def test_invalid_keys_are_never_present(self, backend: BlobBackend) -> None:
        assert "../etc/passwd" not in backend
        assert 42 not in backend


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> BlobBackend:
        return MemoryBlobBackend()


class TestFileBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> BlobBackend:
        return FileBlobBackend(tmp_path / "blobs")

    def test_layout_and_read_only_files(self, backend: FileBlobBackend) -> None:  # type: ignore[override]
        backend.put_bytes(KEY_B, b"data")
        path = backend.directory / "01" / "23" / KEY_B
        assert path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert key_to_relpath(KEY_B) == f"01/23/{KEY_B}"

    def test_staging_files_are_swept_by_age(self, backend: FileBlobBackend) -> None:  # type: ignore[override]
        abandoned = backend.directory / ".staging" / "tmp-crashed"  # left by a writer that died
        abandoned.write_bytes(b"abandoned")
        assert backend.sweep_staging(time.time() - 3600) == 0
        old = time.time() - 7200
        os.utime(abandoned, (old, old))
        assert backend.sweep_staging(time.time() - 3600) == 1
        assert list((backend.directory / ".staging").iterdir()) == []

    def test_a_live_staging_file_is_never_swept(self, backend: FileBlobBackend) -> None:  # type: ignore[override]
        staged = backend.stage()
        staged.write(b"still uploading")
        [live] = list((backend.directory / ".staging").iterdir())
        old = time.time() - 7200
        os.utime(live, (old, old))
        assert backend.sweep_staging(time.time() + 60) == 0  # grace 0 and older: still kept
        staged.finish()
        assert backend.sweep_staging(time.time() + 60) == 0  # finished, not yet published
        backend.publish(staged, KEY_B)
        with backend.open(KEY_B) as f:
            assert f.read() == b"still uploading"
        assert backend.sweep_staging(time.time() + 60) == 0  # published, the put not over yet
        with staged.open() as f:
            assert f.read() == b"still uploading"  # a put that settles again compares these
        staged.abort()
        assert list((backend.directory / ".staging").iterdir()) == []
        with backend.open(KEY_B) as f:
            assert f.read() == b"still uploading"

    def test_publishing_over_leftover_bytes_replaces_them(self, backend: FileBlobBackend) -> None:  # type: ignore[override]
        backend.put_bytes(KEY_B, b"left by a row collected before its file")
        staged = backend.stage()
        staged.write(b"new")
        staged.finish()
        backend.publish(staged, KEY_B)
        staged.abort()
        with backend.open(KEY_B) as f:
            assert f.read() == b"new"
        assert sorted(p.name for p in backend.path_of(KEY_B).parent.iterdir()) == [KEY_B]
        assert list((backend.directory / ".staging").iterdir()) == []  # no spare name left behind


    def test_the_sweep_takes_every_old_unheld_file_and_counts_them(  # type: ignore[override]
        self, backend: FileBlobBackend
    ) -> None:
        """Old files among fresh ones and old ones live writers hold: each old unheld file goes,
        whatever order the folder lists them in; a file exactly as old as the bound stays."""
        staging = backend.directory / ".staging"
        live = [backend.stage() for _ in range(3)]  # each holds its lock
        bound = 1_000_000_000.0
        for i in range(6):
            (staging / f"tmp-old-{i}").write_bytes(b"old")
            os.utime(staging / f"tmp-old-{i}", (bound - 10, bound - 10))
            (staging / f"tmp-fresh-{i}").write_bytes(b"fresh")
        (staging / "tmp-at-bound").write_bytes(b"at the bound")
        os.utime(staging / "tmp-at-bound", (bound, bound))
        held = [staged.path.name for staged in live]  # type: ignore[attr-defined]
        for name in held:
            os.utime(staging / name, (bound - 10, bound - 10))
        assert backend.sweep_staging(bound) == 6
        left = sorted(p.name for p in staging.iterdir())
        assert left == sorted([*held, "tmp-at-bound", *(f"tmp-fresh-{i}" for i in range(6))])
        for staged in live:
            staged.abort()

    def test_a_read_only_backend_neither_stages_nor_sweeps(  # type: ignore[override]
        self, backend: FileBlobBackend
    ) -> None:
        abandoned = backend.directory / ".staging" / "tmp-crashed"
        abandoned.write_bytes(b"abandoned")
        os.utime(abandoned, (1000.0, 1000.0))
        reader = FileBlobBackend(backend.directory, read_only=True)
        assert reader.sweep_staging(time.time()) == 0
        assert abandoned.exists(), "a read-only opening removes nothing"
        with pytest.raises(ReadOnlyStore, match=f"^the blob folder {backend.directory} is open read-only$"):
            reader.stage()

    def test_a_missing_blob_is_named_with_its_folder(self, backend: FileBlobBackend) -> None:  # type: ignore[override]
        missing = f"^blob {KEY_A} is missing from {backend.directory}$"
        for action in (backend.open, backend.stored_size, backend.modified):
            with pytest.raises(MissingBlob, match=missing):
                action(KEY_A)

    def test_keys_that_share_their_first_folder_are_both_published(  # type: ignore[override]
        self, backend: FileBlobBackend
    ) -> None:
        first, second = BlobKey("ab" + "cd" + "0" * 28), BlobKey("ab" + "ef" + "0" * 28)
        backend.put_bytes(first, b"first")
        backend.put_bytes(second, b"second")  # ab/ exists already, ab/ef/ not yet
        for key, data in ((first, b"first"), (second, b"second")):
            with backend.open(key) as f:
                assert f.read() == data

    def test_an_aborted_blob_leaves_no_open_file_and_cannot_be_published(  # type: ignore[override]
        self, backend: FileBlobBackend
    ) -> None:
        before = len(os.listdir("/proc/self/fd"))
        staged = backend.stage()
        staged.write(b"given up")
        staged.abort()
        assert len(os.listdir("/proc/self/fd")) == before, "abort closes (and unlocks) the staging file"
        with pytest.raises(AssertionError):
            backend.publish(staged, KEY_A)
        assert KEY_A not in backend


def test_check_key() -> None:
    assert check_key(KEY_A) == KEY_A
    for bad in ["A" * 32, "a" * 31, "g" * 32, "../" + "a" * 29, None]:
        with pytest.raises(ValueError):
            check_key(bad)


class TestS3Backend(BackendContract):
    @pytest.fixture
    def backend(self, s3_server: S3Server) -> BlobBackend:
        return open_blobs(s3_server.new_bucket())

    def test_large_blobs_go_up_in_parts_and_read_back_by_range(self, backend: S3BlobBackend) -> None:  # type: ignore[override]
        content = os.urandom(2 * PART_SIZE + 12345)
        staged = backend.stage()
        for i in range(0, len(content), 1 << 20):
            staged.write(content[i:i + (1 << 20)])
        assert staged.finish() == len(content)
        backend.publish(staged, KEY_A)
        staged.abort()
        assert backend.stored_size(KEY_A) == len(content)
        with backend.open(KEY_A) as f:
            f.seek(PART_SIZE + 7)
            assert f.read(100) == content[PART_SIZE + 7:PART_SIZE + 107]
            f.seek(0)
            assert f.read() == content

    def test_read_cache_keeps_hot_blobs_within_its_size(self, s3_server: S3Server, tmp_path: Path) -> None:
        backend = open_blobs(s3_server.new_bucket() + f"&cache_dir={tmp_path / 'cache'}&cache_size=1M")
        assert isinstance(backend, S3BlobBackend) and backend.cache is not None
        keys = [BlobKey(f"{i:032x}") for i in range(6)]
        for key in keys:
            backend.put_bytes(key, key.encode() * 3000)  # 96 000 bytes each
        for key in keys:
            with backend.open(key) as f:
                assert f.read() == key.encode() * 3000
        cached = {p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
        assert cached == set(keys)  # 576 000 bytes: within 1 MiB
        backend.delete(keys[0])  # never served from the cache once deleted
        with pytest.raises(MissingBlob):
            backend.open(keys[0])
        for i in range(6, 14):  # 8 more blobs overflow the cache: the least recently used go first
            key = BlobKey(f"{i:032x}")
            backend.put_bytes(key, key.encode() * 3000)
            with backend.open(key) as f:
                f.read()
        cached = {p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
        assert sum((tmp_path / "cache" / name).stat().st_size for name in cached) <= 1 << 20
        assert BlobKey(f"{13:032x}") in cached and keys[1] not in cached

    def test_a_staged_blob_is_a_file_in_the_staging_folder_until_aborted(
        self, s3_server: S3Server, tmp_path: Path
    ) -> None:
        """Staged bytes live in the backend's staging folder, are read back from there (a put that
        settles again compares them), and abort closes and removes that file."""
        backend = open_blobs(s3_server.new_bucket() + f"&staging_dir={tmp_path}")  # not the shared /tmp one
        assert isinstance(backend, S3BlobBackend)
        staging = tmp_path / "castore-s3-staging"
        before = len(os.listdir("/proc/self/fd"))
        staged = backend.stage()
        staged.write(b"staged bytes")
        [file] = list(staging.iterdir())
        staged.abort()
        assert list(staging.iterdir()) == [] and not file.exists()
        assert len(os.listdir("/proc/self/fd")) == before, "abort closes the staging file"
        with pytest.raises(AssertionError, match=r"^open\(\) needs a finished blob$"):
            staged.open()
        with pytest.raises(AssertionError):
            backend.publish(staged, KEY_A)
        assert KEY_A not in backend

        staged = backend.stage()
        staged.write(b"staged bytes")
        assert staged.finish() == 12
        with staged.open() as f:
            assert f.read() == b"staged bytes"
        # Every S3 store of a machine may share one staging folder: a sweep by any of them, however
        # short its grace, leaves a file a live put holds, and takes a crashed writer's leftover.
        leftover = staging / "tmp-crashed"
        leftover.write_bytes(b"of a writer killed mid-put")
        assert backend.sweep_staging(time.time() + 60) == 1
        [kept] = list(staging.iterdir())
        assert not leftover.exists()
        with staged.open() as f:
            assert f.read() == b"staged bytes"  # still there to upload (again)
        staged.abort()
        assert list(staging.iterdir()) == [] and not kept.exists()
        assert len(os.listdir("/proc/self/fd")) == before, "abort closes the staging file and its lock"

        staged = backend.stage()
        staged.write(b"staged bytes")
        staged.finish()
        [kept] = list(staging.iterdir())
        kept.unlink()  # a tmp cleaner (systemd-tmpfiles) took it: the put fails elsewhere, abort still cleans up
        staged.abort()
        assert len(os.listdir("/proc/self/fd")) == before

    def test_unknown_url_options_are_refused(self, s3_server: S3Server) -> None:
        with pytest.raises(TypeError, match="bogus"):
            open_blobs(s3_server.new_bucket() + "&bogus=1")


class TestS3ReadCacheHealing:
    """A damaged copy in the S3 backend's read cache is dropped and read again from the bucket.

    The reader verifies, the backend only forgets its copy (``refresh``): a read succeeds
    when the bucket's copy verifies, and stays CorruptBlob when the bucket's copy is bad.
    """

    TEXT = b"".join(b"%d squared is %d\n" % (i, i * i) for i in range(200_000))  # ~4.6 MB, kept as zstd
    NOISE = os.urandom(3 * (1 << 20) + 777)  # raw: does not compress

    @pytest.fixture
    def cached_store(self, s3_server: S3Server, tmp_path: Path) -> Iterator[Store]:
        blobs = s3_server.new_bucket() + f"&cache_dir={tmp_path / 'cache'}&cache_size=64M"
        with open_store(metadata=f"sqlite:///{tmp_path / 'metadata.sqlite3'}", blobs=blobs, create=True,
                        inline_max=0) as store:
            frame = zstandard.ZstdCompressor(level=1).compress(self.TEXT)
            store.put_zstd("/text", io.BytesIO(frame), version=1, size=len(self.TEXT))
            store.put("/noise", io.BytesIO(self.NOISE), version=1)
            for name in ("/text", "/noise"):
                assert store.read_bytes(name) == self.content(name)  # fills the cache
            yield store

    def content(self, name: str) -> bytes:
        return self.TEXT if name == "/text" else self.NOISE

    @staticmethod
    def cached_file(store: Store, name: str) -> Path:
        backend = store.blobs
        assert isinstance(backend, S3BlobBackend) and backend.cache is not None
        return backend.cache.directory / store.lookup(name).blob.key

    @staticmethod
    def bucket_bytes(store: Store, name: str) -> bytes:
        backend = store.blobs
        assert isinstance(backend, S3BlobBackend)
        with backend._get(store.lookup(name).blob.key)["Body"] as body:
            return bytes(body.read())

    @staticmethod
    def flip_in_bucket(store: Store, name: str, at: int) -> None:
        backend = store.blobs
        assert isinstance(backend, S3BlobBackend)
        key = store.lookup(name).blob.key
        data = bytearray(TestS3ReadCacheHealing.bucket_bytes(store, name))
        data[at] ^= 0x01
        backend._client.put_object(Bucket=backend.bucket, Key=backend.object_name(key), Body=bytes(data))

    @staticmethod
    def flip(path: Path, at: int) -> None:
        path.chmod(0o644)
        with open(path, "r+b") as f:
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0x01]))

    @pytest.mark.parametrize("name", ["/text", "/noise"])
    @pytest.mark.parametrize("where", ["start", "middle", "end"])
    def test_a_damaged_cached_copy_is_read_again_from_the_bucket(self, cached_store: Store, name: str,
                                                                 where: str) -> None:
        cached = self.cached_file(cached_store, name)
        size = cached.stat().st_size
        self.flip(cached, {"start": 10, "middle": size // 2, "end": size - 2}[where])
        assert cached_store.read_bytes(name) == self.content(name)
        assert cached.read_bytes() == self.bucket_bytes(cached_store, name)  # the cache is healed

    def test_a_range_read_past_a_damaged_cached_chunk(self, cached_store: Store) -> None:
        cached = self.cached_file(cached_store, "/noise")
        self.flip(cached, 2 * CHUNK_SIZE + 5)
        with cached_store.open_file("/noise") as reader:
            reader.seek_content(CHUNK_SIZE + 3)
            assert reader.read() == self.NOISE[CHUNK_SIZE + 3:]
        assert cached.read_bytes() == self.NOISE

    def test_stored_frames_from_a_damaged_cached_copy(self, cached_store: Store) -> None:
        cached = self.cached_file(cached_store, "/text")
        stored = self.bucket_bytes(cached_store, "/text")
        self.flip(cached, len(stored) - 2)  # after the first pieces went out
        with cached_store.open_file("/text") as reader:
            assert reader.codec is Codec.ZSTD
            assert b"".join(reader.verified_stored()) == stored
        assert cached.read_bytes() == stored

    @pytest.mark.parametrize("name", ["/text", "/noise"])
    def test_a_damaged_bucket_copy_stays_corrupt(self, cached_store: Store, name: str) -> None:
        size = self.cached_file(cached_store, name).stat().st_size
        self.flip_in_bucket(cached_store, name, size // 2)
        self.flip(self.cached_file(cached_store, name), size // 2)  # damaged in the cache too
        with pytest.raises(CorruptBlob):
            cached_store.read_bytes(name)
        with pytest.raises(CorruptBlob), cached_store.open_file(name) as reader:  # and so from a fresh cache
            reader.read()

    def test_a_healthy_cache_is_read_without_going_to_the_bucket(self, cached_store: Store) -> None:
        """The cached copy is used as long as it verifies: a damaged bucket copy goes unnoticed."""
        size = self.cached_file(cached_store, "/noise").stat().st_size
        self.flip_in_bucket(cached_store, "/noise", size // 2)
        assert cached_store.read_bytes("/noise") == self.NOISE


@pytest.mark.parametrize("already_there", [False, True])
def test_a_staged_blob_is_fsynced_before_it_is_linked_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, already_there: bool
) -> None:
    """A spy on os.fsync and os.link records which file each acts on (by inode): the staged
    file's own descriptor is fsynced before any link to it is made, whether the key is new
    or its bytes are replaced (the spare-link path)."""
    backend = FileBlobBackend(tmp_path / "blobs")
    key = BlobKey("ab" + "0" * 62)
    if already_there:
        backend.path_of(key).parent.mkdir(parents=True)
        backend.path_of(key).write_bytes(b"left behind")
    events: list[tuple[str, int]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def link(source: str | os.PathLike[str], destination: str | os.PathLike[str], **options: object) -> None:
        events.append(("link", os.stat(source).st_ino))
        real_link(source, destination, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    staged = backend.stage()
    staged.write(b"content")
    staged.finish()
    assert staged.path is not None
    inode = staged.path.stat().st_ino
    backend.publish(staged, key)
    assert backend.path_of(key).read_bytes() == b"content"
    assert [e for e in events if e[1] == inode][:2] == [("fsync", inode), ("link", inode)]
