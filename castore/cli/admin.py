"""The store's administration commands: ``init``, ``check``, ``gc``, ``du``, ``token``,
``cache-clean``, ``migrate-schema``, ``migrate-store``.

Each opens the store itself (``--root``, or ``--metadata``/``--blobs``), so none works with
``--url``; ``cache-clean`` works on client cache folders instead.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..errors import StoreNotFound, TokenExists
from ..sizes import format_size, parse_size
from .common import (
    EXIT_EXISTS,
    EXIT_INTEGRITY,
    EXIT_INVALID,
    EXIT_IO,
    EXIT_NO_STORE,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Context,
    errors_as_exit_codes,
    fail,
    json_line,
    pass_context,
    progress,
    progress_wanted,
)

if TYPE_CHECKING:
    from ..maintenance import CheckReport
    from ..metadata.report import DedupReport, GroupUsage

__all__ = ["COMMANDS", "DU_SORT_KEYS"]


# -- init: a new store, or an existing one's schema upgraded ---------------------------------------


@click.command()
@click.option("--retention", type=click.IntRange(1), default=None, help="Versions kept per path (default 10).")
@click.option("--inline-max", type=click.IntRange(0), default=None,
              help="Largest content kept inline in the database, in bytes (default 131072).")
@click.option("--zstd-level", type=click.IntRange(1, 22), default=None, help="zstd level for blobs (default 1).")
@click.option("--create-bucket", is_flag=True,
              help="--blobs s3://…: make the bucket if it does not exist (else a missing bucket is an error, exit 5).")
@pass_context
def init(c: Context, retention: int | None, inline_max: int | None, zstd_level: int | None,
         create_bucket: bool) -> None:
    """Create a store at --root (or upgrade an existing one's schema).

    The settings are chosen at creation; giving one that differs from an existing
    store's is an error. With --blobs s3://… the bucket is checked first (a small put,
    get and delete under the prefix): a missing bucket, or one these credentials cannot
    write to, is an error (exit 5) that says what to do, and nothing is created.

    Example: castore --root ./castore-data init --retention 3
    """
    c.local_only("init")
    given = {k: v for k, v in (("retention", retention), ("inline_max", inline_max),
                               ("zstd_level", zstd_level)) if v is not None}
    try:
        store = c.store(create=True, create_bucket=create_bucket, **cast(dict[str, Any], given))
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    where = {} if c.metadata is None and c.blobs is None else vars(c.location())
    c.emit({"root": str(c.root), **where, **store.settings()},
           f"castore store ready at {c.root if not where else c.describe()} ("
           + ", ".join(f"{k}={v}" for k, v in store.settings().items()) + ")")


# -- check: the metadata and the blobs, page by page (castore/maintenance.py) ----------------------


class _CheckBar:
    """A tqdm bar on stderr (on a terminal only) for the blob pass of ``castore check``."""

    def __init__(self, verify: bool) -> None:
        self.verify = verify
        self.bar: Any = None

    def start(self, blobs: int, logical_bytes: int) -> None:
        from tqdm import tqdm

        if self.verify:
            self.bar = tqdm(total=logical_bytes, desc="verify", unit="B", unit_scale=True,
                            disable=not sys.stderr.isatty(), leave=False)
        else:
            self.bar = tqdm(total=blobs, desc="check", unit=" blobs", disable=not sys.stderr.isatty(), leave=False)

    def advance(self, blobs: int, logical_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(logical_bytes if self.verify else blobs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_text(report: CheckReport) -> str:
    lines = [
        f"paths:          {report.paths}",
        f"versions:       {report.versions}",
        f"blobs:          {report.blobs} checked, {report.unreferenced_blobs} unreferenced (castore gc collects them)",
        f"bytes checked:  {format_size(report.stored_bytes_checked)} stored present"
        + (f"; {format_size(report.verified_bytes)} verified in {report.blob_seconds:.1f} s "
           f"({report.verify_rate / 1e6:.1f} MB/s)" if report.verify_content else ""),
        f"time:           {report.seconds:.1f} s",
        f"orphan files:   {report.orphan_files}"
        + (f" ({report.orphan_files_removed} removed; younger than the grace period: kept)" if report.repair
           else " (--repair removes those older than the grace period)" if report.orphan_files else ""),
    ]
    if report.staging_files_removed is not None:
        lines.append(f"staging files:  {report.staging_files_removed} removed")
    if report.digests_added is not None:
        lines.append(f"chunk digests:  {report.digests_added} added")
    lines.append(f"problems:       {report.problem_count}" + (f" ({report.repaired_count} repaired)" if report.repair else ""))
    lines += [f"  {p.kind}: {p}" for p in report.problems]
    if report.problem_count > len(report.problems):
        lines.append(f"  … and {report.problem_count - len(report.problems)} more")
    if report.lost_count:
        lines.append(f"lost:           {report.lost_count} versions whose blob is missing or corrupt (kept, not dropped)")
        lines += [f"  {name}" for name in report.lost]
        if report.lost_count > len(report.lost):
            lines.append(f"  … and {report.lost_count - len(report.lost)} more")
    status = {0: "clean", 1: "repaired", 2: "DAMAGE REMAINS"}[report.exit_code]
    lines.append(f"status:         {status} (exit {report.exit_code})")
    return "\n".join(lines)


@click.command()
@click.option("--verify-content", is_flag=True, help="Also decode every blob and verify it against its key.")
@click.option("--repair", is_flag=True,
              help="Fix reference counts, remove old orphan and staging files, add missing chunk digests.")
@click.option("--grace", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              help="Seconds an orphan or staging file must be old before --repair removes it.")
@click.option("--json", "check_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def check(c: Context, verify_content: bool, repair: bool, grace: float, check_json: bool) -> None:
    """Check the metadata and the blobs page by page; --repair fixes what can be fixed.

    Paths whose blob is missing or corrupt are listed, never dropped. The whole-store
    totals every write keeps (castore du) are recounted; --repair keeps the recount.

    \b
    Exit status:
      0  clean
      1  problems were found and all repaired
      2  damage remains (a lost blob, a problem --repair cannot fix, or
         problems found without --repair); also bad usage
      5  no store at --root;  6  the check could not run (e.g. a metadata read error)

    Example: castore check --verify-content --repair
    """
    from ..maintenance import check as run_check

    c.local_only("check")
    bar = _CheckBar(verify_content)
    try:
        report = run_check(c.store(), verify_content=verify_content, repair=repair, grace=grace, progress=bar)
    except StoreNotFound as e:
        fail(str(e), EXIT_NO_STORE)
    except Exception as e:  # noqa: BLE001 - a check that cannot finish must not exit 1 ("repaired")
        message = " ".join(str(e).split())[:300]
        fail(f"check could not finish: {type(e).__name__}: {message}", EXIT_INTEGRITY)
    finally:
        bar.close()
    if check_json or c.as_json:
        click.echo(json_line(report.as_dict()))
    else:
        click.echo(_check_text(report))
    click.get_current_context().exit(report.exit_code)


# -- gc and du: what the store holds and what it frees ---------------------------------------------


@click.command()
@click.option("--staging-grace", type=float, default=3600.0, show_default=True,
              help="Seconds before an abandoned staging file is removed.")
@pass_context
def gc(c: Context, staging_grace: float) -> None:
    """Remove blobs no retained version references (run it after manage.py collectgarbage).

    Example: castore gc
    """
    from tqdm import tqdm

    c.local_only("gc")
    # blobs removed so far, on a terminal: the total is not known before the end
    with tqdm(desc="gc", unit=" blobs", disable=not progress_wanted(0, 2), leave=False, file=sys.stderr) as bar:
        report = c.store().collect_garbage(staging_grace=staging_grace, on_batch=lambda blobs, _: bar.update(blobs))
    c.emit(asdict(report), f"removed {report.blobs} blobs ({format_size(report.stored_bytes)}), "
                           f"{report.staging_files} staging files")


DU_SORT_KEYS = ("name", "files", "versions", "logical", "retained", "stored", "freed", "shared", "ratio")
"""``castore du --sort`` choices: :data:`castore.metadata.report.SORT_KEYS` (kept here so that
``castore --help`` does not import SQLAlchemy; a test checks they agree)."""


@click.command()
@click.argument("prefix", required=False)
@click.option("--by", "depth", type=click.IntRange(0, 64), default=None, metavar="DEPTH",
              help="Group the paths below PREFIX by their first DEPTH segments (default 1).")
@click.option("--sort", type=click.Choice(DU_SORT_KEYS), default="name", show_default=True,
              help="Order of the groups: by name, or by that figure, largest first.")
@click.option("--top", type=click.IntRange(0, 10_000), default=10, show_default=True, metavar="N",
              help="How many of the most shared contents to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as the global --json does).")
@pass_context
def du(c: Context, prefix: str | None, depth: int | None, sort: str, top: int, as_json: bool) -> None:
    """Show logical vs stored bytes; with PREFIX or --by, who shares what below PREFIX.

    Without arguments: the store's totals and deduplication ratio, as every write keeps
    them (one small query, however large the store; castore check recounts them). With PREFIX (default /)
    or --by: one row per group of paths (their first DEPTH segments below PREFIX) with
    files, versions, logical and retained bytes, stored bytes, what deleting the group
    frees and what it shares with paths outside it, then the most shared contents and
    the groups holding them. Counted over every retained version.

    Example: castore du /contests --by 1 --sort freed
    """
    c.local_only("du")
    c.as_json = c.as_json or as_json
    if prefix is None and depth is None:
        _du_totals(c)
        return
    report = c.store().dedup_report(prefix or "/", depth=1 if depth is None else depth, top=top)
    groups = report.sorted_groups(sort)
    c.emit(_report_json(report, groups, sort), _report_text(report, groups))


def _du_totals(c: Context) -> None:
    store = c.store()
    usage = store.usage()
    overhead = store.overhead()
    kept = store.metadata.kept_references()
    data = {**asdict(usage), "dedup_ratio": round(usage.dedup_ratio, 4), "overhead": overhead,
            "kept_references": kept}
    text = "\n".join(
        [
            f"files:          {usage.files} ({usage.versions} versions retained)",
            f"logical bytes:  {format_size(usage.logical_bytes)} current, {format_size(usage.retained_bytes)} retained",
            f"blobs:          {usage.blobs} ({usage.inline_blobs} inline), {format_size(usage.blob_bytes)} distinct",
            f"stored bytes:   {format_size(usage.stored_bytes)}",
            f"dedup ratio:    {usage.dedup_ratio:.2f}x (retained / stored)",
            f"collectable:    {usage.unreferenced_blobs - kept} blobs (castore gc)"
            + (f"; {kept} more kept for the delta frames that decode against them" if kept else ""),
            _overhead_text(overhead),
        ]
    )
    c.emit(data, text)


def _overhead_text(overhead: dict[str, int | None]) -> str:
    """One line: what the store takes beyond its stored bytes, and of what."""
    parts = [f"metadata tables and indexes {format_size(overhead['tables'] or 0)}"] if overhead["tables"] is not None else []
    if overhead["free_pages"] is not None:
        parts.append(f"free pages {format_size(overhead['free_pages'])}"
                     + ("" if overhead["incremental"] else " (kept: run castore compact --vacuum once)"))
    parts.append(f"blob files' last blocks ~{format_size(overhead['file_slack'] or 0)}")
    if overhead["reserve"]:
        parts.append(f"space reserve {format_size(overhead['reserve'])}")
    return f"overhead:       {format_size(overhead['total'] or 0)} ({', '.join(parts)})"


def _group_json(group: GroupUsage) -> dict[str, Any]:
    return {**asdict(group), "dedup_ratio": round(group.dedup_ratio, 4)}


def _report_json(report: DedupReport, groups: list[GroupUsage], sort: str) -> dict[str, Any]:
    return {
        "prefix": report.prefix,
        "by": report.depth,
        "sort": sort,
        "total": _group_json(report.total),
        "groups": [_group_json(g) for g in groups],
        "shared": [
            {
                "example_path": s.example_path,
                "size": s.size,
                "stored_size": s.stored_size,
                "references": s.references,
                "prefix_references": s.prefix_references,
                "outside_references": s.outside_references,
                "saved_bytes": s.saved_bytes,
                "group_count": s.group_count,
                "groups": [{"group": g, "references": n} for g, n in s.groups],
            }
            for s in report.shared
        ],
    }


_GROUPS_SHOWN = 6
"""Groups named per shared content in the table (--json names up to 20)."""

_REPORT_COLUMNS = ("GROUP", "FILES", "VERSIONS", "LOGICAL", "RETAINED", "STORED", "FREED IF DELETED", "SHARED", "DEDUP")


def _report_row(name: str, g: GroupUsage) -> tuple[str, ...]:
    sizes = (g.logical_bytes, g.retained_bytes, g.stored_bytes, g.freed_bytes, g.shared_bytes)
    return (name, str(g.files), str(g.versions), *map(format_size, sizes), f"{g.dedup_ratio:.2f}x")


def _report_text(report: DedupReport, groups: list[GroupUsage]) -> str:
    rows = [_REPORT_COLUMNS, *(_report_row(g.group, g) for g in groups)]
    rows.append(_report_row(f"all of {report.prefix}", report.total))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_REPORT_COLUMNS))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))]
        return "  ".join(cells).rstrip()

    out = [line(row) for row in rows[:-1]]
    out += ["-" * len(line(rows[0])), line(rows[-1]), ""]
    out.append("freed if deleted: stored bytes only this group's versions name (after castore gc);")
    out.append("shared: stored bytes also named outside the group; dedup: retained / stored.")
    if report.shared:
        out += ["", f"Most shared contents (by logical bytes saved), {len(report.shared)} shown:"]
        for n, s in enumerate(report.shared, 1):
            holders = ", ".join(f"{g} ({k})" for g, k in s.groups[:_GROUPS_SHOWN])
            if s.group_count > min(len(s.groups), _GROUPS_SHOWN):
                holders += f", ... {s.group_count} groups in all"
            if s.outside_references:
                holders += f"; {s.outside_references} outside {report.prefix}"
            out.append(f"{n:3}. {format_size(s.size)} (stored {format_size(s.stored_size)}), {s.references} versions: "
                       f"{holders}")
            out.append(f"     e.g. {s.example_path}")
    else:
        out += ["", f"No content is shared between groups or with paths outside {report.prefix}."]
    return "\n".join(out)


# -- token: the server's access tokens (castore/server/tokens.py) ----------------------------------


@click.group()
def token() -> None:
    """Manage the server's access tokens, and whether requests need one.

    A store is open to anyone until its first token is made: that closes it. A closed
    store's server answers only requests that carry a valid token (GET and HEAD /health
    stay open): Filetracker's client with FILETRACKER_URL=http://any:TOKEN@host:9999,
    castore's with the same URL or CASTORE_TOKEN. Revoking the last token leaves it
    closed (then nobody gets in); only token open-access --yes opens it again. Roles:
    read (GET, HEAD, /metrics), write (also PUT, DELETE), admin (everything). Every server
    notices new and revoked tokens, and open-access, within 5 seconds.

    Example: castore token create --role write --name judge-1
    """


@token.command(name="create")
@click.option("--role", required=True, type=click.Choice(["read", "write", "admin"]), help="What the token may do.")
@click.option("--name", default=None, help="A name to list and revoke it by (default: ROLE-<random>).")
@pass_context
def token_create(c: Context, role: str, name: str | None) -> None:
    """Create a token and print it: it is shown only this once (only its hash is kept).

    Closes the store: from now on requests need a token. Exit codes: 0 created,
    4 invalid name, 11 a token with that name exists (nothing created), 5 no store.

    Example: castore token create --role read --name grader
    """
    from ..server.tokens import create_token

    c.local_only("token create")
    try:
        name, secret = create_token(c.store().metadata, role, name)
    except TokenExists as e:
        fail(str(e), EXIT_EXISTS)
    except ValueError as e:
        fail(str(e), EXIT_INVALID)
    if c.as_json:
        c.emit({"name": name, "role": role, "token": secret}, "")
        return
    click.echo(secret)
    click.echo(f"castore: token {name!r} ({role}) created; it cannot be shown again.", err=True)


def _access_line(closed: bool) -> str:
    if closed:
        return "access: closed: every request needs a valid token (castore token open-access --yes opens it)"
    return "access: open to anyone: no token needed (castore token create closes it)"


@token.command(name="list")
@pass_context
def token_list(c: Context) -> None:
    """Say whether requests need a token, then list the tokens: name, role, creation time.

    The tokens themselves are never shown. With --json the first line is
    {"access": "closed"} or {"access": "open"}, then one line per token.

    Example: castore token list
    """
    c.local_only("token list")
    metadata = c.store().metadata
    closed = metadata.access_closed()
    c.emit({"access": "closed" if closed else "open"}, _access_line(closed))
    for row in metadata.tokens():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.created))
        c.emit({"name": row.name, "role": row.role, "created": row.created}, f"{row.name}\t{row.role}\t{created} UTC")


@token.command(name="revoke")
@click.argument("name")
@pass_context
def token_revoke(c: Context, name: str) -> None:
    """Delete the token called NAME; servers refuse it within 5 seconds. The store stays closed.

    Example: castore token revoke grader
    """
    from ..server.tokens import revoke_token

    c.local_only("token revoke")
    metadata = c.store().metadata
    if not revoke_token(metadata, name):
        fail(f"no token named {name!r}", EXIT_NOT_FOUND)
    c.emit({"name": name, "revoked": True}, f"revoked {name}")
    if not metadata.tokens():
        c.warn("castore: no token left: the store stays closed, nobody gets in "
               "(castore token create makes one; castore token open-access --yes opens the store to anyone)")


@token.command(name="open-access")
@click.option("--yes", is_flag=True, help="Yes, let anyone who reaches the server read, write and delete.")
@pass_context
def token_open_access(c: Context, yes: bool) -> None:
    """Open the store to requests without a token (as before its first token), once no token exists.

    Every server answers anyone within 5 seconds. Refused while tokens exist (revoke
    them first) and without --yes. The next token create closes the store again.

    Example: castore token open-access --yes
    """
    from ..server.tokens import open_access

    c.local_only("token open-access")
    if not yes:
        fail("token open-access lets anyone who reaches the server read, write and delete: "
             "add --yes if that is what you want", EXIT_USAGE)
    try:
        open_access(c.store().metadata)
    except ValueError as e:
        fail(str(e))
    c.emit({"access": "open"}, _access_line(False))


# -- cache-clean: client cache folders -------------------------------------------------------------


@click.command(name="cache-clean")
@click.option("--cache-dir", "cache_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A client cache folder (repeatable; default $FILETRACKER_DIR or ~/.filetracker-store).")
@click.option("--max-size", required=True, help="Clean once a cache holds this much, e.g. 8G, 512M, 1G512M.")
@click.option("--keep", default=50.0, show_default=True, type=click.FloatRange(0, 100),
              help="Percent of --max-size left after cleaning.")
@click.option("--every", default=None, type=float, help="Repeat every this many seconds (run as a daemon).")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@pass_context
def cache_clean(c: Context, cache_dirs: tuple[Path, ...], max_size: str, keep: float, every: float | None,
                dry_run: bool) -> None:
    """Evict least recently used files from client caches (replaces filetracker-cache-cleaner).

    A --cache-dir that does not exist is an error (exit 7); nothing is created.

    Example: castore cache-clean --cache-dir /var/cache/castore --max-size 8G --keep 50
    """
    from ..client import default_cache_dir
    from ..client.cache import LocalCache

    try:
        limit = parse_size(max_size)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--max-size") from None
    for folder in cache_dirs:
        if not folder.is_dir():  # a typo must not pass for an empty cache
            fail(f"{folder}: no such cache folder", EXIT_IO)
    caches = [LocalCache(d) for d in cache_dirs] or [LocalCache(default_cache_dir())]
    while True:
        for cache in caches:
            report = cache.clean(limit, keep_fraction=keep / 100, dry_run=dry_run)
            verb = "would remove" if dry_run else "removed"
            c.emit({"cache_dir": str(cache.root), "dry_run": dry_run, **asdict(report)},
                   f"{cache.root}: {report.files_before} files, {format_size(report.bytes_before)}; "
                   f"{verb} {report.files_removed} files, {format_size(report.bytes_removed)}")
        if every is None:
            return
        time.sleep(every)


# -- migrate-schema and migrate-store: a store's schema, a store's copy elsewhere ------------------


@click.command(name="migrate-schema")
@pass_context
def migrate_schema(c: Context) -> None:
    """Upgrade the store's metadata schema to this castore's (run it after upgrading castore).

    Opening a store never migrates it. Safe while servers run: migrations wait for each
    other under a lock in the database.

    Example: castore --metadata postgresql+psycopg://castore@db/castore --blobs s3://bucket migrate-schema
    """
    from ..opening import migrate

    c.local_only("migrate-schema")
    where = c.location()
    with errors_as_exit_codes():
        before, now = migrate(where)
    text = f"schema already at revision {now}" if before == now else f"schema upgraded from {before} to {now}"
    c.emit({"before": before, "revision": now}, text)


@click.command(name="migrate-store")
@click.option("--to-metadata", required=True, metavar="URL", help="Metadata URL of the copy (sqlite:///… or postgresql…).")
@click.option("--to-blobs", required=True, metavar="URL", help="Blobs URL of the copy (file:///… or s3://…).")
@pass_context
def migrate_store(c: Context, to_metadata: str, to_blobs: str) -> None:
    """Copy the whole store (every path, retained version and setting) to another setup, and verify it.

    Resumable: run it again after an interruption and it continues. Stop writes to the
    source for the final run, then point the servers at the copy.

    Example: castore --root ./castore-data migrate-store --to-metadata postgresql+psycopg://castore@db/castore
    --to-blobs 's3://bucket/castore?endpoint_url=http://minio:9000'
    """
    from ..moving import copy_store, verify_copy
    from ..opening import locate

    c.local_only("migrate-store")
    try:
        target = locate(metadata=to_metadata, blobs=to_blobs)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    with errors_as_exit_codes():
        source = c.store()
        total = source.usage().retained_bytes
        with progress("migrate-store", total, files=source.usage().versions) as bar:

            def one_version(size: int) -> None:
                bar.update(size)
                bar.file_done()

            report = copy_store(source, target, on_version=one_version)
        problems = verify_copy(source, target)
    c.emit({**vars(report), "problems": problems},
           f"copied {report.copied} versions ({format_size(report.bytes)}), {report.skipped} already there; "
           + ("verified: ok" if not problems else f"{len(problems)} problems:\n" + "\n".join(problems)))
    if problems:
        fail(f"{len(problems)} differences between the store and its copy", EXIT_INTEGRITY)


COMMANDS = (init, check, gc, du, token, cache_clean, migrate_schema, migrate_store)
"""The commands this module adds to the ``castore`` group."""
