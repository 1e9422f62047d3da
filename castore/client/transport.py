"""The HTTP layer of castore's client: keep-alive connections, their pool, responses.

Standard library ``http.client``, tuned: ``TCP_NODELAY`` and a small body sent with its
head in one write (:class:`Connection`), response heads parsed without the ``email``
package (:class:`_Headers`), no ``idna`` import for an ASCII host, a per-process pool
forgotten after ``fork()`` (:class:`Pool`), and a :class:`Response` whose connection goes
back to the pool once its body is read. ``https://`` servers: the same connection with its
socket wrapped in TLS (:func:`tls_context`: certificates always verified, against the
system's CAs or a CA bundle). What is sent, and how redirects are followed, is the
Filetracker protocol's business: :class:`castore.client.remote.Remote`.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..errors import FiletrackerError
from ..sizes import IO_BUFFER, WHOLE_IN_MEMORY

__all__ = ["CA_BUNDLE_VARIABLE", "POOL_SIZE", "RETRYABLE", "UNANSWERED", "BadCaBundle", "Connection", "Pool", "Response",
           "Watch", "default_port", "no_answer", "redact_url", "split_location", "tls_context"]

POOL_SIZE = 4
"""Idle connections kept per client (more are opened when streams overlap)."""
SMALL_UPLOAD = WHOLE_IN_MEMORY
"""Uploads up to this size are prepared in memory and sent in one write."""

CA_BUNDLE_VARIABLE = "CASTORE_CA_BUNDLE"
"""The environment variable naming a CA bundle (PEM) trusted for ``https://`` servers."""

Watch = Callable[[socket.socket], None]
"""Told each socket a call sends a request on, before it waits for the answer: a caller
that gives up on the call (a deadline) shuts the socket down, so the call stops waiting."""


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


class BadCaBundle(ValueError):
    """The CA bundle cannot be read, or holds no certificate."""


def tls_context(ca_bundle: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The TLS settings of an ``https://`` connection: the server's certificate and host name are
    always verified, against the CAs in ``ca_bundle`` (a PEM file) or else the system's.

    :class:`BadCaBundle` (one line) when ``ca_bundle`` cannot be read or holds no certificate.
    There is deliberately no way to turn verification off.
    """
    try:
        return ssl.create_default_context(cafile=None if ca_bundle is None else os.fspath(ca_bundle))
    except OSError as e:  # a missing or unreadable file; ssl.SSLError: no certificate in it
        reason = e.strerror if e.strerror and not isinstance(e, ssl.SSLError) else _tls_reason(e)
        raise BadCaBundle(f"CA bundle {os.fspath(ca_bundle or '')}: {reason}") from None


def default_port(scheme: str) -> int:
    """The port of a URL that names none."""
    return 443 if scheme == "https" else 80


class Connection(http.client.HTTPConnection):
    """A keep-alive HTTP connection with Nagle's algorithm off; over TLS with ``tls``."""

    response_class = _FastResponse

    def __init__(self, host: str, port: int | None = None, *, tls: ssl.SSLContext | None = None,
                 **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._create_connection = _create_connection  # http.client's hook: socket.create_connection
        self._tls = tls

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:  # the handshake checks the certificate and that it names self.host
            self.sock = self._tls.wrap_socket(self.sock, server_hostname=self.host)

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


def _tls_reason(error: BaseException) -> str:
    """An ``ssl`` error as one short line: the verifier's or OpenSSL's reason, without the file and line."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    reason = getattr(error, "reason", None)
    if isinstance(error, ssl.SSLError) and reason:
        return str(reason).replace("_", " ").lower()
    return str(error) or type(error).__name__


RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
UNANSWERED = (OSError, http.client.HTTPException, UnicodeEncodeError)
"""A request that was not sent or not answered; ``UnicodeEncodeError``: a target ``http.client``
cannot send (it takes ASCII only), such as a redirect's ``Location`` holding a raw non-ASCII byte."""


class Pool:
    """Idle keep-alive connections to one server, forgotten after ``fork()``; over TLS with ``tls``."""

    def __init__(self, host: str, port: int, timeout: float, *, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout, self.tls = host, port, timeout, tls
        self.keep = POOL_SIZE
        """Idle connections kept; raised by :meth:`Remote.reserve_connections`."""
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> tuple[Connection, bool]:
        """A connection and whether it was reused (a reused one may have gone stale)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share its parent's sockets
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                connection = self._idle.pop()
                if not connection.looks_closed():
                    return connection, True
                connection.close()
        return Connection(self.host, self.port, tls=self.tls, timeout=self.timeout, blocksize=IO_BUFFER), False

    def give_back(self, connection: Connection) -> None:
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


class Response:
    """A response whose connection goes back to the pool once the body is read."""

    def __init__(self, response: http.client.HTTPResponse, connection: Connection, pool: Pool | None) -> None:
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


def split_location(location: str, who: str) -> SplitResult:
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


def no_answer(method: str, server: str, target: str, error: BaseException) -> FiletrackerError:
    """The error of a request no server answered: Filetracker's client's message, with the
    server and the reason apart (``castore --url`` prints them as one short line)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = (f"TLS: the server's certificate is refused ({_tls_reason(error)}); the CA of a private "
                  f"certificate goes in --ca-bundle or {CA_BUNDLE_VARIABLE}")
    elif isinstance(error, ssl.SSLError):
        reason = f"TLS handshake failed ({_tls_reason(error)}): is the server https://?"
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    elif isinstance(error, http.client.RemoteDisconnected) and server.startswith("http://"):
        reason = f"{error}: is the server https://?"  # what a TLS port does with a plain request
    else:
        reason = str(error) or type(error).__name__
    return FiletrackerError(f"Error making HTTP request: {method} {server}{target}: {error}",
                            server=redact_url(server), reason=reason)
