"""ASGI middleware that requires an access token once the store is closed (:mod:`castore.server.tokens`).

It wraps the whole app, so every endpoint, present or future, is covered unless it is
listed in ``open_paths`` (``/health``, for load balancers), and those are open to ``GET``
and ``HEAD`` only: any other method on them needs a token like any path. A request
carries its token either way:

* ``Authorization: Bearer TOKEN`` — castore's client;
* ``Authorization: Basic …`` with the token as the password (or as the user name when
  the password is empty) — what ``requests``, and so the unmodified Filetracker
  client, sends for ``FILETRACKER_URL=http://any:TOKEN@host:9999``.

Answers: 401 with ``WWW-Authenticate: Basic`` when the token is missing or not valid,
403 when its role does not allow the method, 503 when the tokens cannot be read (never
open on doubt); each with a one-line ``X-Exception``, as every castore error.
"""

from __future__ import annotations

import base64
import binascii

from starlette.types import ASGIApp, Receive, Scope, Send

from .tokens import TokenCache

__all__ = ["OPEN_METHODS", "TokenAuth", "token_from_header"]

OPEN_METHODS = frozenset({"GET", "HEAD"})
"""The methods ``open_paths`` are open to without a token."""


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def token_from_header(value: str | None) -> str | None:
    """The token in an ``Authorization`` header value (None: no header). Raises _Refused if malformed."""
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer" and credentials:
        return credentials
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _Refused(401, "malformed Basic credentials") from None
        user, _, password = decoded.partition(":")
        if password or user:
            return password or user
    raise _Refused(401, "unsupported Authorization header: send Bearer TOKEN, or Basic with the token as password")


class TokenAuth:
    """Let a request through only with a token whose role allows its method (when the store is closed)."""

    def __init__(self, app: ASGIApp, tokens: TokenCache, *, open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._open(scope):
            await self.app(scope, receive, send)  # lifespan events, GET and HEAD /health
            return
        try:
            self._authorize(scope, scope.get("method", "GET"))
        except _Refused as refused:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": str(refused)})
            else:
                await _refuse(send, refused.status, str(refused))
            return
        await self.app(scope, receive, send)

    def _open(self, scope: Scope) -> bool:
        """Whether the request may pass without a token: GET or HEAD of an open path."""
        return scope["type"] == "http" and scope["method"] in OPEN_METHODS and scope["path"] in self.open_paths

    def _authorize(self, scope: Scope, method: str) -> None:
        try:
            closed = self.tokens.access().closed
        except Exception as e:  # noqa: BLE001 - cannot tell who may pass: nobody does
            raise _Refused(503, f"cannot read the access tokens: {type(e).__name__}") from None
        if not closed:
            return  # no token was ever made, or an admin opened the store again
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        token = token_from_header(header)
        if token is None:
            raise _Refused(401, "an access token is required")
        role = self.tokens.role_of(token)
        if role is None:
            raise _Refused(401, "the access token is not valid")
        if not role.allows(method):
            raise _Refused(403, f"a {role.value} token may not {method}")


async def _refuse(send: Send, status: int, message: str) -> None:
    body = (message + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-exception", message.encode("latin-1", "replace")),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="castore", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
