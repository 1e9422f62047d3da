"""A flipped byte in any kind of stored blob is never served, whichever way it is read.

Seven blobs (inline/file x raw/zstd, files under and over 1 MiB, a zstd frame made by
castore's client) are read every way — the store, identity GET, GET as Filetracker's
client sends it, Range GETs in the middle, zstd GET, castore's client with and without
its cache, the unmodified Filetracker client with and without its cache — first intact
(every read must return the right bytes), then with one byte flipped: no read may
succeed with wrong bytes, and no wrong file may appear at a destination or in a cache.
"""

from __future__ import annotations

import io
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import xxhash
import zstandard
from filetracker.client import Client as FiletrackerClient
from filetracker.client import FiletrackerError as FiletrackerClientError

from castore.client import Client
from castore.client.cache import LocalCache
from castore.codec import Codec
from castore.digests import CHUNK_SIZE, ChunkDigester
from castore.errors import CorruptBlob, FiletrackerError
from castore.keys import Hasher
from castore.reading import MAX_BLOCK, STORED_PIECE, BlobReader
from castore.store import Store

from ..server_process import castore_server

MIB = 1 << 20


def _text(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b"%d %d %d\n" % (rng.randrange(10**6), rng.randrange(10**6), len(out))
    return bytes(out[:size])


@dataclass
class Kind:
    name: str
    content: bytes
    codec: str
    inline: bool
    via_client: bool = False

    @property
    def path(self) -> str:
        return f"/corrupt/{self.name}"


KINDS = [
    Kind("inline-raw", os.urandom(40_000), "raw", True),
    Kind("inline-zstd", _text(1, 100_000), "zstd", True),
    Kind("file-raw", os.urandom(600_000), "raw", False),
    Kind("file-zstd", _text(2, 600_000), "zstd", False),
    Kind("big-raw", os.urandom(3 * MIB + 12345), "raw", False),
    Kind("big-zstd", _text(3, 3 * MIB + 54321), "zstd", False),
    Kind("big-zstd-client-frame", _text(4, 3 * MIB + 777), "zstd", False, via_client=True),
]


@dataclass
class Outcome:
    read: str
    served: bytes | None
    """The bytes a read returned as a success, or None when it failed."""


class Reads:
    """Every way of reading one path; each returns the bytes it got as a success, or None."""

    def __init__(self, root: Path, url: str, work: Path) -> None:
        self.root, self.url, self.work = root, url, work
        self.n = 0

    def _fresh(self, what: str) -> Path:
        self.n += 1
        folder = self.work / f"{what}-{self.n}"
        folder.mkdir(parents=True)
        return folder

    def all(self, kind: Kind) -> Iterator[tuple[str, Callable[[], bytes | None]]]:
        path, size = kind.path, len(kind.content)
        yield "store", lambda: self.store(path)
        yield "store-range", lambda: self.store_range(path, size // 2, size // 2 + 300_000)
        yield "GET identity", lambda: self.get(path, {"Accept-Encoding": "identity"})
        yield "GET like filetracker", lambda: self.get(path, {"Accept-Encoding": "gzip, deflate"})
        yield "GET zstd", lambda: self.get(path, {"Accept-Encoding": "zstd"})
        for accept in ("identity", "zstd"):
            yield f"Range middle ({accept})", lambda a=accept: self.get(  # type: ignore[misc]
                path, {"Accept-Encoding": a, "Range": f"bytes={size // 2}-{size // 2 + 300_000}"}
            )
            yield f"Range tail ({accept})", lambda a=accept: self.get(  # type: ignore[misc]
                path, {"Accept-Encoding": a, "Range": "bytes=-1000"}
            )
        yield "castore client get_file", lambda: self.castore_file(path, cached=False)
        yield "castore client get_file cached", lambda: self.castore_file(path, cached=True)
        yield "castore client get_stream", lambda: self.castore_stream(path)
        yield "filetracker get_file", lambda: self.filetracker_file(path, cached=False)
        yield "filetracker get_file cached", lambda: self.filetracker_file(path, cached=True)
        yield "filetracker get_stream", lambda: self.filetracker_stream(path)

    def expected(self, read: str, kind: Kind) -> bytes:
        size = len(kind.content)
        if "middle" in read or read == "store-range":
            return kind.content[size // 2 : size // 2 + 300_001 if "Range" in read else size // 2 + 300_000]
        if "tail" in read:
            return kind.content[-1000:]
        return kind.content

    # -- the readers ---------------------------------------------------------------------

    def store(self, path: str) -> bytes | None:
        with Store.open(self.root) as store:
            return store.read_bytes(path)

    def store_range(self, path: str, start: int, end: int) -> bytes | None:
        with Store.open(self.root) as store, store.open_file(path) as reader:
            reader.seek_content(start)
            return reader.read(end - start)

    def get(self, path: str, headers: dict[str, str]) -> bytes | None:
        with httpx.Client(timeout=30) as http, http.stream("GET", f"{self.url}/files{path}", headers=headers) as r:
            body = b"".join(r.iter_raw())  # raises when the server cuts the body short
            if r.status_code not in (200, 206):
                return None
            if r.headers.get("content-encoding") == "zstd":
                # A complete zstd body that does not decode would be wrong bytes served.
                try:
                    return zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read()
                except zstandard.ZstdError:
                    return b"<undecodable zstd body>"
            assert r.headers.get("content-encoding") in (None, "identity")
            return body

    def castore_file(self, path: str, *, cached: bool) -> bytes | None:
        folder = self._fresh("castore")
        cache = LocalCache(folder / "cache")
        client = Client(local_store=cache if cached else None, remote_url=self.url)
        destination = folder / "out"
        try:
            client.get_file(path, destination)
        finally:
            client.close()
            self.leftovers(folder, destination, cache.file_path(path))
        return destination.read_bytes()

    def castore_stream(self, path: str) -> bytes | None:
        client = Client(local_store=None, remote_url=self.url)
        try:
            stream, _ = client.get_stream(path)
            with stream:
                return stream.read()
        finally:
            client.close()

    def filetracker_file(self, path: str, *, cached: bool) -> bytes | None:
        folder = self._fresh("filetracker")
        client = (
            FiletrackerClient(cache_dir=str(folder / "cache"), remote_url=self.url)
            if cached
            else FiletrackerClient(local_store=None, remote_url=self.url)
        )
        destination = folder / "out"
        try:
            client.get_file(path, str(destination))
        finally:
            self.leftovers(folder, destination, folder / "cache" / "files" / path.lstrip("/"))
        return destination.read_bytes()

    def filetracker_stream(self, path: str) -> bytes | None:
        client = FiletrackerClient(local_store=None, remote_url=self.url)
        stream, _ = client.get_stream(path)
        return bytes(stream.read())

    # -- what a failed read may leave behind -------------------------------------------------

    left_behind: list[tuple[Path, bytes]]

    def leftovers(self, folder: Path, *files: Path) -> None:
        """Record every file at a destination or in a cache, to compare with the content later."""
        for file in files:
            if file.exists():
                self.left_behind.append((file, file.read_bytes()))


def _flip_stored_byte(root: Path, kind: Kind) -> None:
    with Store.open(root) as store:
        info = store.stat(kind.path)
        assert info.codec == kind.codec, (kind.name, info.codec)
        path = store.blobs.path_of(info.key)  # type: ignore[attr-defined]
        assert path.exists() != kind.inline, kind.name
    if kind.inline:
        with sqlite3.connect(root / "metadata.sqlite3") as db:
            (data,) = db.execute("SELECT data FROM blobs WHERE key = ?", (info.key,)).fetchone()
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x20
            db.execute("UPDATE blobs SET data = ? WHERE key = ?", (bytes(damaged), info.key))
        return
    path.chmod(0o644)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2 + 7] ^= 0x20
    path.write_bytes(bytes(damaged))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("verified") / "store"
    Store.open(root, create=True).close()
    with castore_server(root) as url:
        with Store.open(root) as store:
            for kind in KINDS:
                if not kind.via_client:
                    store.put(kind.path, kind.content, version=1000)
        uploads = tmp_path_factory.mktemp("uploads")
        client = Client(local_store=None, remote_url=url)
        for kind in KINDS:
            if kind.via_client:
                (uploads / kind.name).write_bytes(kind.content)
                client.put_file(f"{kind.path}@1000", str(uploads / kind.name))
        client.close()
        yield root, url


REFUSALS = (CorruptBlob, FiletrackerError, FiletrackerClientError, httpx.RemoteProtocolError)
"""How each reader refuses a damaged blob: the store raises CorruptBlob, castore's client its
FiletrackerError, Filetracker's client its own, and a raw GET sees the body cut short (a
refused GET with a status is None). Anything else, a crash included, fails the test."""


def _read_everything(reads: Reads) -> list[tuple[Kind, str, bytes | None, bytes]]:
    outcomes = []
    for kind in KINDS:
        for read, run in reads.all(kind):
            started = time.monotonic()
            try:
                served = run()
            except REFUSALS:
                served = None
            if os.environ.get("CASTORE_TEST_TRACE"):
                print(kind.name, read, served is not None, round(time.monotonic() - started, 2), flush=True)
            outcomes.append((kind, read, served, reads.expected(read, kind)))
    return outcomes


@pytest.mark.slow
def test_a_flipped_byte_is_never_served(served: tuple[Path, str], tmp_path: Path) -> None:
    root, url = served
    reads = Reads(root, url, tmp_path)
    reads.left_behind = []

    intact = _read_everything(reads)
    wrong_when_intact = [(k.name, r) for k, r, got, want in intact if got != want]
    assert wrong_when_intact == [], "reads of intact blobs must all succeed with the right bytes"

    for kind in KINDS:
        _flip_stored_byte(root, kind)
    reads.left_behind = []
    damaged = _read_everything(reads)

    wrong = [(k.name, r) for k, r, got, want in damaged if got is not None and got != want]
    succeeded = [(k.name, r) for k, r, got, want in damaged if got is not None]
    print(f"\nreads tried: {len(damaged)}, wrong bytes served: {len(wrong)}, "
          f"succeeded with the right bytes: {len(succeeded) - len(wrong)}")
    assert wrong == []
    # A read succeeds only where it never touched the damaged chunk: a Range in the
    # intact tail of a raw file over 1 MiB (the flip is in its middle chunk).
    assert set(succeeded) <= {("big-raw", "Range tail (identity)"), ("big-raw", "Range tail (zstd)")}
    assert ("big-raw", "Range tail (identity)") in succeeded
    files = {k.path: k.content for k in KINDS}
    bad_files = [str(path) for path, data in reads.left_behind if data not in files.values()]
    assert bad_files == [], "no wrong file at a destination or in a cache"
    assert reads.left_behind == [], "a failed read leaves no file behind at all"


def test_stored_frames_are_passed_through_whole_and_bounded(store: Store) -> None:
    """Several frames, a skippable frame, and a highly compressible content (blocks of 128 KiB
    from a few bytes) come out of verified_stored() exactly as stored."""
    text = b"".join(b"%d %d\n" % (i, i * i) * 50_000 for i in range(40))
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    frames = (zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text) + skippable
              + zstandard.ZstdCompressor(level=1).compress(b"tail" * 1000))
    store.put_zstd("/frames", io.BytesIO(frames), version=1, size=len(text) + 4000)
    with store.open_file("/frames") as reader:
        assert b"".join(reader.verified_stored()) == frames
    assert store.read_bytes("/frames") == text + b"tail" * 1000


def test_serve_passes_verify_first_to_its_workers(tmp_path: Path) -> None:
    """`castore serve --verify-first never` reaches the workers: a damaged large file is then cut, not a 500."""
    root = tmp_path / "vf"
    with Store.open(root, create=True) as store:
        store.put("/big.bin", os.urandom(3 << 20), version=1)
        info = store.stat("/big.bin")
    blob = next(p for p in (root / "blobs").rglob("*") if p.is_file() and ".staging" not in p.parts)
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    for mode, status in (("always", 500), ("never", 200)):
        with castore_server(root, "--verify-first", mode) as url, \
                httpx.stream("GET", f"{url}/files/big.bin", headers={"Accept-Encoding": "identity"}) as response:
            assert response.status_code == status, mode
            if status == 200:
                with pytest.raises(httpx.HTTPError):
                    response.read()  # the connection is cut at the damaged chunk
    assert info.size == 3 << 20


SMALL_KINDS = [kind for kind in KINDS if len(kind.content) <= MIB and not kind.via_client]


def test_a_damaged_small_file_is_a_500_every_way(tmp_path: Path) -> None:
    """Files up to 1 MiB are verified before the headers go out, whatever the answer's
    form: stored zstd frames to a zstd client, a Range, the web page's download. A
    damaged one answers 500 with the usual one-line message, never headers and a cut body."""
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        for kind in SMALL_KINDS:
            store.put(kind.path, kind.content, version=1000)
    for kind in SMALL_KINDS:
        _flip_stored_byte(root, kind)
    reads = [("/files{}", {"Accept-Encoding": "zstd"}), ("/files{}", {"Accept-Encoding": "identity"}),
             ("/files{}", {"Accept-Encoding": "gzip"}),
             ("/files{}", {"Accept-Encoding": "zstd", "Range": "bytes=-1000"}),
             ("/files{}", {"Accept-Encoding": "zstd", "Range": "bytes=10-"}),
             ("/ui/download{}?version=1000", {})]
    answers = {}
    with castore_server(root, "--gzip") as url, httpx.Client(base_url=url, timeout=30) as http:
        for kind in SMALL_KINDS:
            for where, headers in reads:
                try:
                    r = http.get(where.format(kind.path), headers=headers)
                    answers[kind.name, where, str(headers)] = (r.status_code, r.headers.get("x-exception", ""))
                except httpx.HTTPError as e:  # the body was cut after a 200
                    answers[kind.name, where, str(headers)] = (0, type(e).__name__)
    wrong = {read: answer for read, answer in answers.items()
             if answer[0] != 500 or "failed verification" not in answer[1]}
    assert wrong == {}


# -- a second copy after a failed verification (BlobReader's refetch) -------------------------


def _refetching_reader(
    stored: bytes, content: bytes, codec: Codec, copies: list[bytes], *, key_mode: bool = False
) -> tuple[BlobReader, list[int]]:
    """A reader of ``stored`` whose refetch hands out ``copies`` in turn; the list counts the calls."""
    calls: list[int] = []

    def refetch() -> io.BytesIO | None:
        calls.append(1)
        return io.BytesIO(copies[len(calls) - 1]) if len(calls) <= len(copies) else None

    digester = ChunkDigester()
    digester.update(content)
    hasher = Hasher(7)
    hasher.update(content)
    reader = BlobReader(io.BytesIO(stored), codec=codec, key=hasher.key(), size=len(content),
                        stored_size=len(stored), digests=None if key_mode else digester.digests(), name="/x",
                        version=1, key_hasher=lambda: Hasher(7), refetch=refetch)
    return reader, calls


def _damaged(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


@pytest.mark.parametrize("key_mode", [False, True])
def test_a_failed_chunk_is_read_again_from_a_fresh_copy_once(key_mode: bool) -> None:
    content = os.urandom(3 * CHUNK_SIZE + 100)
    # in key mode, chunks are handed out before the key is checked: only the last one can still be healed
    damage = 3 * CHUNK_SIZE + 9 if key_mode else 2 * CHUNK_SIZE + 9
    reader, calls = _refetching_reader(_damaged(content, damage), content, Codec.RAW, [content], key_mode=key_mode)
    with reader:
        assert reader.read() == content
    assert calls == [1]
    if key_mode:
        assert reader.computed_digests is not None
    reader, calls = _refetching_reader(_damaged(content, 5), content, Codec.RAW,
                                       [_damaged(content, 5)] * 2, key_mode=key_mode)
    with pytest.raises(CorruptBlob), reader:
        reader.read()
    assert calls == [1]  # one second copy, never more


def test_a_fresh_copy_failing_later_is_corrupt_after_exactly_one_refetch() -> None:
    """Damage in two chunks: the local copy fails in chunk 0, the fresh copy in chunk 2. A
    second refetch (here a good copy) is never asked for: the source failed too, so CorruptBlob."""
    content = os.urandom(3 * CHUNK_SIZE + 100)
    reader, calls = _refetching_reader(_damaged(content, 9), content, Codec.RAW,
                                       [_damaged(content, 2 * CHUNK_SIZE + 9), content])
    with pytest.raises(CorruptBlob), reader:
        reader.read()
    assert calls == [1]


def test_key_mode_refuses_a_fresh_copy_that_differs_in_what_was_handed_out() -> None:
    content = os.urandom(2 * CHUNK_SIZE + 100)
    other = _damaged(content, 3)  # differs in chunk 0, already handed out
    reader, _ = _refetching_reader(_damaged(content, CHUNK_SIZE + 1), content, Codec.RAW, [other], key_mode=True)
    with pytest.raises(CorruptBlob, match="changed while it was read"), reader:
        reader.read()


def test_stored_frames_go_on_from_a_fresh_copy_only_if_it_starts_with_what_was_sent() -> None:
    content = b"".join(b"%d %d\n" % (i, i * 7) for i in range(400_000))
    frame = zstandard.ZstdCompressor(level=1).compress(content)
    assert len(frame) > 2 * STORED_PIECE  # pieces go out before the damage is reached
    reader, calls = _refetching_reader(_damaged(frame, len(frame) - 3), content, Codec.ZSTD, [frame])
    with reader:
        assert b"".join(reader.verified_stored()) == frame
    assert calls == [1]
    other = zstandard.ZstdCompressor(level=9).compress(content)  # the same content, other bytes
    reader, _ = _refetching_reader(_damaged(frame, len(frame) - 3), content, Codec.ZSTD, [other])
    with pytest.raises(CorruptBlob, match="changed while it was read"), reader:
        b"".join(reader.verified_stored())


# -- verified_stored and seek_content at their edges, in-process (scripts/mutate.sh's reading tests) --


class _Trickle(io.RawIOBase):
    """Stored bytes handed out at most ``step`` at a time (a socket or a slow disk)."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._data, self._at, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        piece = self._data[self._at : self._at + min(self._step, len(buffer))]
        buffer[: len(piece)] = piece
        self._at += len(piece)
        return len(piece)


def _zstd_reader(stored: bytes, content: bytes, *, trickle: bool = False) -> BlobReader:
    digester = ChunkDigester()
    digester.update(content)
    hasher = Hasher(7)
    hasher.update(content)
    source: Any = _Trickle(stored) if trickle else io.BytesIO(stored)
    return BlobReader(source, codec=Codec.ZSTD, key=hasher.key(), size=len(content), stored_size=len(stored),
                      digests=digester.digests(), name="/z", version=1)


def _passed_through(stored: bytes, content: bytes, *, trickle: bool = False) -> bytes:
    with _zstd_reader(stored, content, trickle=trickle) as reader:
        out = b"".join(reader.verified_stored())
        assert reader.read() == b""  # the end was reached and checked: nothing more
    return out


def _stored_refusal(stored: bytes, content: bytes) -> str:
    with pytest.raises(CorruptBlob) as refused, _zstd_reader(stored, content) as reader:
        b"".join(reader.verified_stored())
    return str(refused.value).removeprefix("/z: the stored content ")


@pytest.mark.parametrize(
    "options",
    [
        {"level": 1},
        {"level": 3, "write_checksum": True},
        {"level": 1, "write_content_size": False},
        {"level": 19, "write_checksum": True, "write_content_size": False},
    ],
    ids=["plain", "checksum", "no-size", "no-size-checksum"],
)
@pytest.mark.parametrize("size", [0, 100, 300, 70_000, 3 * CHUNK_SIZE + 17])
def test_every_frame_shape_is_passed_through_whole(options: dict[str, Any], size: int) -> None:
    """Header fields of every width (content size of 0, 1, 2, 4 bytes or none; window
    descriptor or single segment), raw, RLE and compressed blocks, an optional checksum;
    fed whole and a few bytes at a time."""
    content = _text(size, size // 2) + b"\0" * (size - size // 2)  # text, then a run: RLE blocks
    frame = zstandard.ZstdCompressor(**options).compress(content)
    noise = os.urandom(200_000)  # incompressible: raw blocks
    noisy = zstandard.ZstdCompressor(**options).compress(noise)
    for stored, expected in ((frame, content), (noisy, noise), (frame + noisy, content + noise)):
        assert _passed_through(stored, expected) == stored
        assert _passed_through(stored, expected, trickle=True) == stored


def test_damaged_frames_are_refused_with_their_reason() -> None:
    content = _text(1, 3 * CHUNK_SIZE)
    frame = zstandard.ZstdCompressor(level=1).compress(content)
    assert _stored_refusal(b"garbage!" + frame, content) == "is not a zstd frame"
    assert _stored_refusal(frame[: len(frame) // 2], content) == "ends inside a zstd frame"
    assert _stored_refusal(frame[:2], content) == "ends inside a zstd frame"
    assert _stored_refusal(frame, content + b"x") == f"has {len(content)} bytes, {len(content) + 1} recorded"
    longer = content + b"tail"
    frame_of_longer = zstandard.ZstdCompressor(level=1).compress(longer)
    assert _stored_refusal(frame_of_longer, content) == f"is longer than its recorded {len(content)} bytes"
    other = content[: CHUNK_SIZE + 5] + b"#" + content[CHUNK_SIZE + 6 :]
    assert _stored_refusal(zstandard.ZstdCompressor(level=1).compress(other), content) == \
        f"does not match its digest at bytes {CHUNK_SIZE}-{2 * CHUNK_SIZE - 1}"
    header_end = 4 + 1 + 1 + 4  # magic, descriptor, window, 4-byte content size (3 MiB, not single segment)
    reserved = bytearray(frame)
    reserved[header_end] |= 0x06  # block type 3: reserved
    oversized = bytearray(frame)
    oversized[header_end : header_end + 3] = (((MAX_BLOCK + 1) << 3) | (2 << 1)).to_bytes(3, "little")
    for bad in (reserved, oversized):
        assert _stored_refusal(bytes(bad), content) == "has an invalid zstd block"


def test_verified_stored_and_seek_content_only_where_they_apply() -> None:
    content = _text(2, 1000)
    frame = zstandard.ZstdCompressor().compress(content)
    reader = _zstd_reader(frame, content)
    list(reader.verified_stored())
    with pytest.raises(ValueError, match=r"^verified_stored\(\) only before reading, on a zstd blob with digests$"):
        list(reader.verified_stored())  # twice
    with pytest.raises(ValueError, match=r"^seek_content\(\) only before reading, on a blob with digests$"):
        reader.seek_content(0)
    raw, _ = _refetching_reader(content, content, Codec.RAW, [])
    with pytest.raises(ValueError, match="on a zstd blob with digests"):
        list(raw.verified_stored())
    keyed, _ = _refetching_reader(frame, content, Codec.ZSTD, [], key_mode=True)
    with pytest.raises(ValueError, match="on a zstd blob with digests"):
        list(keyed.verified_stored())
    with pytest.raises(ValueError, match="on a blob with digests"):
        keyed.seek_content(0)
    for offset, expected in ((0, content), (len(content), b""), (999, content[999:])):
        reader = _zstd_reader(frame, content)
        reader.seek_content(offset)
        assert reader.read() == expected
    for offset in (-1, len(content) + 1):
        with pytest.raises(ValueError, match=f"^offset {offset} is outside the 1000 bytes of /z$"):
            _zstd_reader(frame, content).seek_content(offset)


def test_reading_in_small_pieces_and_then_in_chunks_gives_every_byte_once() -> None:
    content = os.urandom(2 * CHUNK_SIZE + 5)
    reader, _ = _refetching_reader(content, content, Codec.RAW, [])
    assert reader.readinto(bytearray(0)) == 0
    head = reader.read(10) + reader.read(10)
    with pytest.raises(ValueError, match="only before reading"):
        reader.seek_content(0)  # reading has started
    assert head + b"".join(reader.chunks()) == content
    assert reader.read(10) == b""


def test_blob_reader_refusals_say_what_is_wrong() -> None:
    def refusal(reader: BlobReader) -> str:
        with pytest.raises(CorruptBlob) as refused, reader:
            reader.read()
        return str(refused.value).removeprefix("/x: the stored content ")

    content = os.urandom(CHUNK_SIZE + 100)
    short_digests = BlobReader(io.BytesIO(content), codec=Codec.RAW, key=Hasher(7).key(), size=len(content),
                               stored_size=len(content), digests=b"\0" * 16, name="/x", version=1)
    assert refusal(short_digests) == "has digests that do not fit its size"
    longer, _ = _refetching_reader(content + b"!", content, Codec.RAW, [])
    assert refusal(longer) == f"is longer than its recorded {len(content)} bytes"
    keyed, _ = _refetching_reader(_damaged(content, 7), content, Codec.RAW, [], key_mode=True)
    assert refusal(keyed) == "does not match its key"
    # a fresh copy too short for the chunks already handed out, and one that differs in them
    keyed, _ = _refetching_reader(_damaged(content, CHUNK_SIZE + 1), content, Codec.RAW, [content[:100]],
                                  key_mode=True)
    assert refusal(keyed) == f"has fewer than the {CHUNK_SIZE} bytes already read"
    keyed, _ = _refetching_reader(_damaged(content, CHUNK_SIZE + 1), content, Codec.RAW,
                                  [_damaged(content, 3)], key_mode=True)
    assert refusal(keyed) == "changed while it was read"
    frame = zstandard.ZstdCompressor().compress(content)
    cut = _zstd_reader(frame[: len(frame) // 3], content)
    with pytest.raises(CorruptBlob, match=f"^/z: the stored content ends before byte {len(content)}$"):
        cut.seek_content(CHUNK_SIZE + 50)


def test_seeking_into_a_zstd_blob_and_reading_trickled_or_empty_contents() -> None:
    """A Range into a later chunk of a zstd blob decodes and drops what comes before it; a
    stored stream that hands out a few bytes at a time, and an empty content, read whole."""
    content = _text(3, 2 * CHUNK_SIZE + 300)
    frame = zstandard.ZstdCompressor().compress(content)
    reader = _zstd_reader(frame, content)
    reader.seek_content(CHUNK_SIZE + 50)
    assert reader.read() == content[CHUNK_SIZE + 50 :]
    assert _zstd_reader(frame, content, trickle=True).read() == content
    empty = zstandard.ZstdCompressor().compress(b"")
    assert _zstd_reader(empty, b"").read() == b""
    raw, _ = _refetching_reader(content, content, Codec.RAW, [])
    raw.seek_content(len(content))
    assert raw.read() == b""


# -- what scripts/mutate.sh's reading run found untested (issue #24) ----------------------------


def _handmade_frame(content: bytes, *, dict_flag: int, fcs_flag: int, single: bool, checksum: bool) -> bytes:
    """One zstd frame of one raw block, with header fields of the widths zstd's compressor never
    picks for small contents: a dictionary ID field (of value 0: no dictionary), an oversized
    content size field (RFC 8878, 3.1.1.1)."""
    descriptor = (fcs_flag << 6) | (single << 5) | (checksum << 2) | dict_flag
    frame = b"\x28\xb5\x2f\xfd" + bytes([descriptor]) + (b"" if single else bytes([0x38]))  # window 128 KiB
    frame += bytes((0, 1, 2, 4)[dict_flag])
    size = len(content) - 256 if fcs_flag == 1 else len(content)
    frame += size.to_bytes((1 if single else 0, 2, 4, 8)[fcs_flag], "little")
    frame += ((len(content) << 3) | 1).to_bytes(3, "little") + content  # the last block, raw
    if checksum:
        frame += xxhash.xxh64(content).intdigest().to_bytes(8, "little")[:4]
    return frame


def _skippable(data: bytes, low: int = 0) -> bytes:
    return bytes([0x50 | low]) + b"\x2a\x4d\x18" + len(data).to_bytes(4, "little") + data


def test_frames_with_every_header_field_width_are_passed_through() -> None:
    """Dictionary ID fields of 1, 2 and 4 bytes, content size fields of 2, 4 and 8 bytes, with
    and without a window descriptor and a checksum, followed by another frame: each header is
    cut where it ends, or the next unit would start in the wrong place."""
    content = _text(5, 1000)
    shapes = [
        {"dict_flag": 1, "fcs_flag": 1, "single": False, "checksum": False},
        {"dict_flag": 2, "fcs_flag": 2, "single": False, "checksum": True},
        {"dict_flag": 3, "fcs_flag": 3, "single": True, "checksum": False},
        {"dict_flag": 1, "fcs_flag": 1, "single": True, "checksum": True},
    ]
    tail = zstandard.ZstdCompressor().compress(b"tail")
    for shape in shapes:
        stored = _handmade_frame(content, **shape) + tail
        assert zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True).read() == content + b"tail"
        assert _passed_through(stored, content + b"tail") == stored, shape


def test_skippable_frames_of_every_magic_and_alone_are_passed_through() -> None:
    """Any of the 16 skippable magics (0x184D2A50-5F) is kept as is and not decoded; a blob
    whose stored bytes are only a skippable frame holds the empty content."""
    content = _text(6, 5000)
    frame = zstandard.ZstdCompressor().compress(content)
    for low in (0, 1, 0xE, 0xF):
        stored = _skippable(b"castore", low) + frame + _skippable(b"", low)
        assert _passed_through(stored, content) == stored, low
    assert _passed_through(_skippable(b"note"), b"") == _skippable(b"note")


def test_stored_bytes_cut_anywhere_are_refused_as_cut() -> None:
    """The stored bytes end inside a skippable frame's size or data, a frame's descriptor, its
    header, a block header or the checksum: each is "ends inside a zstd frame", not a crash."""
    content = _text(7, 3000)
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(content)
    skippable = _skippable(b"0123456789")
    stored = skippable + frame
    header = 4 + 1 + 2  # magic, descriptor (single segment), 2-byte content size
    cuts = {
        "skippable size": 6,
        "skippable data": 12,
        "descriptor": len(skippable) + 4,
        "header": len(skippable) + 6,
        "block header": len(skippable) + header + 1,
        "checksum": len(stored) - 2,
    }
    assert frame[4] & 0x23 == 0x20 and (frame[4] >> 6) == 1, "a single-segment frame with a 2-byte size"
    refusals = {where: _stored_refusal(stored[:cut], content) for where, cut in cuts.items()}
    assert refusals == dict.fromkeys(cuts, "ends inside a zstd frame")


def test_bytes_that_only_look_skippable_are_not_a_zstd_frame() -> None:
    content = _text(8, 100)
    frame = zstandard.ZstdCompressor().compress(content)
    assert _stored_refusal(b"\x50\x00\x00\x00" + frame, content) == "is not a zstd frame"
    assert _stored_refusal(b"\x28\x2a\x4d\x18" + frame, content) == "is not a zstd frame"


def test_undecodable_blocks_are_refused_as_such_every_way() -> None:
    content = _text(9, 4000)
    frame = bytearray(zstandard.ZstdCompressor(level=3).compress(content))
    assert frame[4] & 0x20, "single segment: the first block header follows the 2-byte size"
    first_block = 4 + 1 + 2
    assert (int.from_bytes(frame[first_block : first_block + 3], "little") >> 1) & 3 == 2, "a compressed block"
    frame[first_block + 3 : first_block + 8] = b"\xff" * 5  # its literals section: nonsense
    assert _stored_refusal(bytes(frame), content).startswith("cannot be decoded (")
    with pytest.raises(CorruptBlob, match=r"^/z: the stored content cannot be decoded \(.+\)$"), \
            _zstd_reader(bytes(frame), content) as reader:
        reader.read()


def test_a_wrong_last_chunk_is_refused_however_it_ends() -> None:
    """The last chunk is checked too, whether it is whole or partial: when the content ends
    exactly where the chunk does, no more bytes will come to prompt the check."""
    for size in (2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 500):
        content = _text(10, size)
        other = content[:-1] + b"#"
        last = (size - 1) // CHUNK_SIZE * CHUNK_SIZE
        assert _stored_refusal(zstandard.ZstdCompressor(level=1).compress(other), content) == \
            f"does not match its digest at bytes {last}-{size - 1}"


def test_verified_stored_bytes_go_out_as_soon_as_their_chunk_is_verified() -> None:
    """Damage in chunk 1: every stored byte that decodes into chunk 0 has gone out before the
    refusal (blocks of 128 KiB end exactly at the chunk's end), and nothing of chunk 1."""
    content = _text(11, 2 * CHUNK_SIZE)
    frame = zstandard.ZstdCompressor(level=1).compress(content)
    damaged = _damaged(frame, len(frame) - 50)
    sent: list[bytes] = []
    with pytest.raises(CorruptBlob), _zstd_reader(damaged, content) as reader:
        sent.extend(reader.verified_stored())  # keeps the pieces handed out before the refusal
    decoded = zstandard.ZstdDecompressor().decompressobj().decompress(b"".join(sent))
    assert decoded == content[:CHUNK_SIZE]


def test_a_fresh_copy_of_stored_frames_is_checked_against_what_was_sent() -> None:
    """After a refetch, verified_stored() goes on only if the fresh copy starts with exactly the
    bytes already sent: a copy that differs in them, or ends before them, is refused as changed.
    A copy that matches hands out the rest, and the reader ends there (no stray bytes)."""
    content = b"".join(b"%d %d\n" % (i, i * 7) for i in range(400_000))
    frame = zstandard.ZstdCompressor(level=1).compress(content)
    damaged = _damaged(frame, len(frame) - 3)
    reader, _ = _refetching_reader(damaged, content, Codec.ZSTD, [frame])
    with reader:
        assert b"".join(reader.verified_stored()) == frame
        assert reader.read() == b""
    other = zstandard.ZstdCompressor(level=9).compress(content)
    padded = _skippable(bytes(3 * STORED_PIECE)) + damaged  # what went out before the damage outlasts `frame`
    cases = [(damaged, other + _skippable(bytes(len(frame)))), (padded, frame)]
    for first, copy in cases:
        reader, _ = _refetching_reader(first, content, Codec.ZSTD, [copy])
        with pytest.raises(CorruptBlob, match=r"^/x: the stored content changed while it was read$"), reader:
            b"".join(reader.verified_stored())


def test_a_failed_zstd_chunk_is_read_again_from_a_fresh_copy() -> None:
    """A zstd blob read as content: after a refetch the fresh copy is decoded from its start up
    to the chunk that failed (its stored bytes cannot be seeked into by content offset)."""
    content = _text(12, 3 * CHUNK_SIZE + 100)
    frame = zstandard.ZstdCompressor(level=1).compress(content)
    reader, calls = _refetching_reader(_damaged(frame, len(frame) - 20), content, Codec.ZSTD, [frame])
    with reader:
        assert reader.read() == content
    assert calls == [1]


def test_a_refused_reader_hands_out_nothing_more() -> None:
    """After a refusal the reader is at its end: a further read returns nothing, and does not
    go on reading the stored bytes past the damage."""
    content = os.urandom(3 * CHUNK_SIZE)
    stored = io.BytesIO(_damaged(content, 5))
    digester = ChunkDigester()
    digester.update(content)
    reader = BlobReader(stored, codec=Codec.RAW, key=Hasher(7).key(), size=len(content), stored_size=len(content),
                        digests=digester.digests(), name="/x", version=1)
    with pytest.raises(CorruptBlob):
        reader.read(10)
    at = stored.tell()
    assert reader.read() == b""
    assert b"".join(reader.chunks()) == b""
    assert stored.tell() == at


def test_raw_stored_bytes_that_arrive_in_pieces_are_read_whole() -> None:
    """A stored stream that hands out part of what is asked (a socket, a pipe) is read until
    the chunk is complete, its parts joined in order."""
    content = os.urandom(CHUNK_SIZE + 1000)
    for step in (3, CHUNK_SIZE // 2 + 1, CHUNK_SIZE - 1):
        digester = ChunkDigester()
        digester.update(content)
        reader = BlobReader(_Trickle(content, step), codec=Codec.RAW, key=Hasher(7).key(), size=len(content),
                            stored_size=len(content), digests=digester.digests(), name="/x", version=1)
        with reader:
            assert reader.read() == content, step


def test_content_reads_say_where_the_content_is_wrong() -> None:
    """The refusal of a content read names the byte range of the chunk that failed, or how
    many bytes there were: what an operator needs to find the damage."""
    def refusal(stored: bytes, content: bytes) -> str:
        reader, _ = _refetching_reader(stored, content, Codec.RAW, [])
        with pytest.raises(CorruptBlob) as refused, reader:
            reader.read()
        return str(refused.value).removeprefix("/x: the stored content ")

    content = os.urandom(2 * CHUNK_SIZE + 100)
    assert refusal(_damaged(content, CHUNK_SIZE + 3), content) == \
        f"does not match its digest at bytes {CHUNK_SIZE}-{2 * CHUNK_SIZE - 1}"
    assert refusal(_damaged(content, 2 * CHUNK_SIZE + 3), content) == \
        f"does not match its digest at bytes {2 * CHUNK_SIZE}-{2 * CHUNK_SIZE + 99}"
    assert refusal(content[: CHUNK_SIZE + 40], content) == f"has {CHUNK_SIZE + 40} bytes, {len(content)} recorded"


def test_a_blob_reader_describes_its_blob_and_closes_what_it_read() -> None:
    content = os.urandom(1000)
    frame = zstandard.ZstdCompressor().compress(content)
    for codec, data in ((Codec.RAW, content), (Codec.ZSTD, frame)):
        stored = io.BytesIO(data)
        digester = ChunkDigester()
        digester.update(content)
        reader = BlobReader(stored, codec=codec, key=Hasher(7).key(), size=len(content), stored_size=len(data),
                            digests=digester.digests(), name="/d", version=42)
        assert (reader.name, reader.version, reader.size, reader.stored_size) == ("/d", 42, 1000, len(data))
        assert reader.in_memory is True
        assert reader.read() == content
        assert reader.computed_digests is None, "digests are computed only in key mode"
        reader.close()
        assert stored.closed
    reader, _ = _refetching_reader(content, content, Codec.RAW, [], key_mode=True)
    assert reader.in_memory is True and reader.computed_digests is None
    assert io.BufferedReader(reader).read() == content  # a raw stream Python's buffered I/O accepts
    assert reader.computed_digests == digester.digests()
    first = io.BytesIO(_damaged(content, 3))
    refetched = BlobReader(first, codec=Codec.RAW, key=Hasher(7).key(), size=1000, stored_size=1000,
                           digests=digester.digests(), name="/d", version=1, refetch=lambda: io.BytesIO(content))
    assert refetched.read() == content
    assert first.closed, "the copy that failed is closed once a fresh one replaces it"
    with pytest.raises(ValueError, match=r"^a BlobReader needs the blob's digests or its key function$"):
        BlobReader(io.BytesIO(content), codec=Codec.RAW, key=Hasher(7).key(), size=1000, stored_size=1000,
                   digests=None, name="/d", version=1)
