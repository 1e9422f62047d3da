"""Where castore's and Filetracker's disk goes: stored contents part by part, and overhead.

Both systems keep one stored copy per distinct content (whole-file dedup), so their disk
differs by two things only, which this module tells apart from the data folder a run
left behind (before it is removed):

* **payload**: the stored (compressed) bytes of each distinct content, summed per part
  of the corpus: castore's ``stored_size`` (zstd at the store's level, or raw when that
  does not pay), Filetracker's blob file (gzip -9 by its client, named by SHA-256);
* **overhead**: everything else ``du`` counts: the unused tails of the 4 KiB blocks of
  blob files, folders, Filetracker's symlink and lock file per path and its Berkeley DB,
  castore's SQLite file (which also holds the contents up to ``inline_max`` bytes) and
  its ``.reserve`` (space kept so that deletes work on a full disk).

Every entry below the data folder is counted once with ``lstat`` (allocated bytes =
``st_blocks * 512``), so the categories add up to ``du -sB1`` of the folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from benchmarks.corpus import Corpus, Recipe

__all__ = ["breakdown", "by_category"]


def by_category(data: Path, system: str) -> dict[str, list[int]]:
    """Category -> [entries, apparent bytes, allocated bytes] of every entry below ``data``."""
    top = data.lstat()
    found: dict[str, list[int]] = {"folders": [1, top.st_size, top.st_blocks * 512]}
    for folder, dirs, files in os.walk(data):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            st = path.lstat()
            rel = path.relative_to(data).parts
            if path.is_symlink():
                category = "symlinks (one per path)"
            elif name in dirs:
                category = "folders"
            elif rel[0] == "blobs":
                category = "blob files"
            elif system == "filetracker" and rel[0] == "locks":
                category = "lock files (one per path and blob)"
            elif system == "filetracker" and rel[0] == "db":
                category = "database (Berkeley DB and its log)"
            elif system.startswith("castore") and name.startswith("metadata"):
                category = "database (SQLite, with the inline contents)"
            elif system.startswith("castore") and name == ".reserve":
                category = "space reserve (2 MiB kept for deletes on a full disk)"
            else:
                category = "other files"
            row = found.setdefault(category, [0, 0, 0])
            row[0] += 1
            row[1] += st.st_size
            row[2] += st.st_blocks * 512
    return found


def _representatives(corpus: Corpus) -> dict[Recipe, tuple[int, str]]:
    """One (year, path) per distinct content."""
    seen: dict[Recipe, tuple[int, str]] = {}
    for year, path, recipe in corpus.files():
        seen.setdefault(recipe, (year, path))
    return seen


def breakdown(system: str, data: Path, corpus: Corpus, src: Path) -> dict[str, Any]:
    """Payload per part and overhead by category for castore or Filetracker's ``data`` folder.

    ``parts`` maps a part of the corpus to [distinct contents, their bytes, stored bytes
    (apparent), allocated bytes of the blob files holding them (0 for contents castore
    keeps inline in SQLite)].
    """
    parts: dict[str, list[int]] = {}
    if system.startswith("castore"):
        from castore import Store
        from castore.blobs.fs import key_to_relpath
        from castore.keys import frame_name

        with Store.open(data) as store:
            for recipe, (_, path) in _representatives(corpus).items():
                info = store.stat(path)
                blob_file = data / "blobs" / key_to_relpath(frame_name(info.key, store.lookup(path).blob.frame))
                allocated = blob_file.stat().st_blocks * 512 if blob_file.exists() else 0
                row = parts.setdefault(recipe.part, [0, 0, 0, 0])
                row[0] += 1
                row[1] += info.size
                row[2] += info.stored_size
                row[3] += allocated
    else:
        for recipe, (year, path) in _representatives(corpus).items():
            content = (src / corpus.year_dir(year) / path.lstrip("/")).read_bytes()
            sha = hashlib.sha256(content).hexdigest()
            st = (data / "blobs" / sha[:2] / sha).stat()
            row = parts.setdefault(recipe.part, [0, 0, 0, 0])
            row[0] += 1
            row[1] += len(content)
            row[2] += st.st_size
            row[3] += st.st_blocks * 512
    return {"parts": parts, "categories": by_category(data, system)}
