"""Conditional GET and HEAD (RFC 9110 §13): pure functions of the request headers and a file's validators.

A file's validators are its ``ETag`` (a keyed one-way function of the blob key: it names
the *content*, the same in every content coding, and changes whenever the content does)
and its ``Last-Modified`` (the version, in whole seconds). The version is not a strong
validator: an equal-version put replaces the content, and a delete lets an older version
come back, so one date may stand for two contents. Hence:

* ``If-Range`` holds only for a strong match of the current ETag; a date, a weak tag, an
  older tag or garbage never holds, and the client gets the whole content (200), never a
  part of another version spliced onto what it has (§13.1.5 lets a server send the whole
  content whenever it cannot be sure).
* ``If-Match`` compares strongly, ``If-None-Match`` weakly (``W/"x"`` matches ``"x"``);
  ``If-Modified-Since`` and ``If-Unmodified-Since`` compare dates with the version, and
  are ignored when the matching ETag condition is present (an ETag is the better judge).

The order is §13.2.2's: If-Match (else If-Unmodified-Since) → 412; If-None-Match (else
If-Modified-Since) → 304; then If-Range, for a request with ``Range``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..errors import InvalidVersion
from ..protocol import parse_version_date

__all__ = ["has_conditions", "precondition", "range_holds"]

_ENTITY_TAG = re.compile(r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")')


def _tags(header: str) -> list[tuple[bool, str]]:
    """The entity-tags in a list header: ``(weak, "opaque")`` each; unparsable parts are skipped."""
    return [(weak == "W/", opaque) for weak, opaque in _ENTITY_TAG.findall(header)]


def _date(header: str | None) -> int | None:
    """An HTTP-date as whole seconds, or None when absent or not a valid date (then it is ignored)."""
    if not header:
        return None
    try:
        return parse_version_date(header)
    except InvalidVersion:
        return None


def _strong_match(header: str, etag: str) -> bool:
    """Whether the list ``header`` holds ``*`` or ``etag`` by strong comparison (both not weak)."""
    return header.strip() == "*" or any(not weak and opaque == etag for weak, opaque in _tags(header))


def _weak_match(header: str, etag: str) -> bool:
    """Whether the list ``header`` holds ``*`` or ``etag`` by weak comparison (the W/ is disregarded)."""
    return header.strip() == "*" or any(opaque == etag for _, opaque in _tags(header))


def has_conditions(raw_headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether any ``If-…`` header is among an ASGI request's (lowercased) raw headers.

    One pass over the raw list (~1 µs) spares the requests without any (nearly all) the
    five lookups of :func:`precondition` (~4 µs).
    """
    return any(name[:3] == b"if-" for name, _ in raw_headers)


def precondition(headers: Mapping[str, str], etag: str, version: int) -> int | None:
    """The status a GET or HEAD of a current file must get instead of its content: 412
    (a precondition failed), 304 (the client's copy is current), or None (answer as usual).

    ``etag`` is the ETag header's value (with its quotes), ``version`` the Last-Modified.
    """
    if_match = headers.get("if-match")
    if if_match is not None:
        if not _strong_match(if_match, etag):
            return 412
    else:
        since = _date(headers.get("if-unmodified-since"))
        if since is not None and version > since:
            return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        return 304 if _weak_match(if_none_match, etag) else None
    since = _date(headers.get("if-modified-since"))
    if since is not None and version <= since:
        return 304
    return None


def range_holds(if_range: str | None, etag: str) -> bool:
    """Whether a ``Range`` may be answered with a part (206), given the request's ``If-Range``.

    Only a strong ETag that is the current one holds; anything else (an older ETag, a
    weak one, a date, garbage) asks for the whole content.
    """
    return if_range is None or if_range.strip() == etag
