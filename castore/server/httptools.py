"""uvicorn's fast (httptools) HTTP/1.1 protocol, with bounds on a request head's size and time.

httptools parses about twice as fast as h11 (``GET /version``: ~8,000 vs ~4,700 round
trips/s here) but, unlike h11, buffers a request line and headers of any size, and
uvicorn waits for them forever. This subclass

* counts the bytes received while a request head is being read and answers ``431``
  (closing the connection) past :data:`MAX_REQUEST_HEAD`, so a connection costs at
  most that much memory before the application sees the request;
* answers ``408`` and closes a connection that has not sent a whole request head
  within the header timeout (``castore serve --header-timeout``, counted from the
  connection or from the first byte of a later request; an idle keep-alive
  connection is closed by uvicorn's own keep-alive timeout);
* adds an ``X-Exception`` header to the ``400`` uvicorn sends for a request it cannot
  parse (smuggling attempts such as ``Content-Length`` with ``Transfer-Encoding``, a
  bad chunk size, an unknown method), as every other castore error has.

It also turns Nagle's algorithm off on every accepted connection: a streamed response goes
out as several writes, and on a kept-alive connection a later write otherwise waits for the
client's delayed ACK of the first, about 40 ms per small GET (45 ms -> 3.5 ms measured by
the deduplication benchmark, ``python -m benchmarks run``). And it sends a response's head
together with the first part of its body, in one write (:class:`_HeadWithBody`): uvicorn
writes them apart, two system calls and two TCP segments for every small answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import DEFAULT_HEADER_TIMEOUT, server_config

__all__ = ["MAX_REQUEST_HEAD", "BoundedHttpToolsProtocol"]

MAX_REQUEST_HEAD = 64 * 1024
"""Largest request line + headers accepted, in bytes."""


def _one_line(text: str) -> bytes:
    return " ".join(text.split())[:300].encode("ascii", "replace")


def _refusal(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"x-exception: " + message + b"\r\n"
        b"content-length: " + str(len(message) + 1).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + message + b"\n"
    )


LINGER = 2.0
"""Seconds a refused connection keeps reading (and dropping) what the client still sends.

Closing a socket with unread bytes makes the kernel send a reset, which can destroy
the refusal before the client reads it; half-closing and draining for a moment lets
the client see why it was refused.
"""

_TOO_LARGE = _refusal(b"431 Request Header Fields Too Large", b"the request line and headers exceed 65536 bytes")


def _header_timeout() -> float:
    """This server's ``--header-timeout`` (:attr:`castore.server.config.ServerConfig.header_timeout`)."""
    return server_config().header_timeout


class _HeadWithBody:
    """The connection as one response sees it: its head is held back until the first part
    of its body, and both go out in one write.

    The head is the first write once the response has started (an interim ``100
    Continue`` is written before, and passes straight through). A response with no body
    write (HEAD, or an empty body) sends its head when it completes, and a connection
    closing sends it first; every other call goes to the real transport.
    """

    __slots__ = ("_cycle", "_head", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._held = False  # the head was seen (held or sent)

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._held and self._cycle.response_started:
            self._held = True
            self._head = bytes(data)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def completed(self, on_response: Callable[[], None]) -> Callable[[], None]:
        """``on_response`` (the cycle's end), sending a head still held first."""

        def complete() -> None:
            self.flush()
            on_response()

        return complete

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a size and a time limit on request heads."""

    _in_head = True  # between requests and while reading a request line and headers
    _head_bytes = 0
    _tail = b""  # the last bytes of the previous chunk, for a CRLFCRLF split across two
    _head_timer: asyncio.TimerHandle | None = None
    _refused = False  # a refusal was sent: drop whatever else comes, then close
    _head_timeout = DEFAULT_HEADER_TIMEOUT  # this server's --header-timeout, read when the connection is made

    def _refuse(self, response: bytes) -> None:
        """Send ``response``, stop writing, drain the client's bytes for :data:`LINGER` s, close."""
        self._stop_head_timer()
        self._refused = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timeout = _header_timeout()  # read once a connection, not at every request's head
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            timeout = f"{self._head_timeout:g}".encode()
            self._refuse(
                _refusal(b"408 Request Timeout", b"the request line and headers did not come within " + timeout + b" s")
            )

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._start_head_timer()  # no-op while one runs (from the connection's start)
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            # Bytes up to the end of the head (the rest of the chunk is body); a chunk
            # that ends one body and starts the next head may count short by its body part.
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = seen[-3:]
            if self._head_bytes > MAX_REQUEST_HEAD:
                self._refuse(_TOO_LARGE)
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # castore speaks no WebSocket
        except httptools.HttpParserError as e:
            # uvicorn says only "Invalid HTTP request received."; the parser says what (e.g.
            # "Duplicate Content-Length", "Invalid character in chunk size")
            reason = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) and e.__context__ else e
            self.logger.info("refused an invalid HTTP request: %s", reason)
            self._refuse(_refusal(b"400 Bad Request", _one_line(f"invalid HTTP request: {reason}")))

    def send_400_response(self, msg: str) -> None:
        message = msg.rstrip(".").encode("ascii", "replace")
        self._refuse(_refusal(b"400 Bad Request", message))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            held = _HeadWithBody(self.transport, cycle)
            cycle.transport = held  # type: ignore[assignment]  # a transport for what the cycle calls
            cycle.on_response = held.completed(cycle.on_response)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
