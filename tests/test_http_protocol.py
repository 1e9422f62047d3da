"""The server's HTTP protocol turns Nagle's algorithm off on accepted TCP connections."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from castore.http_protocol import BoundedHttpToolsProtocol


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
