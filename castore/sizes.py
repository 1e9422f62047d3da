"""Byte counts: as people write and read them (``8G`` in, ``1.5 MiB`` out), and the buffer sizes castore uses.

Pure functions and constants, shared by the command line, the web page, the client and
the server. The one *chunk* of castore's stored format is not here: it is
:data:`castore.digests.CHUNK_SIZE`, the unit content digests are computed over.
"""

from __future__ import annotations

import re

__all__ = ["IO_BUFFER", "WHOLE_IN_MEMORY", "format_size", "parse_size"]

IO_BUFFER = 1 << 20
"""Bytes per read or write when copying or decoding a stream: few system calls, bounded memory.

Free to change: unlike :data:`castore.digests.CHUNK_SIZE` (the same 1 MiB today), it is
not part of any stored format."""
WHOLE_IN_MEMORY = 1 << 20
"""Contents up to this size are handled whole in memory (an upload prepared or received in
one piece, a small file read and sent in one body); larger ones are streamed."""

_SIZE_PART = r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B|I)?"
_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``8G``, ``512M``, ``1G512M``, ``2GiB``, ``20Gi`` or ``1000`` (binary units).

    The one grammar of a size a person writes: command-line options and the S3
    backend's ``cache_size``. (A size in an HTTP header is
    :func:`castore.protocol.parse_size_header`'s: decimal digits only.)

    Raises ValueError for anything else (ASCII digits only).
    """
    flags = re.IGNORECASE | re.ASCII
    if not re.fullmatch(f"(?:{_SIZE_PART})+", text.strip(), flags):
        raise ValueError(f"not a size: {text!r} (use e.g. 8G, 512M, 1G512M)")
    parts = re.findall(_SIZE_PART, text.strip(), flags)
    return int(sum(float(number) * _SCALE[unit.upper()] for number, unit in parts))


def format_size(n: float) -> str:
    """``n`` bytes for a person: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
