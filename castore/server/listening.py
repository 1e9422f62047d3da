"""The server's listening socket, bound before anything slow happens, and how many workers serve it.

``castore serve`` binds its address first, then imports SQLAlchemy and Starlette,
opens the store and starts its workers (~0.5 s or more on a busy machine). From the
moment the socket listens, the kernel queues connecting clients until a worker takes
them, so a client that connects during start-up waits for its answer instead of being
refused: Filetracker's own test modules start a server and connect after a fixed 1-2 s.
The socket then goes to uvicorn (``sockets=``) or gunicorn (``fd://``) unchanged.
"""

from __future__ import annotations

import os
import socket

__all__ = ["BACKLOG", "auto_workers", "listen"]

BACKLOG = 2048
"""Connections the kernel queues before a worker accepts them (uvicorn's and gunicorn's default)."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; OSError (with a reason) when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(e.errno, e.strerror or str(e)) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gunicorn bind
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def auto_workers() -> int:
    """``castore serve --workers auto``: one worker process per CPU core this process may run on.

    Measured on a 2-core machine with 64 KiB puts and gets, Filetracker's client and
    castore's, one client and 4 client processes (``benchmarks/server.py --workers-sweep
    1,2,3,4``, three sweeps at loads 1-11): 2 workers beat 1 on most 4-client figures and
    with castore's client (up to 3x under load); one Filetracker client alone did as well
    or slightly better with 1; 3 and 4 workers (Filetracker's 2 x cores) were slower than 2.
    """
    try:
        cores = len(os.sched_getaffinity(0))  # the cores a container or taskset leaves us
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores)
