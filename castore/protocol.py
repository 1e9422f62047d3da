"""The Filetracker v2 wire format: pure helpers shared by the server and the client.

Versions travel as RFC 2822 dates (``email.utils.formatdate``), so only whole seconds
survive; ``Logical-Size`` carries the original size when a body is compressed.
"""

from __future__ import annotations

import email.utils
import functools
import re
from urllib.parse import quote

from .errors import InvalidName, InvalidVersion
from .names import MAX_VERSION, check_path, check_version, parse_version

__all__ = [
    "CONTENT_DIGEST_HEADER",
    "PROTOCOL_VERSIONS",
    "RETAINED_HEADER",
    "VERSION_PARAMETER",
    "accepted_encodings",
    "format_content_digest",
    "format_retained",
    "format_version",
    "parse_content_digest",
    "parse_retained",
    "parse_size_header",
    "parse_version_date",
    "path_from_url",
    "quote_path",
]

PROTOCOL_VERSIONS = [2]

CONTENT_DIGEST_HEADER = "Castore-Content-Digest"
"""A GET/HEAD response header: the content digest (``castore/digests.py``), for end-to-end checks."""
_DIGEST_ALGORITHM = "xxh3-128-chunks-1m"
_HEX32 = re.compile(r"[0-9a-f]{32}")


def format_content_digest(digest: str) -> str:
    """The header value for a content digest: ``xxh3-128-chunks-1m=<32 hex>``."""
    return f"{_DIGEST_ALGORITHM}={digest}"


def parse_content_digest(value: str | None) -> str | None:
    """The content digest in a header value, or None (absent, or an algorithm this code does not know)."""
    algorithm, _, digest = (value or "").strip().partition("=")
    if algorithm != _DIGEST_ALGORITHM or not _HEX32.fullmatch(digest):
        return None
    return digest

VERSION_PARAMETER = "version"
"""castore's query parameter of ``GET``/``HEAD /files/<path>`` for a retained version (``?version=1700000000``).

Filetracker's server ignores it and answers its current version, which its version check
then tells apart."""
RETAINED_HEADER = "Castore-Retained-Versions"
"""A ``404`` answer's header for a version castore does not retain: the retained ones, newest first."""


def format_retained(versions: list[int]) -> str:
    """The :data:`RETAINED_HEADER` value: ``30, 20, 10``."""
    return ", ".join(str(v) for v in versions)


def parse_retained(value: str | None) -> list[int] | None:
    """The versions in a :data:`RETAINED_HEADER` value; None when absent or malformed."""
    if not value:
        return None
    try:
        return [parse_version(part.strip()) for part in value.split(",")]
    except ValueError:
        return None


_LARGEST_DATE = 253402300799  # 9999-12-31T23:59:59Z: what an RFC 2822 date can say


@functools.lru_cache(maxsize=1024)  # every answer of a file says its version: a few recent ones recur
def format_version(version: int) -> str:
    """A version as an RFC 2822 date: ``Thu, 01 Jan 1970 00:16:40 -0000`` for 1000."""
    if not 0 <= version <= _LARGEST_DATE:
        raise InvalidVersion(f"version {version} cannot be sent as an HTTP date")
    return email.utils.formatdate(version)


@functools.lru_cache(maxsize=1024)  # every put names its version: clients send a few dates again and again
def parse_version_date(text: str | None) -> int:
    """Parse an RFC 2822 date (``?last_modified=``) into an integer version (errors are not cached)."""
    if not text:
        raise InvalidVersion('"?last_modified=" is required')
    parsed = email.utils.parsedate_tz(text)
    if parsed is None:
        raise InvalidVersion(f"invalid last_modified date {text!r}")
    try:
        version = int(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        raise InvalidVersion(f"invalid last_modified date {text!r}") from None
    if not 0 <= version <= MAX_VERSION:
        raise InvalidVersion(f"last_modified {text!r} is before 1970")
    return check_version(version)


def quote_path(path: str) -> str:
    """``path`` percent-encoded for a URL path, keeping its ``/`` separators.

    Every other byte that is not unreserved is encoded (``?``, ``#``, ``%``, spaces,
    non-ASCII as UTF-8), so the server decodes the URL back to exactly ``path``. The
    client, the web page's links and the server's ``--fallback-url`` redirect all use it.
    """
    return quote(path, safe="/")


def path_from_url(rest: str) -> str:
    """The store path for the part of a URL after ``/files/``: ``a/b`` gives ``/a/b``.

    The URL must not carry a version (``@``): Filetracker sends versions as dates.
    """
    path = "/" + rest
    if "@" in path:
        raise InvalidName(f"invalid path {path!r}: versions go in last_modified, not in the URL")
    return check_path(path)


_SIZE = re.compile(r"[0-9]{1,19}")


def parse_size_header(text: str) -> int:
    """A size header (``Content-Length``, ``Logical-Size``): ASCII decimal digits only.

    Bytes as a header carries them; a size a person writes (``8G``) is
    :func:`castore.sizes.parse_size`'s.

    ``str.isdigit`` and ``int`` also take '²', '٣', '+5', ' 5' or '5_0'; a size
    in a header is ``[0-9]+``, anything else raises ValueError.
    """
    if not _SIZE.fullmatch(text.strip()):
        raise ValueError(f"not a size: {text!r} (expected decimal digits)")
    return int(text)


_TOKEN = re.compile(r"\s*([A-Za-z0-9_*-]+)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*")


def accepted_encodings(header: str | None) -> set[str]:
    """Content codings a client accepts (``q=0`` excluded), lowercased."""
    accepted = set()
    for part in (header or "").split(","):
        match = _TOKEN.fullmatch(part)
        if not match:
            continue
        coding, quality = match.group(1).lower(), match.group(2)
        try:
            if quality is not None and float(quality) == 0:
                continue
        except ValueError:
            continue
        accepted.add(coding)
    return accepted
