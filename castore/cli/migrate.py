"""Moving in from Filetracker (:mod:`castore.migration`): ``import-filetracker``, ``migrate status`` and ``migrate finish``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import click

from ..sizes import format_size
from .common import EXIT_IO, EXIT_USAGE, Context, fail, pass_context, progress_wanted

__all__ = ["COMMANDS"]


@click.command(name="import-filetracker")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", "source_url", default=None, metavar="URL",
              help="Import from a running Filetracker 2.x server instead of a folder.")
@click.option("--v1", is_flag=True, help="FOLDER is a Filetracker 1.x folder: plain files, version = mtime.")
@click.option("--jobs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Files imported at once (threads; connections to the server).")
@click.option("--verify", is_flag=True, help="Afterwards re-read every imported path and compare with the source.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "json_flag", is_flag=True, help="Print the summary as JSON.")
@pass_context
def import_filetracker(c: Context, folder: Path | None, source_url: str | None, v1: bool, jobs: int,
                       verify: bool, progress: bool | None, json_flag: bool) -> None:
    """Import a Filetracker data folder (or server) into the store, versions included.

    FOLDER is a Filetracker 2.x server's data folder (links/ and blobs/), or with --v1
    a 1.x folder of plain files. Paths already stored at the same or a newer version
    are skipped, so a killed import resumes when run again; broken or corrupt files
    are reported and skipped. A full disk stops it (one line, exit 1; what it stored
    stays whole): run it again once there is room. Safe while castore serve uses the
    same store.

    Example: castore import-filetracker /var/lib/filetracker --verify
    """
    from ..migration import FolderV1, FolderV2, Importer, ServerSource, Source

    c.local_only("import-filetracker")
    if (folder is None) == (source_url is None):
        fail("give either FOLDER or --url URL", EXIT_USAGE)
    if v1 and folder is None:
        fail("--v1 reads a folder, not --url", EXIT_USAGE)
    try:
        source: Source = (
            ServerSource(source_url, ca_bundle=c.ca_bundle) if source_url is not None else (FolderV1 if v1 else FolderV2)(cast(Path, folder))
        )
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    show = progress_wanted(0, 2) if progress is None else progress
    store = c.store()
    importer = Importer(store, source, jobs=jobs)
    try:
        with _import_bar(source.count() if show else None, "import", show) as advance:
            report = importer.run(advance)
        if verify:
            with _import_bar(len(importer.done), "verify", show) as advance:
                differences = importer.verify(advance)
            report.verified = len(importer.done) - len(differences)
            report.problems.extend(differences)
    finally:
        source.close()
        importer.done.close()
    data = report.as_dict()
    lines = [
        (f"{source.description}: {report.files} files; imported {report.imported} versions "
        f"({report.linked} shared a content seen before), {report.already} already there, "
        f"{report.newer_in_castore} newer in castore, {report.deleted_in_castore} deleted in castore"),
        f"{format_size(report.logical_bytes)} logical, {format_size(report.stored_bytes)} stored "
        f"(dedup {report.dedup_ratio:.2f}x) in {report.seconds:.1f} s"
        + (f": {data['files_per_second']} files/s, {data['mb_per_second']} MB/s" if report.imported else ""),
    ]
    if report.verified is not None:
        lines.append(f"verified {report.verified} of {len(importer.done)} paths")
    if report.problems:
        lines.append(f"{len(report.problems)} problems:")
        lines += [f"  {problem}" for problem in report.problems]
    if json_flag:
        c.as_json = True
    c.emit(data, "\n".join(lines))
    if report.problems:
        fail(f"{len(report.problems)} files not imported or different (listed above)", EXIT_IO)


@contextmanager
def _import_bar(total: int | None, description: str, show: bool) -> Iterator[Callable[[Any, int], None]]:
    """A progress bar of files with bytes and MB/s; yields the per-file callback.

    Without a bar (``--json``, no terminal) the callback does nothing: formatting the bar's
    text cost 2 us a file that nobody saw (~1 % of an import of links at 10 M paths).
    """
    if not show:
        yield lambda _outcome, _size: None
        return
    from tqdm import tqdm

    started = time.perf_counter()
    done_bytes = 0
    with tqdm(total=total, desc=description, unit="file", leave=False, smoothing=0.1) as bar:

        def advance(_outcome: Any, size: int) -> None:
            nonlocal done_bytes
            done_bytes += size
            rate = done_bytes / max(time.perf_counter() - started, 1e-9) / 1e6
            bar.set_postfix_str(f"{format_size(done_bytes)}, {rate:.1f} MB/s", refresh=False)
            bar.update(1)

        yield advance


@click.group()
def migrate() -> None:
    """Moving in from an old Filetracker server while castore serve --migrate-from runs.

    Example: castore migrate status http://old-filetracker:9999
    """


@migrate.command(name="status")
@click.argument("url")
@click.option("--versions", is_flag=True, help="Also compare versions (one HEAD per path castore has).")
@click.option("--show", default=10, show_default=True, type=int, help="List up to this many paths left.")
@pass_context
def migrate_status(c: Context, url: str, versions: bool, show: int) -> None:
    """Say how many of the old server's files castore has, and how many are left.

    Example: castore migrate status http://old-filetracker:9999
    """
    from ..migration.live import migration_status

    c.local_only("migrate status")
    status = migration_status(c.store(), url, versions=versions, ca_bundle=c.ca_bundle)
    lines = [(f"{url}: {status.old_files} files; moved {status.moved}, deleted in castore {status.deleted}, "
             f"left {len(status.left)}")]
    lines += [f"  {path}" for path in status.left[:show]]
    if len(status.left) > show:
        lines.append(f"  ... and {len(status.left) - show} more")
    lines += [f"  problem: {p}" for p in status.problems]
    c.emit({**status.as_dict(), "left_paths": status.left[:show]}, "\n".join(lines))


@migrate.command(name="finish")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@pass_context
def migrate_finish(c: Context, yes: bool) -> None:
    """The move from Filetracker is over: forget the deletions remembered while it ran.

    castore serve --migrate-from remembers every path deleted in castore (one row each)
    so that neither a fetch from the old server nor an import brings it back. The rows are
    kept until this command: run it once no castore serve --migrate-from runs and no
    castore import-filetracker from the old server will run again (after that, such an
    import could bring a deleted file back).

    Example: castore migrate finish --yes
    """
    c.local_only("migrate finish")
    store = c.store()
    if not yes:
        if not sys.stdin.isatty():
            fail("migrate finish forgets every remembered deletion: confirm with --yes", EXIT_USAGE)
        click.confirm("Forget the deletions remembered while moving in from Filetracker?", abort=True, err=True)
    forgotten = store.metadata.forget_deletions()
    c.emit({"deletions_forgotten": forgotten}, f"forgot {forgotten} remembered deletions; the move is finished")


COMMANDS = (import_filetracker, migrate)
"""The commands this module adds to the ``castore`` group."""
