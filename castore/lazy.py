"""Members of a module imported from their own module on first use (PEP 562).

``castore`` names the store (which loads SQLAlchemy) and ``castore.client`` names the
local cache (with shutil and tempfile); a program that never uses them should not pay
their import at start-up (issue #10). Both modules serve such names the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_members"]


def lazy_members(
    namespace: dict[str, Any], members: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` serving ``members`` (name -> sibling module) lazily.

    ``namespace`` is the module's ``globals()``: a member, once imported, is stored there,
    so later uses are plain lookups. An unknown name raises AttributeError as Python would.
    """
    module_name, package = namespace["__name__"], namespace["__package__"]

    def __getattr__(name: str) -> Any:
        module = members.get(name)
        if module is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(members))

    return __getattr__, __dir__
