"""The local side of uploading a folder: which files below it to store (``castore put -r``, ``castore ingest``).

:func:`walk_folder` lists the regular files below a folder, sorted, and what it skipped
and why: symbolic links unless followed (and then links back to a folder the walk is
inside, which would make it endless), broken links, FIFOs, sockets and devices, and
castore store folders (their files are a store's own, never files to store). Reading
only: nothing here opens a file or a store.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import BLOBS_DIR, METADATA_FILE

__all__ = ["FolderWalk", "is_store_folder", "walk_folder"]


@dataclass
class FolderWalk:
    """What :func:`walk_folder` found below a folder: regular files to store, and what it skipped.

    ``files``: (path, its ``os.stat_result``), sorted by path; for a followed link, the
    stat of what it points to. ``skipped``: (path, why), why being ``"symlink"``,
    ``"broken symlink"``, ``"a symlink loop"``, ``"not a regular file"`` or
    ``"a castore store's folder"``.
    """

    files: list[tuple[Path, os.stat_result]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def is_store_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a castore store folder (a metadata database and a blob folder)."""
    return os.path.isfile(os.path.join(path, METADATA_FILE)) and os.path.isdir(os.path.join(path, BLOBS_DIR))


def _links_back(link: str, inside: list[str]) -> bool:
    """Whether the folder ``link`` points to is one of the folders ``inside`` (real paths + sep) or above one."""
    target = os.path.realpath(link).rstrip(os.sep) + os.sep
    return any(real.startswith(target) for real in inside)


def walk_folder(folder: Path, *, follow_symlinks: bool = False) -> FolderWalk:
    """Regular files below ``folder`` (sorted); links are skipped unless followed, FIFOs etc. always.

    A store folder below ``folder`` (such as ``./castore-data`` under ``put -r .``) is
    skipped whole, listed: its files are the store's own (a database that changes while
    it is read, blobs that are stored contents already), never files to store. A folder
    that cannot be read raises its :class:`OSError`.
    """
    found = FolderWalk()
    if is_store_folder(str(folder)):  # put -r ./castore-data: the tree is a store itself
        found.skipped.append((folder, "a castore store's folder"))
        return found

    def fail_walk(error: OSError) -> None:
        raise error

    chains: dict[str, list[str]] = {}  # with links followed: each folder walked -> real paths (+ sep) of it and its parents

    for top, dirs, names in os.walk(folder, onerror=fail_walk, followlinks=follow_symlinks):
        dirs.sort()
        if follow_symlinks:
            # A link to a folder the walk is already inside (or to one above it) would take
            # os.walk round and round: a/up -> .. stored a/f ~40 times, two such links 2**40 paths,
            # and a/x -> b with b/y -> a as many times as the path length allows.
            inside = chains[top] = [*chains.get(os.path.dirname(top), []), os.path.realpath(top) + os.sep]
            for name in [d for d in dirs if os.path.islink(os.path.join(top, d)) and _links_back(os.path.join(top, d), inside)]:
                dirs.remove(name)
                found.skipped.append((Path(top, name), "a symlink loop"))
        for name in [d for d in dirs if (follow_symlinks or not os.path.islink(os.path.join(top, d)))
                     and is_store_folder(os.path.join(top, d))]:
            dirs.remove(name)
            found.skipped.append((Path(top, name), "a castore store's folder"))
        for entry in [*sorted(names), *(d for d in dirs if os.path.islink(os.path.join(top, d)))]:
            path = Path(top, entry)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                if not follow_symlinks:
                    found.skipped.append((path, "symlink"))
                    continue
                try:
                    info = path.stat()
                except OSError:
                    found.skipped.append((path, "broken symlink"))
                    continue
                if stat.S_ISDIR(info.st_mode):
                    continue  # os.walk descends into it
            if stat.S_ISREG(info.st_mode):
                found.files.append((path, info))
            elif not stat.S_ISDIR(info.st_mode):
                found.skipped.append((path, "not a regular file"))
    found.files.sort()
    return found
