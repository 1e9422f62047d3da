"""Access tokens of the HTTP server: roles, creating and revoking them, checking a presented one.

Tokens are optional: a store that never had one serves everyone (as Filetracker does).
Making the first token closes the store: from then on every request except ``GET`` and
``HEAD /health`` must carry a valid token (:mod:`castore.server.auth` enforces it), also
once the last token is revoked (then nobody gets in), until an admin opens it again with
``castore token open-access --yes`` (:func:`open_access`). Open or closed is the store
setting ``access`` (:data:`castore.layout.ACCESS_SETTING`), written in the same
transaction as the first token, and read from the database with the tokens by every
worker of every server. A token has a role:

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import TokenExists

if TYPE_CHECKING:  # the server imports this module before SQLAlchemy (castore.server.serving)
    from ..metadata.repo import MetadataRepo

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "TOKEN_PREFIX",
    "Access",
    "Role",
    "TokenCache",
    "check_token_name",
    "create_token",
    "digest",
    "new_token",
    "open_access",
    "revoke_token",
]

TOKEN_PREFIX = "cst_"
DEFAULT_CACHE_SECONDS = 5.0
"""How long a server worker trusts its copy of the token digests and of the ``access``
setting: a new or revoked token, or ``open-access``, takes effect on every worker within this delay."""

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

    Without ``name`` one is made up from the role (``read-1f3a9c0b``). Closes the store
    to requests without a token, if it was open. Raises ValueError for an unknown role or
    an invalid name, :class:`~castore.errors.TokenExists` (a ValueError) for a taken one.
    """
    role = Role(role)
    name = check_token_name(name) if name is not None else f"{role.value}-{secrets.token_hex(4)}"
    token = new_token()
    from ..metadata.rows import TokenRow

    if not metadata.add_token(TokenRow(name, role.value, digest(token), int(time.time()))):
        raise TokenExists(f"a token named {name!r} exists already (revoke it first)")
    return name, token


def revoke_token(metadata: MetadataRepo, name: str) -> bool:
    """Remove the token called ``name``; False when there is none. The store stays closed."""
    return metadata.delete_token(name)


def open_access(metadata: MetadataRepo) -> None:
    """Let requests without a token in (``castore token open-access --yes``).

    Raises ValueError while tokens exist, naming them: a store with tokens is closed.
    """
    names = metadata.open_access()
    if names:
        one = len(names) == 1
        raise ValueError(f"{len(names)} token{'' if one else 's'} exist{'s' if one else ''} ({', '.join(names)}): "
                         f"revoke {'it' if one else 'them'} first (castore token revoke NAME)")


@dataclass(frozen=True)
class Access:
    """What a server worker checks requests against: closed or open, and the valid tokens."""

    closed: bool
    """Requests need a valid token (else the server is open to everyone)."""
    roles: dict[str, Role] = field(default_factory=dict)
    """``digest -> role`` of every valid token (none: nobody gets in while closed)."""


class TokenCache:
    """The store's :class:`Access` as a server worker sees it, reloaded every few seconds.

    ``load`` returns ``(closed, digest -> role)`` (two small queries,
    :meth:`castore.metadata.repo.MetadataRepo.token_access`); it runs at most once per
    ``seconds``, so requests cost no database access and no request ever writes.
    """

    def __init__(
        self,
        load: Callable[[], tuple[bool, dict[str, str]]],
        *,
        seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._seconds = seconds
        self._clock = clock
        self._access = Access(closed=True)
        self._expires: float | None = None

    def access(self) -> Access:
        """Whether tokens are required, and the valid ones. Load errors propagate."""
        now = self._clock()
        if self._expires is None or now >= self._expires:
            closed, roles = self._load()
            self._access = Access(closed, {d: Role(r) for d, r in roles.items()})
            self._expires = now + self._seconds
        return self._access

    def role_of(self, token: str) -> Role | None:
        """The role of a presented token, or None when it is not valid."""
        presented = digest(token)
        found: Role | None = None
        for stored, role in self.access().roles.items():
            if hmac.compare_digest(stored, presented):
                found = role
        return found
