"""Byte counts as people write and read them: ``8G``, ``512M`` in; ``1.5 MiB`` out (binary units).

Pure functions, shared by the command line and the web page.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_SIZE_PART = r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?"
_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``8G``, ``512M``, ``1G512M``, ``2GiB`` or ``1000`` (binary units).

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
