"""The Filetracker v2 protocol from the client side: one class, :class:`Remote`.

Speaks to ``castore serve`` and to an original Filetracker 2.x server. Against castore
(told apart by the ``castore`` key of ``GET /version``) uploads are zstd-compressed on
the client when a sample shows it pays, large ones streamed with chunked transfer
coding, and downloads accept the stored zstd frame as is. Against Filetracker the
body goes raw with a ``Content-Length``, which every Filetracker server accepts.

Connections are kept alive in a small per-process pool with ``TCP_NODELAY`` (small
requests on loopback make ~2,600 round trips/s with it, ~23 without). Standard
library ``http.client`` is used rather than httpx because it made about twice as many
small PUTs per second against the same server (``shared/reference/machine-limits.md``).

Every failure is a :class:`~castore.errors.FiletrackerError` whose message starts
``HTTP/<status>:`` when a server answered, as the Filetracker client's do.
"""

from __future__ import annotations

import http.client
import io
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from ..codec import DEFAULT_LEVEL, SAMPLE_SIZE, pack_for_sending, worth_compressing, zstd_chunks
from ..content_coding import Sized, SizeMismatch, decoded
from ..digests import ChunkDigester, content_digest
from ..errors import FileNotAvailable, FiletrackerError, SourceError
from ..names import parse_name
from ..protocol import (
    CONTENT_DIGEST_HEADER,
    format_version,
    parse_content_digest,
    parse_size_header,
    parse_version_date,
    quote_path,
)
from ..sizes import IO_BUFFER, WHOLE_IN_MEMORY

if TYPE_CHECKING:  # castore.batch (and json) are imported by the calls that use them: not by cat/get
    from ..batch import BatchLimits

__all__ = ["DEFAULT_TIMEOUT", "ProgressReader", "Remote", "RemoteFile", "Watch", "redact_url"]

DEFAULT_TIMEOUT = 300.0
"""Seconds a socket may wait for the server (Filetracker's own server allows 300)."""

SMALL_UPLOAD = WHOLE_IN_MEMORY
"""Uploads up to this size are prepared in memory and sent in one write."""
MAX_REDIRECTS = 3
POOL_SIZE = 4
"""Idle connections kept per client (more are opened when streams overlap)."""

Watch = Callable[[socket.socket], None]
"""Told each socket a call sends a request on, before it waits for the answer: a caller
that gives up on the call (a deadline) shuts the socket down, so the call stops waiting."""

_ACCEPT_ENCODING = "zstd, gzip"
SMALL_DOWNLOAD = WHOLE_IN_MEMORY
"""Downloads up to this size (sent and decoded) are read, decoded and checked whole in memory."""


@dataclass(frozen=True)
class RemoteFile:
    """What the server says about a file: its current version and logical size."""

    version: int
    size: int


class _Headers:
    """A response's headers, lowercased names to values: what ``HTTPResponse`` needs of its ``msg``.

    ``http.client`` parses headers with the ``email`` package, the largest cost of a
    small GET in a profile of this client (~0.1 ms of its ~1 ms); these are split once.
    """

    __slots__ = ("_items", "_lower")

    def __init__(self, lines: list[bytes]) -> None:
        items: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if line[:1] in (" ", "\t") and items:  # an obsolete folded continuation
                name, value = items[-1]
                items[-1] = (name, f"{value} {line.strip()}")
                continue
            name, colon, value = line.partition(":")
            if colon:
                items.append((name.strip(), value.strip()))
        self._items = items
        self._lower: dict[str, list[str]] = {}
        for name, value in items:
            self._lower.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._lower.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: Any = None) -> list[str] | Any:
        return self._lower.get(name.lower()) or default

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def first(self) -> dict[str, str]:
        """Lowercased name -> its first value."""
        return {name: values[0] for name, values in self._lower.items()}


class _FastResponse(http.client.HTTPResponse):
    """``HTTPResponse`` with :class:`_Headers` instead of an ``email`` message (see there).

    :meth:`begin` is the standard library's, step by step, but for how headers are parsed.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)  # the headers of a 100 Continue
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        headers = _Headers(http.client._read_headers(self.fp))
        self.headers = self.msg = headers
        transfer = headers.get("transfer-encoding")
        self.chunked = bool(transfer and transfer.lower() == "chunked")
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 or (
            self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _getaddrinfo_host(host: str) -> str | bytes:
    """``host`` as ``getaddrinfo`` takes it without the ``idna`` codec, when that changes nothing.

    ``getaddrinfo`` encodes a ``str`` host with the ``idna`` codec, whose first use imports
    it with ``stringprep`` and ``unicodedata`` (~1.5 ms of ``castore cat``'s start-up). For an
    ASCII name whose labels that codec accepts, its result is the ASCII bytes: they are given
    as such. Any other host goes as ``str``, to be encoded (or refused) by the codec as before.
    """
    if not host.isascii():
        return host
    labels = host.split(".")
    if any(not 0 < len(label) < 64 for label in labels[:-1]) or len(labels[-1]) >= 64:
        return host
    return host.encode("ascii")


def _create_connection(
    address: tuple[str, int], timeout: float | None = None, source_address: tuple[str, int] | None = None
) -> socket.socket:
    host, port = address
    return socket.create_connection((_getaddrinfo_host(host), port), timeout, source_address)  # type: ignore[arg-type]


class _Connection(http.client.HTTPConnection):
    """A keep-alive HTTP connection with Nagle's algorithm off."""

    response_class = _FastResponse

    def __init__(self, host: str, port: int | None = None, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._create_connection = _create_connection  # http.client's hook: socket.create_connection

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        """Send the head and a small body in one write: one segment, one wake-up of the server.

        (``http.client`` writes them separately; with ``TCP_NODELAY`` that is two segments.)
        """
        if isinstance(message_body, bytes) and len(message_body) <= SMALL_UPLOAD:
            buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]  # http.client's head lines
            buffer.extend((b"", b""))
            head = b"\r\n".join(buffer)
            del buffer[:]
            self.send(head + message_body)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]

    def looks_closed(self) -> bool:
        """True when the server has closed an idle connection (readable at EOF)."""
        if self.sock is None:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_UNANSWERED = (OSError, http.client.HTTPException, UnicodeEncodeError)
"""A request that was not sent or not answered; ``UnicodeEncodeError``: a target ``http.client``
cannot send (it takes ASCII only), such as a redirect's ``Location`` holding a raw non-ASCII byte."""


class _Pool:
    """Idle keep-alive connections to one server, forgotten after ``fork()``."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.keep = POOL_SIZE
        """Idle connections kept; raised by :meth:`Remote.reserve_connections`."""
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> tuple[_Connection, bool]:
        """A connection and whether it was reused (a reused one may have gone stale)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share its parent's sockets
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                connection = self._idle.pop()
                if not connection.looks_closed():
                    return connection, True
                connection.close()
        return _Connection(self.host, self.port, timeout=self.timeout, blocksize=IO_BUFFER), False

    def give_back(self, connection: _Connection) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self.keep:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class _Response:
    """A response whose connection goes back to the pool once the body is read."""

    def __init__(self, response: http.client.HTTPResponse, connection: _Connection, pool: _Pool | None) -> None:
        self.raw = response
        self.status = response.status
        self._connection = connection
        self._pool = pool
        self._headers: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """A header's value (the first, when sent twice), looked up in a dict made once.

        (``HTTPResponse.getheader`` scans every header, lowercasing each, per call.)
        """
        if self._headers is None:
            parsed = self.raw.msg
            if isinstance(parsed, _Headers):
                self._headers = parsed.first()
            else:
                self._headers = {}
                for key, value in self.raw.getheaders():
                    self._headers.setdefault(key.lower(), value)
        return self._headers.get(name.lower())

    def read_all(self, limit: int | None = None) -> bytes:
        """The whole body; FiletrackerError when it is cut short, malformed or over ``limit`` bytes."""
        try:
            body = self.raw.read() if limit is None else self.raw.read(limit + 1)
        except (http.client.HTTPException, OSError) as e:
            # a short body, or a malformed chunked one (e.g. a chunk-size line over 64 KiB)
            raise FiletrackerError(f"the response from the server was cut short or malformed ({e!r})") from None
        finally:
            self.release()  # closes the connection when the body was not read to its end
        if limit is not None and len(body) > limit:
            raise FiletrackerError(f"the answer of the server is over {limit} bytes: not read")
        return body

    def release(self) -> None:
        """Return the connection if the body was read whole, else close it."""
        connection, self._connection = self._connection, None  # type: ignore[assignment]
        if connection is None:
            return
        if self.raw.isclosed() and not self.raw.will_close and self._pool is not None:
            self._pool.give_back(connection)
        else:
            self.raw.close()
            connection.close()


class _DecodedBody(io.RawIOBase):
    """The body of a GET, decoded (:mod:`castore.content_coding`), checked end to end.

    A short or undecodable body raises FiletrackerError instead of looking like a
    smaller file; a body that decodes past its size stops there. zstd bodies carry
    their frame checksum (checked by the decoder), and a castore server's
    ``Castore-Content-Digest`` is compared with the digest of what was decoded when the
    end is read, so the caller's last read raises rather than returning a wrong file
    as complete (the client writes aside and renames only after it).
    """

    def __init__(self, response: _Response, name: str, size: int, max_window: int | None = None) -> None:
        super().__init__()
        self._max_window = max_window
        """The largest zstd window a frame may ask for (None: zstd's own limit, 128 MiB)."""
        self._response = response
        self._name = name
        self.size = size
        """The logical size the server announced (for progress bars)."""
        self._digest = parse_content_digest(response.header(CONTENT_DIGEST_HEADER))
        self._digester = ChunkDigester() if self._digest is not None else None
        self._encoding = (response.header("Content-Encoding") or "identity").strip().lower()
        self.replace_raw(cast(BinaryIO, response.raw))

    def replace_raw(self, raw: BinaryIO) -> None:
        """Decode ``raw`` (the response's body, or all of it already read) from the start."""
        try:
            self._content = Sized(decoded(raw, self._encoding, max_window=self._max_window), self.size)
        except SourceError as e:
            self._response.release()
            raise FiletrackerError(f"{self._name}: the server sent an unknown Content-Encoding ({e})") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._content.readinto(buffer)
        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, LineTooLong, ...
            self.close()
            raise FiletrackerError(f"{self._name}: the download was cut short or malformed ({e!r})") from None
        except SizeMismatch as e:
            self.close()
            raise FiletrackerError(
                f"{self._name}: the download has {e.delivered} bytes, the server announced {e.promised}"
            ) from None
        except SourceError as e:
            self.close()
            raise FiletrackerError(f"{self._name}: the download cannot be decoded ({e})") from None
        if n:
            if self._digester is not None:
                self._digester.update(memoryview(buffer)[:n])
            return n
        self._response.release()
        if self._digester is not None and content_digest(self._digester.digests()) != self._digest:
            raise FiletrackerError(f"{self._name}: the download does not match the server's content digest")
        return 0

    def close(self) -> None:
        if not self.closed:
            self._response.release()
        super().close()


def _small_body(response: _Response, name: str, size: int, max_window: int | None) -> bytes:
    """A small GET body read whole, decoded and checked at once (as :class:`_DecodedBody` checks a stream).

    One read of the socket and one decode instead of a read, decode and digest update
    per 8 KiB: the client's cost of a 64 KiB download halves.
    """
    body = _DecodedBody(response, name, size, max_window)  # releases the response on every error
    raw = response.read_all()
    body.replace_raw(io.BytesIO(raw))
    content = bytearray(size + 1)  # one byte more: a body that decodes longer is seen
    view = memoryview(content)
    filled = 0
    while n := body.readinto(view[filled:]):
        filled += n
    del view
    return bytes(content[:filled])


def _no_progress(_: int) -> None:
    pass


class ProgressReader(io.RawIOBase):
    """A binary file that reports each number of bytes read to a callback (for progress bars).

    Seeking is passed through, so a store that reads a seekable source twice still can.
    """

    def __init__(self, inner: BinaryIO, progress: Callable[[int], None]) -> None:
        super().__init__()
        self._inner = inner
        self._progress = progress
        self._position = self._reported = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self._position += n
        if self._position > self._reported:  # a second pass over the same bytes is not counted again
            self._progress(self._position - self._reported)
            self._reported = self._position
        return n

    def seekable(self) -> bool:
        return self._inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._inner.seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        super().close()


def _check_status(response: _Response, path: str) -> None:
    """Raise Filetracker's ``HTTP/<status>: <X-Exception>`` error for a non-2xx answer."""
    if 200 <= response.status < 300:
        return
    body = response.read_all()[:2000].decode("utf-8", "replace")
    message = f"HTTP/{response.status}: {response.header('X-Exception') or ''}\n{body}".rstrip()
    if response.status == 404:
        raise FileNotAvailable(path, message)
    raise FiletrackerError(message, status=response.status)


def _version_of(response: _Response, path: str) -> int:
    try:
        return parse_version_date(response.header("Last-Modified"))
    except ValueError:
        raise FiletrackerError(f"{path}: the server sent no valid Last-Modified") from None


def _batch_limits(advertised: object) -> BatchLimits | None:
    """A server's advertised batch limits, within this client's own (None: no batches)."""
    if not isinstance(advertised, dict):
        return None
    from ..batch import BatchLimits

    try:
        ours = BatchLimits()
        return BatchLimits(
            max_files=min(int(advertised["max_files"]), ours.max_files),
            max_bytes=min(int(advertised["max_bytes"]), ours.max_bytes),
            max_file_size=min(int(advertised["max_file_size"]), ours.max_file_size),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _stored_version(name: str) -> int:
    version = parse_name(name).version
    if version is None:
        raise ValueError(f"{name!r} has no version")
    return version


class _Upload:
    """A request body that can be produced again for a retry."""

    def __init__(self, headers: dict[str, str], make_body: Callable[[], bytes | BinaryIO | Iterable[bytes]]) -> None:
        self.headers = headers
        self.make_body = make_body


def _file_chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(IO_BUFFER):
        yield chunk


def _split_location(location: str, who: str) -> SplitResult:
    """A redirect's ``Location``, split; FiletrackerError (``who`` redirected…) when its host
    or port is malformed: ``urlsplit`` raises ValueError for an open IPv6 bracket, and its
    ``port`` for one out of range or not a number, which would otherwise escape as a 500."""
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018 - asked now, so that it raises here
    except ValueError as e:
        raise FiletrackerError(f"{who} redirected to a malformed location ({location[:200]!r}: {e})") from None
    return parts


def redact_url(url: str) -> str:
    """``url`` with its credentials (a token) replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _no_answer(method: str, server: str, target: str, error: BaseException) -> FiletrackerError:
    """The error of a request no server answered: Filetracker's client's message, with the
    server and the reason apart (``castore --url`` prints them as one short line)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
    return FiletrackerError(f"Error making HTTP request: {method} {server}{target}: {error}",
                            server=redact_url(server), reason=reason)


class Remote:
    """A Filetracker v2 server at ``base_url`` (a prefix path such as ``/ft`` is kept).

    Thread-safe and fork-safe; one instance reuses its connections for every call.

    Access token (``castore token create``), sent as ``Authorization: Bearer``: ``token``,
    else the one in the URL (``http://any:TOKEN@host:9999``, the password, or the user
    name when there is no password), else ``$CASTORE_TOKEN``. It is never sent to
    another server (a redirect target) and never shown in messages.

    ``other_origins``: follow a redirect to another scheme, host or port (False: such a
    redirect is an error; a redirect to the same server is followed either way).
    ``keep_connections``: idle connections kept for reuse (0: each request has its own).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        zstd_level: int = DEFAULT_LEVEL,
        token: str | None = None,
        other_origins: bool = True,
        keep_connections: int = POOL_SIZE,
    ) -> None:
        parts = urlsplit(base_url)
        host = parts.hostname
        if parts.scheme != "http" or not host:
            raise ValueError(f"remote_url must be http://host[:port][/prefix], not {redact_url(base_url)!r}")
        if parts.username is not None or parts.password is not None:
            token = token or unquote(parts.password or parts.username or "") or None
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        token = token or os.environ.get("CASTORE_TOKEN") or None
        if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
            raise ValueError("an access token must be printable ASCII without spaces")
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = urlunsplit(parts).rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._pool = _Pool(host, parts.port or 80, timeout)
        self._pool.keep = keep_connections
        self._other_origins = other_origins
        self._timeout = timeout
        self._zstd_level = zstd_level
        self._castore: bool | None = None
        self._batch: BatchLimits | None = None

    def __repr__(self) -> str:
        return f"Remote({self.base_url!r})"

    def close(self) -> None:
        self._pool.close()

    def reserve_connections(self, n: int) -> None:
        """Keep up to ``n`` idle connections from now on (``n`` requests at a time are coming)."""
        self._pool.keep = max(self._pool.keep, n)

    # -- transport ---------------------------------------------------------------------

    def _send(
        self, method: str, url: str, upload: _Upload | None = None, headers: dict[str, str] | None = None,
        watch: Watch | None = None,
    ) -> _Response:
        """One request on a pooled connection; a stale reused connection is retried once.

        ``watch`` is told the connection's socket once the request is sent (see :data:`Watch`).
        """
        all_headers = {**self._auth, **(headers or {}), **(upload.headers if upload else {})}
        for attempt in (1, 2):
            connection, reused = self._pool.take()
            body = upload.make_body() if upload else None
            try:
                chunked = body is not None and not isinstance(body, (bytes, io.IOBase))
                connection.request(method, url, body=body, headers=all_headers, encode_chunked=chunked)
                if watch is not None and connection.sock is not None:
                    watch(connection.sock)
                return _Response(connection.getresponse(), connection, self._pool)
            except _RETRYABLE as e:
                connection.close()
                if reused and attempt == 1:
                    continue
                raise _no_answer(method, self.base_url, url, e) from None
            except _UNANSWERED as e:
                connection.close()
                raise _no_answer(method, self.base_url, url, e) from None
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # the file or generator of an upload: sent, or about to be retried
        raise AssertionError("unreachable")

    def _send_following(
        self, method: str, path: str, headers: dict[str, str] | None = None, watch: Watch | None = None
    ) -> _Response:
        """GET or HEAD ``/files<path>``, following the 307 a migrating server answers with (at
        most :data:`MAX_REDIRECTS` hops; to another server only with ``other_origins``)."""
        response = self._send(method, self._files_url(path), headers=headers, watch=watch)
        for _ in range(MAX_REDIRECTS):
            location = response.header("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            response.read_all()
            parts = _split_location(location, f"{path}: {self.base_url}")
            same = self._same_origin(parts)
            if same is not None:
                response = self._send(method, same, headers=headers, watch=watch)
            elif self._other_origins:
                response = self._foreign(method, parts, headers)
            else:
                raise FiletrackerError(f"{path}: {self.base_url} redirected to another server ({location[:200]!r}): "
                                       "not followed")
        return response

    def _same_origin(self, parts: SplitResult) -> str | None:
        """The request target of a redirect to this server (same scheme, host and port), else None."""
        elsewhere = parts.scheme != "http" or parts.hostname != self._pool.host or (parts.port or 80) != self._pool.port
        if ((parts.scheme or parts.netloc) and elsewhere) or not parts.path.startswith("/"):
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _foreign(self, method: str, parts: SplitResult, headers: dict[str, str] | None) -> _Response:
        """One request to another server (a redirect target), on a connection of its own."""
        if parts.scheme != "http" or not parts.hostname:
            raise FiletrackerError(f"cannot follow a redirect to {parts.geturl()!r}")
        connection = _Connection(parts.hostname, parts.port or 80, timeout=self._timeout, blocksize=IO_BUFFER)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, target, headers=headers or {})
            return _Response(connection.getresponse(), connection, None)
        except _UNANSWERED as e:
            connection.close()
            raise _no_answer(method, f"http://{parts.netloc}", target, e) from None

    def _files_url(self, path: str, version: int | None = None) -> str:
        url = f"{self._prefix}/files{quote_path(path)}"
        if version is not None:
            url += "?last_modified=" + quote(format_version(version))
        return url

    def is_castore(self) -> bool:
        """Whether the server is castore (and so takes zstd and chunked uploads)."""
        if self._castore is None:
            import json

            response = self._send("GET", f"{self._prefix}/version")
            body = response.read_all()
            if response.status != 200:
                raise FiletrackerError(f"HTTP/{response.status}: {self.base_url} does not speak Filetracker v2")
            try:
                info = json.loads(body)
            except ValueError:
                raise FiletrackerError(f"{self.base_url}/version is not JSON") from None
            if 2 not in info.get("protocol_versions", []):
                raise FiletrackerError(f"{self.base_url} does not speak Filetracker protocol version 2")
            features = info.get("castore")
            self._castore = features is not None
            batch = features.get("batch") if isinstance(features, dict) else None
            self._batch = _batch_limits(batch)
        return self._castore

    def batch_limits(self) -> BatchLimits | None:
        """The limits of the server's ``PUT /batch/``, or None when it has none (Filetracker, older castore)."""
        self.is_castore()
        return self._batch

    def put_batch(
        self,
        files: list[tuple[str, str | os.PathLike[str], int]],
        *,
        compress: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Upload small files, ``(path, source, version)``, in one ``PUT /batch/``; the version now stored of each.

        All or nothing: a refused batch raises FiletrackerError (its ``status`` says
        why; nothing was stored) and the caller may send the files one by one instead.
        Each file must fit the server's :meth:`batch_limits` (its size is checked again
        as it is read). One request per call: the caller splits a long list.
        """
        limits = self.batch_limits()
        if limits is None:
            raise FiletrackerError(f"HTTP/404: {self.base_url} has no batched puts", status=404)
        from ..batch import BATCH_MEDIA_TYPE, batch_body, batch_entry, digest_of, parse_answer

        entries, payloads = [], []
        for path, source, version in files:
            with open(source, "rb") as f:
                content = f.read(limits.max_file_size + 1)
            if len(content) > limits.max_file_size:
                raise FiletrackerError(
                    f"{os.fspath(source)} is over {limits.max_file_size} bytes: too large for a batch", status=413
                )
            (progress or _no_progress)(len(content))
            packed = pack_for_sending(content, self._zstd_level) if compress else None
            sent = content if packed is None else packed
            entries.append(batch_entry(path, version, len(content), digest_of(content),
                                       "identity" if packed is None else "zstd", sent))
            payloads.append(sent)
        body = b"".join(batch_body(entries, payloads))
        upload = _Upload({"Content-Length": str(len(body)), "Content-Type": BATCH_MEDIA_TYPE}, lambda: body)
        response = self._send("PUT", f"{self._prefix}/batch/", upload)
        answer = response.read_all()
        _check_status(response, f"{self.base_url}/batch/")
        try:
            names = parse_answer(answer, len(files))
            return [_stored_version(name) for name in names]
        except (ValueError, KeyError, TypeError) as e:
            raise FiletrackerError(f"{self.base_url}/batch/ answered a malformed list ({e})") from None

    # -- the protocol --------------------------------------------------------------------

    def stat(self, path: str, *, watch: Watch | None = None) -> RemoteFile:
        """The current version and logical size of ``path`` (HEAD)."""
        response = self._send_following("HEAD", path, watch=watch)
        response.read_all()
        _check_status(response, path)
        return RemoteFile(_version_of(response, path), self._logical_size(response, path))

    @staticmethod
    def _logical_size(response: _Response, path: str) -> int:
        value = response.header("Logical-Size")
        if value is None and (response.header("Content-Encoding") or "identity") == "identity":
            value = response.header("Content-Length")
        try:
            return parse_size_header(value)  # type: ignore[arg-type]
        except (AttributeError, TypeError, ValueError):
            raise FiletrackerError(f"{path}: the server sent no Logical-Size") from None

    def open(
        self, path: str, *, max_window: int | None = None, max_size: int | None = None, watch: Watch | None = None
    ) -> tuple[RemoteFile, BinaryIO]:
        """The current version of ``path`` and a stream of its (decoded, checked) content.

        ``max_window``: the largest zstd window a frame of the answer may ask for;
        ``max_size``: a file larger than this raises FiletrackerError (status 413) before
        a byte of it is read (None: no limit).
        """
        response = self._send_following("GET", path, headers={"Accept-Encoding": _ACCEPT_ENCODING}, watch=watch)
        _check_status(response, path)
        try:
            info = RemoteFile(_version_of(response, path), self._logical_size(response, path))
            if max_size is not None and info.size > max_size:
                raise FiletrackerError(f"{path} is {info.size} bytes, over the limit of {max_size} bytes", status=413)
        except FiletrackerError:
            response.release()
            raise
        length = response.header("Content-Length")
        if length is not None and length.isdigit() and int(length) <= SMALL_DOWNLOAD and info.size <= SMALL_DOWNLOAD:
            return info, io.BytesIO(_small_body(response, path, info.size, max_window))
        stream = io.BufferedReader(_DecodedBody(response, path, info.size, max_window), buffer_size=IO_BUFFER)
        return info, stream

    def put(
        self,
        path: str,
        source: str | os.PathLike[str],
        version: int,
        *,
        compress: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Upload the file at ``source`` as ``path@version``; the version the server now has.

        ``progress`` is called with each number of bytes of ``source`` read for sending.
        """
        upload = self._upload_for(source, compress and self.is_castore(), progress or _no_progress)
        response = self._send("PUT", self._files_url(path, version), upload)
        response.read_all()
        _check_status(response, path)
        return _version_of(response, path)

    def _upload_for(self, source: str | os.PathLike[str], compress: bool, progress: Callable[[int], None]) -> _Upload:
        """The request for a file: small ones read once, whole (compressed when a cheap check says it
        pays, see :func:`~castore.codec.pack_for_sending`); large ones streamed from the file."""
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= SMALL_UPLOAD:
                data = f.read(size + 1)
                if len(data) != size:
                    raise FiletrackerError(f"{os.fspath(source)} changed size while being read")
                progress(size)
                headers = {"Logical-Size": str(size)}
                packed = pack_for_sending(data, self._zstd_level) if compress else None
                if packed is not None:
                    data = packed
                    headers["Content-Encoding"] = "zstd"
                headers["Content-Length"] = str(len(data))
                return _Upload(headers, lambda: data)
            sample = f.read(SAMPLE_SIZE) if compress else b""
        headers = {"Logical-Size": str(size)}

        def opened() -> BinaryIO:
            return cast(BinaryIO, ProgressReader(open(source, "rb"), progress))

        if compress and worth_compressing(sample, self._zstd_level):
            def compressed() -> Iterator[bytes]:
                with opened() as f:
                    yield from zstd_chunks(_file_chunks(f), self._zstd_level)

            return _Upload({**headers, "Content-Encoding": "zstd"}, compressed)

        return _Upload({**headers, "Content-Length": str(size)}, opened)

    def delete(self, path: str, version: int) -> None:
        """Delete ``path`` unless the server has a version newer than ``version``."""
        response = self._send("DELETE", self._files_url(path, version))
        response.read_all()
        _check_status(response, path)

    def list(
        self, subpath: str, cutoff: int | None = None, *, watch: Watch | None = None, max_bytes: int | None = None,
        max_names: int | None = None,
    ) -> list[str]:
        """Paths below the folder ``subpath``, relative to it, with versions ≤ ``cutoff``.

        ``max_bytes``, ``max_names``: a listing longer than this, or of more names, raises
        FiletrackerError before it is split into names (None: no limit).
        """
        url = f"{self._prefix}/list{quote_path(subpath)}"
        url += "?last_modified=" + quote(format_version(int(time.time()) if cutoff is None else cutoff))
        response = self._send("GET", url, watch=watch)
        _check_status(response, subpath)
        body = response.read_all(max_bytes)
        if max_names is not None and body.count(b"\n") + (not body.endswith(b"\n")) > max_names:  # lines (the last may lack "\n")
            raise FiletrackerError(f"the listing of {subpath} by {self.base_url} has over {max_names} names: not read")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # Filetracker 2.3.3 encodes every name it lists as UTF-8
            raise FiletrackerError(f"the listing of {subpath} by {self.base_url} is not UTF-8") from None
        # "\n" only: Filetracker 2.3.3's double-encoded names may hold U+0085, which
        # str.splitlines() would also break on
        return [line for line in text.split("\n") if line]

