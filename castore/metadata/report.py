"""The dedup report: who shares which stored bytes, as SQL over the metadata tables.

Paths below a folder ``prefix`` are put in *groups* by their first ``depth`` segments
below it (``/contests/`` at depth 1: one group per contest; a file less deep than that
is a group of its own). Every figure is counted over the ``versions`` table (every
retained version, the current one included), because deleting a group deletes every
version of its paths:

* ``stored_bytes`` — the stored bytes of the distinct blobs the group's versions name;
* ``freed_bytes`` — the part of them that deleting the group (and a garbage collection)
  frees: blobs whose every reference lies in the group, i.e. the group's ``versions``
  rows naming the blob number its ``refcount`` (invariant 2 of ``docs/design.md``);
* ``shared_bytes`` — the rest: blobs also named by a version outside the group, in
  another group or outside the prefix. ``stored = freed + shared``.

How it stays fast and portable: a group is a contiguous range of the path order (a
folder ``g/`` is ``[g/, g0)``, a file is itself), so no SQL function has to cut paths
at their n-th ``/`` (SQLite has none, and a Python function called per row costs
seconds per million rows). The groups are found by a skip scan of the ``paths``
primary key (one indexed lookup per group), and each group's figures come from one
range-bounded aggregate over ``versions``, grouped by blob, so a database sorts one
group's rows at a time instead of a million (group, blob) pairs. A content is shared
between groups exactly when the first and the last path naming it (in the prefix) lie
in different groups. Every statement is plain SQLAlchemy Core, the same on SQLite and
PostgreSQL. ``benchmarks/report.py`` measures it on a million paths.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select

from .models import blobs, paths, versions

__all__ = ["SORT_KEYS", "DedupReport", "GroupUsage", "SharedContent", "dedup_report", "path_head_of"]

SORT_KEYS = ("name", "files", "versions", "logical", "retained", "stored", "freed", "shared", "ratio")
"""How groups can be ordered: by name (path order), or by a figure, largest first."""

MAX_GROUPS_PER_CONTENT = 20
"""At most this many groups are named for each shared content (``group_count`` has them all)."""


@dataclass(frozen=True)
class GroupUsage:
    """The figures of one group (or of the whole prefix, as the report's ``total``)."""

    group: str
    """The group's path: a folder ends with ``/``, a file less deep than the grouping does not."""
    files: int
    """Paths (each has one current version)."""
    versions: int
    """Retained versions, the current ones included."""
    logical_bytes: int
    """Sum of the sizes of the current versions."""
    retained_bytes: int
    """Sum of the sizes of every retained version."""
    stored_bytes: int
    """Stored bytes of the distinct contents the group's versions name."""
    freed_bytes: int
    """Stored bytes of the contents only this group names: what deleting it frees."""
    shared_bytes: int
    """Stored bytes of contents also named outside the group (``stored - freed``)."""

    @property
    def dedup_ratio(self) -> float:
        """Retained logical bytes per stored byte (1.0 for an empty group)."""
        return self.retained_bytes / self.stored_bytes if self.stored_bytes else 1.0


@dataclass(frozen=True)
class SharedContent:
    """One content named by versions in several groups, or also outside the prefix."""

    example_path: str
    """The first path (in path order) below the prefix whose versions name it."""
    size: int
    stored_size: int
    references: int
    """Versions naming it in the whole store (its refcount)."""
    prefix_references: int
    """Versions naming it below the prefix."""
    group_count: int
    groups: tuple[tuple[str, int], ...]
    """``(group, versions naming it there)``, at most :data:`MAX_GROUPS_PER_CONTENT`, by group."""

    @property
    def outside_references(self) -> int:
        """Versions naming it outside the prefix."""
        return self.references - self.prefix_references

    @property
    def saved_bytes(self) -> int:
        """Logical bytes that storing it once saves: ``size * (references - 1)``."""
        return self.size * (self.references - 1)


@dataclass(frozen=True)
class DedupReport:
    """The dedup report of one prefix (see the module docstring for the definitions)."""

    prefix: str
    depth: int
    total: GroupUsage
    """The prefix as one group: ``freed_bytes`` is what deleting everything below it frees."""
    groups: list[GroupUsage]
    """In group order (path order)."""
    shared: list[SharedContent]
    """The most shared contents, by :attr:`SharedContent.saved_bytes`, largest first."""

    def sorted_groups(self, key: str = "name", limit: int | None = None) -> list[GroupUsage]:
        """The groups by ``key`` (one of :data:`SORT_KEYS`): by name, or largest figure first;
        only the first ``limit`` (None: all), found without sorting all of them."""
        if key == "name":
            return self.groups[:limit]
        if key not in SORT_KEYS:
            raise ValueError(f"cannot sort by {key!r}: use one of {', '.join(SORT_KEYS)}")
        figure = {
            "files": lambda g: g.files,
            "versions": lambda g: g.versions,
            "logical": lambda g: g.logical_bytes,
            "retained": lambda g: g.retained_bytes,
            "stored": lambda g: g.stored_bytes,
            "freed": lambda g: g.freed_bytes,
            "shared": lambda g: g.shared_bytes,
            "ratio": lambda g: g.dedup_ratio,
        }[key]
        # stable: groups with equal figures stay in name order (nlargest is sorted(...)[:limit], stable too)
        if limit is not None:
            return heapq.nlargest(limit, self.groups, key=figure)
        return sorted(self.groups, key=figure, reverse=True)


# -- grouping (pure) ------------------------------------------------------------------


def path_head_of(path: str, start: int, depth: int) -> str:
    """The first ``depth`` segments of ``path[start:]``, with a ``/`` if more follow.

    ``path_head_of("/c/a/b/x", 3, 1) == "a/"``; ``path_head_of("/c/f", 3, 1) == "f"``;
    depth 0 gives ``""`` (the whole prefix is one group).
    """
    if depth == 0:
        return ""
    parts = path[start:].split("/", depth)
    return "/".join(parts[:depth]) + "/" if len(parts) > depth else path[start:]


_AFTER_FILE = "\x01"
"""``[path, path + _AFTER_FILE)`` holds ``path`` alone: no path has a control character."""


def _group_range(group: str) -> tuple[str, str]:
    """The half-open path range of a group: a folder's whole range, or one file."""
    return (group, group[:-1] + "0") if group.endswith("/") else (group, group + _AFTER_FILE)


# -- the statements -------------------------------------------------------------------


def _per_blob(extra: tuple[Any, ...] = ()) -> Any:
    """Per blob named in ``[:low, :high)``: versions naming it, current ones among them."""
    is_current = case((versions.c.version == paths.c.version, 1), else_=0)
    return (
        select(
            versions.c.blob_key.label("k"),
            func.count().label("n"),
            func.sum(is_current).label("ncur"),
            *extra,
        )
        .select_from(versions.join(paths, paths.c.path == versions.c.path))
        .where(versions.c.path >= bindparam("low"), versions.c.path < bindparam("high"))
        .group_by(versions.c.blob_key)
        .subquery("per_blob")
    )


def _figures_of(per_blob: Any) -> Any:
    freed = case((per_blob.c.n == blobs.c.refcount, blobs.c.stored_size), else_=0)
    return select(
        func.coalesce(func.sum(per_blob.c.ncur), 0),
        func.coalesce(func.sum(per_blob.c.n), 0),
        func.coalesce(func.sum(per_blob.c.ncur * blobs.c.size), 0),
        func.coalesce(func.sum(per_blob.c.n * blobs.c.size), 0),
        func.coalesce(func.sum(blobs.c.stored_size), 0),
        func.coalesce(func.sum(freed), 0),
    ).select_from(per_blob.join(blobs, blobs.c.key == per_blob.c.k))


_FIGURES = _figures_of(_per_blob())
"""One row of figures for the versions in ``[:low, :high)``."""

_NEXT_PATH = (
    select(paths.c.path)
    .where(paths.c.path >= bindparam("low"), paths.c.path < bindparam("high"))
    .order_by(paths.c.path)
    .limit(1)
)

_SPAN = _per_blob((func.min(versions.c.path).label("first"), func.max(versions.c.path).label("last")))
_FREED = case((_SPAN.c.n == blobs.c.refcount, blobs.c.stored_size), else_=0)
_BY_SAVINGS = (
    select(
        _SPAN.c.k,
        _SPAN.c.n,
        _SPAN.c.first,
        _SPAN.c.last,
        blobs.c.size,
        blobs.c.stored_size,
        blobs.c.refcount,
        # the figures of the whole range ride on every row (window sums over all of them)
        func.sum(_SPAN.c.ncur).over().label("t_files"),
        func.sum(_SPAN.c.n).over().label("t_versions"),
        func.sum(_SPAN.c.ncur * blobs.c.size).over().label("t_logical"),
        func.sum(_SPAN.c.n * blobs.c.size).over().label("t_retained"),
        func.sum(blobs.c.stored_size).over().label("t_stored"),
        func.sum(_FREED).over().label("t_freed"),
    )
    .select_from(_SPAN.join(blobs, blobs.c.key == _SPAN.c.k))
    .order_by((blobs.c.size * (blobs.c.refcount - 1)).desc(), _SPAN.c.first)
)
"""Every blob named in ``[:low, :high)``, most logical bytes saved by sharing first,
each row with the figures of the whole range: one pass gives the total and the
candidates for the most shared contents."""

_PATHS_NAMING = select(versions.c.blob_key, versions.c.path).where(
    versions.c.path >= bindparam("low"),
    versions.c.path < bindparam("high"),
    versions.c.blob_key.in_(bindparam("keys", expanding=True)),
)


def _usage(group: str, row: Any) -> GroupUsage:
    files, nversions, logical, retained, stored, freed = (int(x) for x in row)
    return GroupUsage(group, files, nversions, logical, retained, stored, freed, stored - freed)


def _groups(connection: Connection, low: str, high: str, depth: int) -> list[str]:
    """Every group below ``low``, in path order: a skip scan, one lookup per group."""
    if depth == 0:
        return [low]
    found: list[str] = []
    lower = low
    while True:
        path = connection.execute(_NEXT_PATH, {"low": lower, "high": high}).scalar()
        if path is None:
            return found
        group = low + path_head_of(path, len(low), depth)
        found.append(group)
        lower = _group_range(group)[1]


def dedup_report(connection: Connection, low: str, high: str, *, depth: int, top: int) -> DedupReport:
    """The report of the paths in ``[low, high)`` (below the folder ``low``) on one connection.

    Run it inside one read transaction so that every query sees the same state.
    """
    if depth < 0 or top < 0:
        raise ValueError("depth and top must not be negative")
    start = len(low)
    total = GroupUsage(low, 0, 0, 0, 0, 0, 0, 0)
    picked: list[Any] = []
    for number, row in enumerate(connection.execute(_BY_SAVINGS, {"low": low, "high": high})):
        if number == 0:
            figures = (row.t_files, row.t_versions, row.t_logical, row.t_retained, row.t_stored, row.t_freed)
            total = _usage(low, figures)
        if len(picked) == top or row.refcount < 2:
            break
        # groups are ranges of the path order: the first and last paths tell if one holds all
        spans = path_head_of(row.first, start, depth) != path_head_of(row.last, start, depth)
        if spans or row.n < row.refcount:
            picked.append(row)
    if depth == 0:
        groups = [total] if total.versions else []
    else:
        groups = []
        for group in _groups(connection, low, high, depth):
            group_low, group_high = _group_range(group)
            groups.append(_usage(group, connection.execute(_FIGURES, {"low": group_low, "high": group_high}).one()))
    return DedupReport(low, depth, total, groups, _shared(connection, low, high, depth, picked))


def _shared(connection: Connection, low: str, high: str, depth: int, picked: list[Any]) -> list[SharedContent]:
    """The picked contents with the groups whose versions name them."""
    if not picked:
        return []
    start = len(low)
    named: dict[str, dict[str, int]] = {row.k: {} for row in picked}
    params = {"low": low, "high": high, "keys": list(named)}
    for row in connection.execute(_PATHS_NAMING, params):
        group = low + path_head_of(row.path, start, depth)
        named[row.blob_key][group] = named[row.blob_key].get(group, 0) + 1
    return [
        SharedContent(
            example_path=row.first,
            size=int(row.size),
            stored_size=int(row.stored_size),
            references=int(row.refcount),
            prefix_references=int(row.n),
            group_count=len(named[row.k]),
            groups=tuple(sorted(named[row.k].items())[:MAX_GROUPS_PER_CONTENT]),
        )
        for row in picked
    ]
