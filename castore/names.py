"""Names, paths and versions: pure functions, no I/O.

A *name* is a *path* with an optional version: ``/problems/12/tests/1a.in@1700000000``.
This module is the only place where names are parsed and checked; the store, the
server, the client and the Django bridge all call it.

Path rules (violations raise :class:`~castore.errors.InvalidPath`):

* starts with ``/`` and names a file, so ``/`` alone and a trailing ``/`` are refused;
* no empty segments (``//``), no ``.`` or ``..`` segments;
* no control characters (C0, DEL, C1), no NUL, valid Unicode (no lone surrogates);
* ``@`` only in the last segment, and only as the version separator of a name;
* at most :data:`MAX_PATH_BYTES` bytes of UTF-8, each segment at most :data:`MAX_SEGMENT_BYTES`.

A version is a non-negative integer below 2**63 (Filetracker uses Unix timestamps).
In text it is plain decimal digits; anything else raises
:class:`~castore.errors.InvalidVersion`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidPath, InvalidVersion

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "MAX_VERSION",
    "Name",
    "check_path",
    "check_prefix",
    "check_version",
    "child_range",
    "is_valid_path",
    "parent_folders",
    "parse_name",
    "parse_prefix",
    "parse_version",
    "versioned_name",
]

MAX_PATH_BYTES = 4096
MAX_SEGMENT_BYTES = 255
MAX_VERSION = 2**63 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DIGITS = re.compile(r"[0-9]{1,19}")


class Name(NamedTuple):
    """A parsed name: a checked path and an optional version."""

    path: str
    version: int | None

    def __str__(self) -> str:
        return self.path if self.version is None else versioned_name(self.path, self.version)


def _path_problem(path: object) -> str | None:
    """Say what is wrong with ``path``, or return None when it is a valid path."""
    if not isinstance(path, str):
        return f"a path must be a str, not {type(path).__name__}"
    if not path.startswith("/"):
        return "a path must start with '/'"
    if _CONTROL.search(path):
        return "a path must not contain NUL or control characters"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "a path must be valid Unicode"
    if len(encoded) > MAX_PATH_BYTES:
        return f"a path must be at most {MAX_PATH_BYTES} bytes"
    segments = path[1:].split("/")
    for segment in segments:
        if segment == "":
            return "a path must not have empty segments or end with '/'"
        if segment in (".", ".."):
            return "a path must not contain '.' or '..' segments"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a path segment must be at most {MAX_SEGMENT_BYTES} bytes"
        if "@" in segment:
            return "a path must not contain '@' (it separates the version)"
    return None


def is_valid_path(path: object) -> bool:
    """True when ``path`` satisfies every path rule."""
    return _path_problem(path) is None


def check_path(path: object) -> str:
    """Return ``path`` unchanged if valid, else raise :class:`InvalidPath`."""
    problem = _path_problem(path)
    if problem is not None:
        raise InvalidPath(f"invalid path {path!r}: {problem}")
    assert isinstance(path, str)
    return path


def check_version(version: object) -> int:
    """Return ``version`` if it is an int in ``[0, MAX_VERSION]``, else raise InvalidVersion."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidVersion(f"invalid version {version!r}: must be an integer")
    if not 0 <= version <= MAX_VERSION:
        raise InvalidVersion(f"invalid version {version}: must be in [0, 2**63-1]")
    return version


def parse_version(text: str) -> int:
    """Parse decimal version text (``"1700000000"``); raise InvalidVersion otherwise."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        if isinstance(text, str) and re.fullmatch(r"[0-9]+", text):
            raise InvalidVersion(f"invalid version {text[:24]}{'…' if len(text) > 24 else ''}: too large "
                                 "(at most 2**63-1)")
        raise InvalidVersion(f"invalid version {text!r}: must be decimal digits")
    return check_version(int(text))


def parse_name(name: object, *, allow_version: bool = True) -> Name:
    """Split and check ``path[@version]``.

    Raises InvalidPath or InvalidVersion (both :class:`ValueError`) on bad input.
    """
    if not isinstance(name, str):
        raise InvalidPath(f"invalid name {name!r}: must be a str")
    path, sep, version_text = name.rpartition("@")
    if not sep:
        return Name(check_path(name), None)
    if not allow_version:
        raise InvalidPath(f"invalid name {name!r}: a version is not allowed here")
    if "/" in version_text:
        # The '@' sits in a directory segment: let the path rules name the problem.
        check_path(name)
    return Name(check_path(path), parse_version(version_text))


def versioned_name(path: str, version: int) -> str:
    """Join a path and a version: ``/a/b`` and 12 give ``/a/b@12``."""
    return f"{path}@{version}"


def check_prefix(prefix: str) -> str:
    """Normalise a directory prefix for listing: ``""``, ``"/"`` → ``"/"``; ``/a/`` → ``/a/``.

    Any other prefix must be a valid path; the result always ends with ``/``.
    """
    if prefix in ("", "/"):
        return "/"
    stripped = prefix.removesuffix("/")
    return check_path(stripped) + "/"


def parse_prefix(name: str) -> tuple[str, int | None]:
    """Split and check a directory prefix with an optional version: ``/a/b@12`` → ``("/a/b/", 12)``.

    The prefix is normalised as :func:`check_prefix` does (``/`` and ``/a/`` are prefixes
    too); an ``@`` before a ``/`` is not a version, and the path rules refuse it.
    """
    head, sep, version_text = name.rpartition("@")
    if not sep or "/" in version_text:
        return check_prefix(name), None
    return check_prefix(head), parse_version(version_text)


def child_range(directory: str) -> tuple[str, str]:
    """Half-open string range ``[low, high)`` holding every path below ``directory``.

    ``directory`` ends with ``/``; ``high`` replaces that ``/`` by the next code point
    (``0``), so a plain ``path >= low AND path < high`` uses the primary-key index.
    """
    if not directory.endswith("/"):
        raise ValueError("directory must end with '/'")
    return directory, directory[:-1] + "0"


def parent_folders(path: str) -> list[str]:
    """The folders above a (checked) path, as paths, outermost first: ``/a/b/c`` gives ``/a``, ``/a/b``.

    A new file's name must not be a file already at any of them (``castore.putting``).
    """
    cuts = [i for i, char in enumerate(path) if char == "/"][1:]
    return [path[:i] for i in cuts]
