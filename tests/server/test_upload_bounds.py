"""The pieces that bound an upload: zstd frame walking, sizes, ranges, receiving (in isolation), and the
``castore serve`` options that set the limits (on a real server)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect

from castore.content_coding import ZstdFrameWalker, decoded
from castore.errors import SourceError, UploadTimeout, UploadTooLarge
from castore.protocol import parse_size_header
from castore.server.statuses import HTTPError as _HTTPError
from castore.server.streaming import parse_range as _parse_range
from castore.server.upload import (
    SIZED_BODY,
    SMALL_BODY,
    MemoryBudget,
    ReceivedBody,
    UploadLimits,
    UploadReader,
    receive_body,
)
from castore.store import Store

from ..server_process import castore_server

CONTENT = b"0123456789 abcdef\n" * 3000
V1000 = "Thu, 01 Jan 1970 00:16:40 -0000"
FRAMES = {
    "checksum": zstandard.ZstdCompressor(write_checksum=True).compress(CONTENT),
    "no checksum": zstandard.ZstdCompressor(write_checksum=False).compress(CONTENT),
    "no content size": zstandard.ZstdCompressor(write_content_size=False).compress(CONTENT),
    "two frames and a skippable one": zstandard.ZstdCompressor().compress(CONTENT[:100])
    + b"\x50\x2a\x4d\x18\x03\x00\x00\x00abc"
    + zstandard.ZstdCompressor(write_checksum=True).compress(CONTENT[100:]),
}


@pytest.mark.parametrize("frame", FRAMES.values(), ids=FRAMES.keys())
def test_a_zstd_body_cut_anywhere_inside_a_frame_is_refused(frame: bytes) -> None:
    assert decoded(io.BytesIO(frame), "zstd").read() == CONTENT
    boundaries = {0, len(frame)}
    if frame is FRAMES["two frames and a skippable one"]:
        first = len(zstandard.ZstdCompressor().compress(CONTENT[:100]))
        boundaries |= {first, first + 11}
    for cut in range(1, len(frame)):
        if cut in boundaries:
            continue
        with pytest.raises(SourceError, match="truncated|cannot be decoded"):
            decoded(io.BytesIO(frame[:cut]), "zstd").read()


@given(st.binary(max_size=3000), st.integers(1, 20), st.booleans())
@settings(max_examples=60, deadline=None)
def test_the_walker_finds_the_end_of_any_frame(data: bytes, level: int, checksum: bool) -> None:
    frame = zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(data)
    walker = ZstdFrameWalker()
    for i in range(0, len(frame), 7):  # fed in small pieces
        walker.feed(frame[i : i + 7])
    walker.finish()
    cut = ZstdFrameWalker()
    cut.feed(frame[:-1])
    with pytest.raises(SourceError):
        cut.finish()


def test_a_zstd_window_over_the_limit_is_refused_before_decoding() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=24)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = compressor.compress(os.urandom(1000)) + compressor.flush()
    with pytest.raises(SourceError, match="needs a 16 MiB window; this server accepts at most 8 MiB"):
        decoded(io.BytesIO(frame), "zstd", max_window=8 << 20).read()
    assert len(decoded(io.BytesIO(frame), "zstd", max_window=16 << 20).read()) == 1000


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "+5", "-5", "5_0", "0x5", "", " ", "5 5", "1" * 20, "5.0"])
def test_sizes_in_headers_are_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size_header(text)
    assert parse_size_header("0") == 0 and parse_size_header(" 42 ") == 42


def test_ranges() -> None:
    assert _parse_range("bytes=0-9", 100) == (0, 10)
    assert _parse_range("bytes=-5", 100) == (95, 100)
    assert _parse_range("bytes=90-", 100) == (90, 100)
    assert _parse_range("bytes=-500", 100) == (0, 100)
    for unusable in ("bytes=\u00b2-5", "bytes=1-2,4-5", "items=0-1", "bytes=-", "bytes=-0", "bytes=+1-2"):
        assert _parse_range(unusable, 100) is None
    for header, size in (("bytes=-5", 0), ("bytes=0-", 0), ("bytes=100-", 100), ("bytes=5-4", 100)):
        with pytest.raises(_HTTPError) as info:
            _parse_range(header, size)
        assert info.value.status == 416


async def _chunks(parts: list[bytes], stall_after: int | None = None) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if stall_after is not None and i == stall_after:
            await anyio.sleep(3600)
        yield part


def _receive(parts: list[bytes], **options: object) -> object:
    limits = options.pop("limits", UploadLimits())
    budget = options.pop("budget", MemoryBudget(UploadLimits.memory_budget))
    stall = options.pop("stall_after", None)

    async def run() -> object:
        return await receive_body(_chunks(parts, stall), content_length=options.get("content_length"),  # type: ignore[arg-type]
                                  limits=limits, budget=budget, spool_dir=None)  # type: ignore[arg-type]

    return anyio.run(run)


def test_small_bodies_stay_in_memory_and_large_ones_spool() -> None:
    budget = MemoryBudget(4 << 20)
    small = _receive([b"a" * 1000, b"b" * 1000], budget=budget)
    assert small.in_memory == b"a" * 1000 + b"b" * 1000 and not small.spooled  # type: ignore[attr-defined]
    assert budget.used == 2000
    small.close()  # type: ignore[attr-defined]
    assert budget.used == 0
    parts = [os.urandom(300_000) for _ in range(10)]
    large = _receive(parts, budget=budget)
    assert large.spooled and large.open().read() == b"".join(parts)  # type: ignore[attr-defined]
    assert budget.used == 0
    large.close()  # type: ignore[attr-defined]


def test_bodies_spool_once_the_worker_budget_is_spent() -> None:
    budget = MemoryBudget(1500)
    held = _receive([b"x" * 1000], budget=budget)
    other = _receive([b"y" * 1000], budget=budget)
    assert not held.spooled and other.spooled  # type: ignore[attr-defined]
    assert other.open().read() == b"y" * 1000  # type: ignore[attr-defined]


def test_receiving_limits() -> None:
    with pytest.raises(UploadTimeout, match="no part of the body came for 0.2 s"):
        _receive([b"a", b"b"], stall_after=1, limits=UploadLimits(body_timeout=0.2))
    with pytest.raises(UploadTooLarge):
        _receive([b"a" * 600, b"a" * 600], limits=UploadLimits(max_upload_size=1000))
    with pytest.raises(SourceError, match="has 2 of its 5 bytes"):
        _receive([b"ab"], content_length=5)


def test_upload_reader_caps_what_a_body_decodes_to() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (4 << 20))
    gz = gzip.compress(b"\0" * (4 << 20))
    reader = UploadReader(io.BytesIO(gz), encoding="gzip", logical_size=None, sha256=None, max_size=1 << 20,
                          too_large="too much")
    with pytest.raises(UploadTooLarge, match="too much"):
        reader.read()
    reader = UploadReader(io.BytesIO(bomb), encoding="zstd", logical_size=4 << 20, sha256=None)
    assert len(reader.read()) == 4 << 20


def test_serve_limits_reach_every_worker(tmp_path: Path) -> None:
    """--max-upload-size and --max-zstd-window, given to ``castore serve``, bound each worker's uploads."""
    root = tmp_path / "store"
    text = b"".join(b"%d\n" % i for i in range(300_000))  # ~2 MiB, compressible
    small = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=20))
    wide = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=21))
    fits = os.urandom(100_000)

    def streamed(compressor: zstandard.ZstdCompressor) -> bytes:
        writer = compressor.compressobj()  # no content size in the header: the window is not shrunk to it
        return writer.compress(fits) + writer.flush()

    with castore_server(root, "--workers", "2", "--max-upload-size", "1M", "--max-zstd-window", "1M") as url, \
            httpx.Client(base_url=url, timeout=30) as http:

        def put(path: str, body: bytes, **headers: str) -> httpx.Response:
            return http.put(f"/files{path}", params={"last_modified": V1000}, content=body, headers=headers)

        for _ in range(4):  # new connections: both workers answer some of them
            http.close()
            http = httpx.Client(base_url=url, timeout=30)
            assert put("/big", text).status_code == 413
            assert put("/big", text[: 1 << 20]).status_code == 200  # exactly the limit
            assert put("/big-chunked", iter([text[: 1 << 19]] * 3)).status_code == 413  # no Content-Length
            zstd = {"Content-Encoding": "zstd", "Logical-Size": str(len(text))}
            assert put("/big-zstd", zstandard.ZstdCompressor().compress(text), **zstd).status_code == 413
            gz = gzip.compress(text)  # no Logical-Size: the limit applies to what it decodes to
            assert put("/big-gzip", gz, **{"Content-Encoding": "gzip"}).status_code == 413
            zstd["Logical-Size"] = str(len(fits))
            r = put("/wide", streamed(wide), **zstd)
            assert r.status_code == 400 and "at most 1 MiB" in r.headers["x-exception"], r.headers
            assert put("/fits", streamed(small), **zstd).status_code == 200
        http.close()
    with Store.open(root) as store:
        assert sorted(f.path for f in store.list("/")) == ["/big", "/fits"]


def test_the_body_timeout_bounds_each_wait_not_the_whole_body() -> None:
    """One timer serves a body: parts that each come in time pass however long the body takes."""

    async def dripping(parts: int, gap: float) -> AsyncIterator[bytes]:
        for _ in range(parts):
            await asyncio.sleep(gap)
            yield b"d"

    async def run(parts: int, gap: float, timeout: float) -> bytes | None:
        received = await receive_body(dripping(parts, gap), content_length=None,
                                      limits=UploadLimits(body_timeout=timeout), budget=MemoryBudget(1 << 20),
                                      spool_dir=None)
        return received.in_memory

    assert asyncio.run(run(30, 0.05, 1.0)) == b"d" * 30  # 1.5 s in all, no wait near 1 s
    with pytest.raises(UploadTimeout):
        asyncio.run(run(2, 1.5, 0.3))  # the first wait already lasts too long

    async def cancelled_from_outside() -> None:  # not taken for the body's own timeout
        task = asyncio.create_task(run(3, 1.0, 60))
        await asyncio.sleep(0.1)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled_from_outside())


def test_an_idle_body_fails_before_a_part_that_comes_after_one_and_a_half_body_timeouts() -> None:
    """The bound is the body timeout itself, not a multiple of it.

    No clock is read: the part is held back by a timer on the same event loop, due at
    1.5 x the body timeout, and the loop runs due timers in order, so the body's timer
    (due at 1 x) must have failed the body before that part is handed over.
    """
    timeout = 0.2
    handed: list[bytes] = []

    async def late_part() -> AsyncIterator[bytes]:
        await asyncio.sleep(1.5 * timeout)
        handed.append(b"late")
        yield b"late"

    async def run() -> None:
        await receive_body(late_part(), content_length=None, limits=UploadLimits(body_timeout=timeout),
                           budget=MemoryBudget(1 << 20), spool_dir=None)

    with pytest.raises(UploadTimeout):
        asyncio.run(run())
    assert handed == []


def test_a_body_that_says_its_size_stays_in_memory_when_the_budget_has_room_for_all_of_it() -> None:
    budget = MemoryBudget(8 << 20)
    parts = [os.urandom(1 << 20) for _ in range(3)]
    sized = _receive(parts, content_length=3 << 20, budget=budget)
    assert not sized.spooled and sized.in_memory == b"".join(parts)  # type: ignore[attr-defined]
    assert budget.used == 3 << 20
    other = _receive(parts * 2, content_length=6 << 20, budget=budget)  # no room for all of it
    assert other.spooled and other.open().read() == b"".join(parts * 2)  # type: ignore[attr-defined]
    assert budget.used == 3 << 20
    sized.close()  # type: ignore[attr-defined]
    other.close()  # type: ignore[attr-defined]
    assert budget.used == 0
    unsized = _receive(parts, budget=budget)  # chunked: only the first MiB could be held
    assert unsized.spooled  # type: ignore[attr-defined]
    unsized.close()  # type: ignore[attr-defined]
    with pytest.raises(SourceError, match="longer than its Content-Length"):
        _receive(parts, content_length=(2 << 20) + 1, budget=budget)
    with pytest.raises(SourceError, match="has 3145728 of its"):
        _receive(parts, content_length=(3 << 20) + 1, budget=budget)
    assert budget.used == 0  # what a refused body held is given back


# -- the edges of receive_body and UploadReader, in-process (scripts/mutate.sh's upload tests) --


def _received(parts: list[bytes], *, content_length: int | None = None, limits: UploadLimits | None = None,
              budget: MemoryBudget | None = None, spool_dir: str | None = None) -> ReceivedBody:
    async def run() -> ReceivedBody:
        return await receive_body(_chunks(parts), content_length=content_length, limits=limits or UploadLimits(),
                                  budget=budget or MemoryBudget(UploadLimits.memory_budget), spool_dir=spool_dir)

    return anyio.run(run)


def test_the_memory_budget_can_be_spent_exactly() -> None:
    budget = MemoryBudget(10)
    assert budget.take(10) and not budget.take(1)


def test_receiving_edges_keep_every_byte_in_the_right_place(tmp_path: Path) -> None:
    """Exactly the limits, empty parts, sizes, where a spool lives, and closing twice."""
    exact = _received([b"a" * 600, b"", b"b" * 400], limits=UploadLimits(max_upload_size=1000))
    assert (exact.size, exact.open().read()) == (1000, b"a" * 600 + b"b" * 400)  # an empty part is no end
    small = _received([b"s" * SMALL_BODY])  # exactly the small-body size, no Content-Length: in memory
    assert not small.spooled and small.size == SMALL_BODY
    sized = _received([b"z" * (SIZED_BODY // 2)] * 2, content_length=SIZED_BODY)  # exactly the sized bound
    at_limit = _received([b"l" * (2 << 20)], content_length=2 << 20, limits=UploadLimits(max_upload_size=2 << 20))
    assert not at_limit.spooled  # a Content-Length of exactly the upload limit is held whole in memory
    at_limit.close()
    assert not sized.spooled and sized.in_memory == b"z" * SIZED_BODY
    sized.close()
    budget = MemoryBudget(4 << 20)
    spooled = _received([b"p" * SMALL_BODY, b"q"], budget=budget, spool_dir=str(tmp_path))
    assert spooled.spooled and budget.used == 0 and spooled.size == SMALL_BODY + 1
    where = os.readlink(f"/proc/self/fd/{spooled.open().fileno()}")  # anonymous: "<folder>/#<inode> (deleted)"
    assert os.path.dirname(where) == str(tmp_path), where
    spooled.close()
    kept = _received([b"k" * 100], budget=budget)
    assert budget.used == 100
    kept.close()
    kept.close()  # twice: the budget is given back once
    assert budget.used == 0


def test_a_body_refused_after_it_spooled_gives_its_budget_back() -> None:
    budget = MemoryBudget(4 << 20)
    with pytest.raises(UploadTooLarge) as refused:
        _received([b"a" * 1000, b"b" * SMALL_BODY, b"c" * 10], budget=budget,
                  limits=UploadLimits(max_upload_size=SMALL_BODY + 1000))
    assert str(refused.value) == f"the body is larger than this server's limit of {SMALL_BODY + 1000} bytes"
    assert budget.used == 0
    with pytest.raises(SourceError) as refused:
        _received([b"a" * 10], content_length=5)
    assert str(refused.value) == "the body is longer than its Content-Length"


def test_a_client_that_disconnects_is_a_cut_upload() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        raise ClientDisconnect()

    async def run() -> None:
        await receive_body(parts(), content_length=None, limits=UploadLimits(), budget=MemoryBudget(100),
                           spool_dir=None)

    with pytest.raises(SourceError) as refused:
        anyio.run(run)
    assert str(refused.value) == "the upload was cut short: the client disconnected"


def test_the_body_timer_is_set_again_for_a_wait_that_began_after_it() -> None:
    """The first part comes at half the timeout; the timer, due at 1x, finds a later wait in
    progress and must set itself again for that wait (else a stall after it waits forever)."""
    timeout = 0.3

    async def parts() -> AsyncIterator[bytes]:
        await asyncio.sleep(timeout / 2)
        yield b"first"
        await asyncio.sleep(3600)
        yield b"never"

    async def run() -> None:
        async with asyncio.timeout(60):  # only a guard against hanging: the body must fail long before
            await receive_body(parts(), content_length=None, limits=UploadLimits(body_timeout=timeout),
                               budget=MemoryBudget(100), spool_dir=None)

    with pytest.raises(UploadTimeout):
        asyncio.run(run())


def _reader(body: bytes, **options: object) -> UploadReader:
    settings: dict[str, object] = {"encoding": "identity", "logical_size": None, "sha256": None, **options}
    return UploadReader(io.BytesIO(body), **settings)  # type: ignore[arg-type]


def _refusal(body: bytes, **options: object) -> str:
    with pytest.raises((SourceError, UploadTooLarge)) as refused:
        _reader(body, **options).read()
    return str(refused.value)


def test_upload_reader_checks_the_sha256_it_is_given() -> None:
    digest = hashlib.sha256(CONTENT).hexdigest()
    assert _reader(CONTENT, sha256=digest.upper()).read() == CONTENT  # hex in either case
    assert _refusal(CONTENT, sha256=hashlib.sha256(b"other").hexdigest()) == \
        "the body does not match its SHA256-Checksum"
    assert _refusal(CONTENT, sha256="0" * 64) == "the body does not match its SHA256-Checksum"


def test_upload_reader_refusals_name_the_problem() -> None:
    with pytest.raises(SourceError) as refused:
        _reader(b"", encoding="zstd")
    assert str(refused.value) == "a zstd body needs a Logical-Size header"
    assert _refusal(b"abc", logical_size=5) == "the identity body is short: 3 of its Logical-Size 5 bytes"
    assert _refusal(gzip.compress(b"abc"), encoding="gzip", logical_size=5) == \
        "the gzip body is truncated: 3 of its Logical-Size 5 bytes"
    assert _refusal(b"abcdef", logical_size=5) == "the body decodes to more than its Logical-Size of 5 bytes"
    assert _reader(b"abcde", max_size=5).read() == b"abcde"  # exactly the limit
    assert _refusal(b"abcdef", max_size=5) == "the content is larger than 5 bytes"
    assert _refusal(b"abcdef", max_size=5, too_large="too much") == "too much"
    wide = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=21))
    writer = wide.compressobj()  # no content size in the header: the window is not shrunk to it
    frame = writer.compress(os.urandom(100_000)) + writer.flush()
    assert "at most 1 MiB" in _refusal(frame, encoding="zstd", logical_size=100_000, max_window=1 << 20)
