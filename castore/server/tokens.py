"""Access tokens of the HTTP server: roles, creating and revoking them, checking a presented one.

Tokens are optional: a store without any token serves everyone (as Filetracker does).
Once the first token exists, every request except ``GET`` and ``HEAD /health`` must carry one
(:mod:`castore.server.auth` enforces it). A token has a role:

======  =====================================================================
read    GET and HEAD: files, lists, ``/version``, ``/metrics``
write   also PUT and DELETE
admin   every method (and whatever admin-only endpoints come later)
======  =====================================================================

A token is 32 bytes from :mod:`secrets` in URL-safe base64 behind a ``cst_`` prefix, so
it can stand as is in a URL's userinfo (``http://any:TOKEN@host:9999``). Only its
SHA-256 is stored: a 256-bit random token needs no slow password hash, and a copy of
the database yields no usable token. The check compares digests with
:func:`hmac.compare_digest`, against every stored digest, so its time does not depend
on how much of a guess was right.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server imports this module before SQLAlchemy (castore.server.serving)
    from ..metadata.repo import MetadataRepo

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "TOKEN_PREFIX",
    "Role",
    "TokenCache",
    "check_token_name",
    "create_token",
    "digest",
    "new_token",
    "revoke_token",
]

TOKEN_PREFIX = "cst_"
DEFAULT_CACHE_SECONDS = 5.0
"""How long a server worker trusts its copy of the token digests: a new or revoked
token takes effect on every worker within this delay."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Role(str, enum.Enum):
    """What a token may do."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def allows(self, method: str) -> bool:
        """Whether a request with this HTTP ``method`` is allowed."""
        if self is Role.ADMIN:
            return True
        if method in ("GET", "HEAD"):
            return True
        return self is Role.WRITE and method in ("PUT", "DELETE")


def new_token() -> str:
    """A fresh random token (shown once to whoever creates it, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The SHA-256 of a token as hex: what the database keeps."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_token_name(name: str) -> str:
    """Return ``name`` if it may name a token (1-64 of ``A-Za-z0-9._-``), else raise ValueError."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid token name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def create_token(metadata: MetadataRepo, role: Role | str, name: str | None = None) -> tuple[str, str]:
    """Create a token; return ``(name, token)``. The token cannot be recovered later.

    Without ``name`` one is made up from the role (``read-1f3a9c0b``). Raises ValueError
    for an unknown role or an invalid or taken name.
    """
    role = Role(role)
    name = check_token_name(name) if name is not None else f"{role.value}-{secrets.token_hex(4)}"
    token = new_token()
    from ..metadata.rows import TokenRow

    if not metadata.add_token(TokenRow(name, role.value, digest(token), int(time.time()))):
        raise ValueError(f"a token named {name!r} exists already (revoke it first)")
    return name, token


def revoke_token(metadata: MetadataRepo, name: str) -> bool:
    """Remove the token called ``name``; False when there is none."""
    return metadata.delete_token(name)


class TokenCache:
    """The digests of the valid tokens as a server worker sees them, reloaded every few seconds.

    ``load`` returns ``digest -> role`` (one small query); it runs at most once per
    ``seconds``, so requests cost no database access and no request ever writes.
    """

    def __init__(
        self,
        load: Callable[[], dict[str, str]],
        *,
        seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._seconds = seconds
        self._clock = clock
        self._roles: dict[str, Role] = {}
        self._expires: float | None = None

    def roles(self) -> dict[str, Role]:
        """``digest -> role`` of every valid token (empty: tokens are off). Load errors propagate."""
        now = self._clock()
        if self._expires is None or now >= self._expires:
            self._roles = {d: Role(r) for d, r in self._load().items()}
            self._expires = now + self._seconds
        return self._roles

    def role_of(self, token: str) -> Role | None:
        """The role of a presented token, or None when it is not valid."""
        presented = digest(token)
        found: Role | None = None
        for stored, role in self.roles().items():
            if hmac.compare_digest(stored, presented):
                found = role
        return found
