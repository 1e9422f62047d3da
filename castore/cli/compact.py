"""``castore compact``: settle stored contents at a high zstd level (:mod:`castore.compacting`)."""

from __future__ import annotations

import click

from ..sizes import format_size
from .common import Context, pass_context, progress

__all__ = ["COMMANDS"]


@click.command()
@click.option("--level", type=click.IntRange(1, 22), default=19, show_default=True,
              help="zstd level to recompress at (19: ~8-18 % smaller than ingest's level 1 on text, decoded as fast).")
@click.option("--min-age", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Leave contents first stored less than this many seconds ago for a later run.")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Look at no more than N contents in this run.")
@click.option("--budget", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Start no new content after this many seconds.")
@click.option("--vacuum", is_flag=True,
              help="Once, for a SQLite store made before castore gave free pages back: rewrite the metadata file "
                   "(VACUUM; holds the write lock meanwhile and needs its size in free disk) so that compact and "
                   "gc give free pages back from then on.")
@pass_context
def compact(c: Context, level: int, min_age: float, limit: int | None, budget: float | None, vacuum: bool) -> None:
    """Recompress stored contents at a higher zstd level where it pays, oldest first.

    A new frame is kept only when it saves at least 3 % of a zstd content's stored bytes
    (5 % of a raw one's); it is decoded and checked against the content's chunk digests
    before its row switches to it, in one transaction. Contents kept inline are settled,
    and those in the blob folder or bucket that then fit inline move there. Readers are
    never disturbed; safe while servers run. A run continues where the last one stopped
    (also after a crash), so --limit and --budget cut the work into slices.

    At level 15 and above, a content of more than two 1 MiB chunks that begins like an
    older stored content (same first chunk; one of up to 32 MiB) is first tried as a delta
    frame compressed against that content, kept when it is at most a quarter of its stored
    bytes (a test input that changes another's tail: ~1 %). The older content then stays
    stored as long as a delta needs it, and is never a delta itself.

    Example: castore compact --min-age 86400 --budget 600
    """
    from ..compacting import backlog

    c.local_only("compact")
    store = c.store()
    with store:
        if vacuum and store.metadata.make_incremental():
            c.warn("the metadata file now gives free pages back (VACUUM done)")
        waiting = backlog(store, level=level, min_age=min_age)
        files = waiting.contents if limit is None else min(limit, waiting.contents)
        with progress("compact", waiting.logical_bytes if limit is None else None, files=max(files, 1)) as bar:
            report = store.compact(
                level=level, min_age=min_age, limit=limit, budget=budget,
                on_content=lambda row, after: bar.file_done(row.size, settled=int(after < row.stored_size)),
            )
    saved = report.bytes_before - report.bytes_after
    text = (
        f"looked at {report.contents} contents ({format_size(report.logical_bytes)}), settled {report.settled}"
        f" ({report.moved_inline} moved inline, {report.deltas} as deltas saving {format_size(report.delta_bytes_saved)})"
        f": stored {format_size(report.bytes_before)} -> "
        f"{format_size(report.bytes_after)} ({format_size(saved)} saved); {report.cpu_seconds:.1f} CPU seconds, "
        f"{report.mb_per_second:.2f} MB/s; {format_size(report.metadata_bytes_reclaimed)} of free metadata pages "
        "given back" + ("" if report.finished else "; more to do (run it again)")
    )
    c.emit(report.as_dict(), text)
    for damage in report.damaged or []:
        c.warn(f"damaged, left as it is (run castore check): {damage}")


COMMANDS = (compact,)
"""The commands this module adds to the ``castore`` group."""
