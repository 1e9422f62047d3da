"""Copying a whole store to another setup (``castore migrate-store``), resumably, then verifying it.

The target gets the source's settings first, the secret seed included, so every content
keeps its key and deduplicates the same way. Then every retained version of every path
is put, oldest first (so the target retains the same versions), each streamed from the
source's reader (verified against its key as it is read) into the target's put (which
hashes it again). A version the target already has under the same key is skipped, so a
copy that was interrupted continues where it stopped. Verification compares every
version's key and size on both sides and runs the target's own check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from .errors import NotFound, SettingsMismatch
from .names import versioned_name
from .opening import Location, open_store, upgrade_schema_of
from .store import Store

__all__ = ["CopyReport", "copy_store", "verify_copy"]


@dataclass
class CopyReport:
    """What a copy did."""

    versions: int = 0
    copied: int = 0
    skipped: int = 0
    bytes: int = 0


def copy_store(source: Store, target: Location, *, on_version: Callable[[int], None] | None = None) -> CopyReport:
    """Copy every retained version of ``source`` into the store at ``target`` (created if needed).

    ``on_version(size)`` is called after each version (for a progress bar).
    """
    upgrade_schema_of(target)
    _copy_settings(source, target)
    report = CopyReport()
    with open_store(metadata=target.metadata, blobs=target.blobs) as copy:
        for info in source.list("/"):
            for version in reversed(source.versions(info.path)):  # oldest first
                report.versions += 1
                name = versioned_name(version.path, version.version)
                try:
                    if copy.stat(name).key == version.key:
                        report.skipped += 1
                        if on_version is not None:
                            on_version(version.size)
                        continue
                except NotFound:
                    pass
                with source.open_file(name) as reader:
                    copy.put(version.path, cast(BinaryIO, reader), version.version, expected_size=version.size)
                report.copied += 1
                report.bytes += version.size
                if on_version is not None:
                    on_version(version.size)
    return report


def verify_copy(source: Store, target: Location) -> list[str]:
    """Differences between ``source`` and the store at ``target``, then the target's own check."""
    problems = []
    with open_store(metadata=target.metadata, blobs=target.blobs) as copy:
        for info in source.list("/"):
            theirs = [(v.version, v.key, v.size) for v in source.versions(info.path)]
            try:
                ours = [(v.version, v.key, v.size) for v in copy.versions(info.path)]
            except NotFound:
                ours = []
            if ours != theirs:
                problems.append(f"{info.path}: versions {ours} in the copy, {theirs} in the source")
        source_paths = sum(1 for _ in source.list("/"))
        copy_paths = sum(1 for _ in copy.list("/"))
        if copy_paths != source_paths:
            problems.append(f"the copy has {copy_paths} paths, the source {source_paths}")
        problems += copy.check()
    return problems


def _copy_settings(source: Store, target: Location) -> None:
    """Give the target the source's settings (seed included), or check that it has them already."""
    wanted = {name: str(value) for name, value in source.metadata.settings().items()}
    from .metadata.repo import MetadataRepo

    repo = MetadataRepo(target.metadata)
    try:
        present = repo.init_settings(wanted)
    finally:
        repo.close()
    differing = sorted(k for k in ("seed", "retention", "inline_max", "zstd_level") if present.get(k) != wanted.get(k))
    if differing:
        raise SettingsMismatch(
            f"the target ({target.describe()}) holds another store (different {', '.join(differing)}); "
            "copy into an empty database"
        )
