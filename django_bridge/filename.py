"""The name of a stored file as Django sees it: unversioned as a string, versioned inside."""

from __future__ import annotations

from typing import Any, Self

from castore.names import parse_version

__all__ = ["FiletrackerFilename", "split_versioned"]


def split_versioned(name: str) -> tuple[str, int | None]:
    """``"a/b.txt@17"`` → ``("a/b.txt", 17)``; ``"a/b.txt"`` → ``("a/b.txt", None)``.

    The version is what follows the last ``@`` of the last path segment, and must be a
    non-negative integer in ASCII digits (ValueError otherwise: castore's own rule,
    :func:`castore.names.parse_version`, which refuses ``"²"`` that ``str.isdigit`` takes).
    """
    base, at, version = name.rpartition("@")
    if not at or "/" in version:
        return name, None
    try:
        return base, parse_version(version)
    except ValueError as e:
        raise ValueError(f"{e} in file name {name!r}") from None


class FiletrackerFilename(str):
    """A file name whose string value is unversioned and whose ``versioned_name`` is not.

    ``FiletrackerFilename("tests/x.txt@1234") == "tests/x.txt"``, and its
    ``.versioned_name`` is ``"tests/x.txt@1234"``: templates, ``os.path`` and comparisons
    see the plain name, while the database column keeps the exact version.
    """

    versioned_name: str

    def __new__(cls, versioned_name: Any) -> Self:
        if isinstance(versioned_name, FiletrackerFilename):
            versioned_name = versioned_name.versioned_name
        versioned_name = str(versioned_name)
        name, _ = split_versioned(versioned_name)
        instance = super().__new__(cls, name)
        instance.versioned_name = versioned_name
        return instance

    @property
    def version(self) -> int | None:
        """The version, or None for an unversioned name."""
        return split_versioned(self.versioned_name)[1]

    def __reduce__(self) -> tuple[type[FiletrackerFilename], tuple[str]]:
        return (FiletrackerFilename, (self.versioned_name,))

    def __repr__(self) -> str:
        return f"FiletrackerFilename({self.versioned_name!r})"
