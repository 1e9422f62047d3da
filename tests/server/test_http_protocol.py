"""The server's HTTP protocol: Nagle's algorithm off on accepted TCP connections, and a
response's head sent with its body in one write."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from castore.server.httptools import BoundedHttpToolsProtocol, _HeadWithBody


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def test_accepted_connections_get_tcp_nodelay(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it a kept-alive GET waits ~40 ms for the client's delayed ACK of the head.
    monkeypatch.setattr(HttpToolsProtocol, "connection_made", lambda self, transport: None)
    monkeypatch.setattr(BoundedHttpToolsProtocol, "_start_head_timer", lambda self: None)  # needs a loop
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            protocol = object.__new__(BoundedHttpToolsProtocol)
            protocol.connection_made(_Transport(accepted))  # type: ignore[arg-type]
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


class _Recording:
    """The end of a connection: what was written, in which writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Cycle:
    response_started = False


def test_a_response_head_goes_out_with_its_body_in_one_write() -> None:
    real, cycle = _Recording(), _Cycle()
    held = _HeadWithBody(real, cycle)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response: passes straight through
    cycle.response_started = True
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    held.write(b"body")
    held.write(b"more")  # later parts of a streamed body: as they come
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody",
                           b"more"]
    assert held.is_closing() is False  # every other call goes to the transport


def test_a_head_without_a_body_write_goes_out_when_the_response_completes_or_closes() -> None:
    real, cycle = _Recording(), _Cycle()
    held = _HeadWithBody(real, cycle)  # type: ignore[arg-type]
    done: list[list[bytes]] = []
    complete = held.completed(lambda: done.append(list(real.writes)))
    cycle.response_started = True
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n")  # HEAD: uvicorn writes no body
    complete()
    assert done == [[b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"]]

    real, cycle = _Recording(), _Cycle()
    held = _HeadWithBody(real, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    held.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")  # then the app failed: uvicorn closes
    held.close()
    assert real.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and real.closed
