"""Staging files a live writer holds locked, and the sweep that removes only unheld ones.

A writer holds an exclusive ``flock`` on its staging file from creation until its blob
is published or thrown away; :func:`sweep_unheld` removes only files it can lock itself,
so it never takes a file from under a live upload (of this process or another sharing
the folder, e.g. every S3 store's default ``/tmp/castore-s3-staging``), however short
the grace. A crashed writer's lock goes with its process, and its file is swept.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

__all__ = ["locked_new_file", "sweep_unheld"]


def locked_new_file(directory: Path) -> tuple[int, Path]:
    """A new staging file, opened and exclusively locked, still linked under its name.

    A sweep may lock and unlink a file between its creation and our lock: then the
    name no longer leads to our file, and we make another.
    """
    while True:
        fd, name = tempfile.mkstemp(prefix="tmp-", dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


def sweep_unheld(directory: Path, older_than: float) -> int:
    """Remove the files of ``directory`` older than ``older_than`` that no live writer holds; how many."""
    removed = 0
    for entry in os.scandir(directory):
        try:
            if entry.stat().st_mtime >= older_than:
                continue
            fd = os.open(entry.path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live writer holds it
            continue
        try:
            if os.stat(entry.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return removed
