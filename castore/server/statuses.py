"""Where exceptions become HTTP statuses for the API (starlette's ``HTTPException`` idea).

:class:`HTTPError` is what a handler raises for a status of its own; :func:`error_response`
turns it, or any castore error, into a one-line ``X-Exception`` answer, never a traceback.
The app's exception handlers and the middlewares call it. Three answers are made
elsewhere: the token check's 401/403/503 (:mod:`castore.server.auth`), the web page's
HTML 400/404 (:mod:`castore.server.ui`) and ``/health``'s 503 (:mod:`castore.server.handlers`).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..errors import (
    Busy,
    CastoreError,
    CorruptBlob,
    FiletrackerError,
    IntegrityError,
    InvalidName,
    MissingBlob,
    NotFound,
    PathConflict,
    ReadOnlyStore,
    SourceError,
    StoreFull,
    UploadTimeout,
    UploadTooLarge,
    VersionNotFound,
)
from ..faults import as_store_fault, locked_out
from ..protocol import (
    RETAINED_HEADER,
    format_retained,
    parse_size_header,
)

__all__ = ["HTTPError", "error_response", "int_header", "one_line"]

log = logging.getLogger(__name__)


class HTTPError(Exception):
    """An answer with this status and a one-line message (raised by a handler)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def one_line(message: str) -> str:
    line = " ".join(str(message).split())
    return line.encode("latin-1", "replace").decode("latin-1")[:500]


_STATUSES: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (UploadTooLarge, 413),
    (UploadTimeout, 408),
    (InvalidName, 400),
    (PathConflict, 409),  # a file where a folder is, or below a file (Filetracker's server: 500)
    (SourceError, 400),
    (Busy, 503),
    (FiletrackerError, 502),  # the old server of a live migration failed
    (ReadOnlyStore, 403),
    (StoreFull, 507),
    (CastoreError, 500),
]
_CLOSE_AFTER = {408, 413, 421, 507}
"""Statuses that may come before the whole body was read: close rather than drain it."""


def error_response(error: Exception) -> Response:
    """The answer for ``error``: its status (:class:`HTTPError`'s own, else from ``_STATUSES``) and one line."""
    if not isinstance(error, (HTTPError, CastoreError)):
        error = as_store_fault(error) or error  # ENOSPC, SQLITE_FULL, EROFS: say so
        if locked_out(error):
            error = Busy("the store's metadata database stayed locked by another process through "
                         "the busy timeout; try again")
    if isinstance(error, HTTPError):
        status = error.status
    elif isinstance(error, IntegrityError):
        # The details name blob keys and server folders: they go to the log, not to clients.
        log.error("castore: %s", error)
        status = 500
        if isinstance(error, CorruptBlob):
            error = Exception("the stored content failed verification and was not sent (run castore check)")
        elif isinstance(error, MissingBlob):
            error = Exception("the stored content is missing (run castore check)")
        else:
            error = Exception("the stored content is damaged (run castore check)")
    else:
        status = next((code for kind, code in _STATUSES if isinstance(error, kind)), 0)
        if not status:
            status, error = 500, Exception(f"internal error: {type(error).__name__}")
    message = one_line(str(error))
    headers = {"X-Exception": message}
    if isinstance(error, Busy):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, VersionNotFound):
        headers[RETAINED_HEADER] = format_retained(error.retained)
    if status in _CLOSE_AFTER:
        headers["Connection"] = "close"
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


def int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        return parse_size_header(value)
    except ValueError:
        raise HTTPError(400, f"invalid {name} header {value!r}: expected decimal digits") from None
