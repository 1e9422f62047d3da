"""The file commands: ``put`` (``put -r`` beside it), ``get``, ``cat``, ``ls``, ``rm``, ``stat``, ``log``, ``ingest``.

All but ``log`` go through :class:`castore.client.Client`, so they work the same on the
store at ``--root`` and on a server at ``--url``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from ..errors import FileNotAvailable, FiletrackerError, NotFound
from ..names import check_path, check_prefix, check_version, parse_name, parse_prefix, versioned_name
from ..sizes import IO_BUFFER, format_size
from .common import (
    EXIT_DENIED,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_KEPT,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Context,
    ProgressBar,
    exit_code_for,
    fail,
    is_denied,
    message_for,
    pass_context,
    progress,
    strict_option,
)

if TYPE_CHECKING:
    from ..client import Client, PutResult
    from ..store import FileInfo

__all__ = ["COMMANDS", "PUT_JOBS"]


def _check_kept(c: Context, wanted: str, stored: str, strict: bool, undone: str = "was not stored") -> bool:
    """Say so on stderr when a put (or rm) was ignored because a newer version is stored; True if so.

    With ``strict`` that is an error, exit :data:`EXIT_KEPT`.
    """
    if stored == wanted:
        return False
    current = parse_name(stored).version
    c.warn(f"kept: a newer version @{current} is stored ({wanted} {undone})")
    if strict:
        fail(f"{wanted} {undone}: a newer version @{current} is stored", EXIT_KEPT)
    return True


def _copy(source: BinaryIO, out: BinaryIO, bar: ProgressBar) -> None:
    """Copy ``source`` to ``out`` in blocks, counting each block on the progress bar."""
    while chunk := source.read(IO_BUFFER):
        out.write(chunk)
        bar.update(len(chunk))


# -- put: one file, or with -r a folder ------------------------------------------------------------


@click.command()
@click.argument("local", type=click.Path(allow_dash=True))
@click.argument("name")
@strict_option
@click.option("-r", "--recursive", is_flag=True,
              help="LOCAL is a folder: store every regular file below it under the prefix NAME.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, metavar="N",
              help="With -r: files sent at a time, over N kept-alive connections (default 4).")
@pass_context
def put(c: Context, local: str, name: str, strict: bool, recursive: bool, jobs: int | None) -> None:
    """Store a local file (or - for stdin) under NAME; print the versioned name now stored.

    Without @version the version is now. An older version than the stored one is not
    stored (Filetracker's rule): stderr says "kept: a newer version @N is stored", and
    --strict makes that exit 8.

    NAME cannot be a folder of the store, nor below a file of it (exit 12).

    With -r, LOCAL is a folder and NAME a prefix: every regular file below LOCAL is
    stored under it, all with one version (NAME's @version, else now), --jobs at a time
    over kept-alive connections. A file that fails does not stop the others: each
    failure is one line on stderr, and the exit code is the first failed file's. A
    refused token or role (HTTP 401/403) or a read-only store stops it at once (exit
    10). Ctrl-C stops it too: the files in flight finish, it says how many files were
    stored (each whole), and exits 130; the same command again stores the rest.

    Example: castore put tests/1a.in /problems/12/tests/1a.in;  castore put -r --jobs 8 ./tests /problems/12/tests
    """
    import tempfile

    if recursive:
        _put_tree(c, local, name, strict, jobs or PUT_JOBS)
        return
    if jobs is not None:
        fail("--jobs is for put -r (a folder)", EXIT_USAGE)
    if os.path.isdir(local):
        fail(f"{local} is a folder: use castore put -r {local} {name}", EXIT_USAGE)
    parsed = parse_name(name)
    wanted = versioned_name(parsed.path, parsed.version if parsed.version is not None else int(time.time()))
    client = c.client()
    if local == "-":
        with tempfile.NamedTemporaryFile(prefix="castore-stdin-") as spool:
            with progress("put", None) as bar:
                _copy(sys.stdin.buffer, spool, bar)  # type: ignore[arg-type]
            spool.flush()
            stored = client.put_file(wanted, spool.name)
    else:
        if not os.path.isfile(local):
            fail(f"{local}: no such local file", EXIT_IO)
        with progress("put", os.path.getsize(local)) as bar:
            stored = client.put_file(wanted, local, progress=bar.update)
    kept = _check_kept(c, wanted, stored, strict)
    c.emit({"name": stored, "kept_newer": kept}, stored)


# -- put -r: a folder of many small files over a few connections -----------------------------------

PUT_JOBS = 4
"""Files ``castore put -r`` sends at a time unless --jobs says otherwise."""


def _printable(name: str) -> str:
    """A name as one line of output: quoted and escaped when it holds a newline or control character."""
    return name if name.isprintable() else repr(name)


class _Denied(Exception):
    """``put -r`` met a refused token or role: stop (raised from ``put_files``' ``on_result``)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _put_tree(c: Context, local: str, name: str, strict: bool, jobs: int) -> None:
    """``castore put -r``: every regular file below ``local`` under the prefix ``name``, ``jobs`` at a time.

    One version for all (``name``'s @version, else now). A file that fails does not stop
    the others: each failure is one line on stderr, then the command exits with the
    code of the first failed file. Symbolic links, FIFOs and the like are skipped, listed.
    """
    folder = Path(local)
    if not folder.is_dir():
        fail(f"{local}: no such local folder (put -r takes a folder)", EXIT_IO)
    prefix, given = parse_prefix(name)  # "/" and "/q/" are prefixes too
    base = prefix.rstrip("/")
    version = given if given is not None else int(time.time())
    from ..client.walk import walk_folder

    walk = walk_folder(folder)
    for path, why in walk.skipped:
        c.warn(f"skipped ({why}): {_printable(str(path))}")
    pairs = [(versioned_name(f"{base}/{path.relative_to(folder).as_posix()}", version), path) for path, _ in walk.files]
    sizes = {str(path): info.st_size for path, info in walk.files}
    total = sum(sizes.values())
    client = c.client()
    finished: list[PutResult] = []  # appended from put_files' threads, in the order the answers come

    def on_result(result: PutResult) -> None:
        finished.append(result)
        bar.file_done(sizes.get(result.source, 0), kept=int(result.kept_newer), failed=int(not result.ok))
        if result.error is not None and is_denied(result.error):
            raise _Denied(result.error)  # every other file would be refused alike: stop

    try:
        with progress("put", total, files=len(pairs)) as bar:
            results = client.put_files(pairs, jobs=jobs, progress=bar.update, on_result=on_result)
    except _Denied as e:
        fail(message_for(e.error), EXIT_DENIED)
    except KeyboardInterrupt:
        done = [r for r in finished if r.ok and not r.kept_newer]
        others = len(finished) - len(done)
        fail(f"interrupted: stored {len(done)} of {len(pairs)} files"
             + (f" ({others} kept or failed)" if others else "")
             + "; running the same command again finishes the rest", EXIT_INTERRUPTED)
    stored = [r for r in results if r.ok and not r.kept_newer]
    kept = [r for r in results if r.kept_newer]
    failed = [r for r in results if r.error is not None]
    for r in kept:
        c.warn(f"kept: a newer version @{parse_name(r.stored or '').version} is stored "
               f"({_printable(r.wanted)} was not stored)")
    for r in failed:
        assert r.error is not None
        c.warn(f"failed: {_printable(r.wanted)}: {message_for(r.error)}")
    c.emit({"files": len(stored), "bytes": total, "kept_newer": len(kept), "failed": len(failed),
            "skipped": len(walk.skipped), "names": [r.stored for r in stored]},
           f"put {len(stored)} files ({format_size(total)}) as {base}/…@{version}, {len(kept)} kept "
           f"(a newer version is stored), {len(failed)} failed, {len(walk.skipped)} skipped")
    if failed:
        first = failed[0].error
        assert first is not None
        fail(f"{len(failed)} of {len(results)} files were not stored (first: {_printable(failed[0].wanted)}: "
             f"{message_for(first)})", exit_code_for(first))
    if kept and strict:
        fail(f"{len(kept)} files not stored: a newer version is stored", EXIT_KEPT)


# -- reading ---------------------------------------------------------------------------------------


def _open_for_reading(c: Context, name: str) -> tuple[BinaryIO, str, int | None]:
    """A stream of NAME's content, its versioned name and (when known) its size."""
    stream, stored = c.client().get_stream(name)
    size = getattr(stream, "size", None) or getattr(getattr(stream, "raw", None), "size", None)
    return stream, stored, size


@click.command()
@click.argument("name")
@click.argument("local", required=False, default="-", type=click.Path(dir_okay=False, allow_dash=True))
@pass_context
def get(c: Context, name: str, local: str) -> None:
    """Write the content of NAME to LOCAL (default: stdout), replacing LOCAL only once complete.

    Example: castore get /problems/12/tests/1a.in@1700000000 1a.in
    """
    from ..client.cache import replaced_whole

    stream, stored, size = _open_for_reading(c, name)
    with stream, progress("get", size) as bar:
        if local == "-":
            _copy(stream, sys.stdout.buffer, bar)
            return
        try:
            with replaced_whole(local) as temporary, open(temporary, "wb") as out:
                _copy(stream, out, bar)
        except OSError as e:  # named after the destination, not the file written aside
            fail(f"{local}: {e.strerror or e}", EXIT_IO)
    c.emit({"name": stored, "local": local, "size": os.path.getsize(local)}, None)


@click.command()
@click.argument("name")
@pass_context
def cat(c: Context, name: str) -> None:
    """Print the content of NAME to stdout.

    Example: castore cat /problems/12/tests/1a.out
    """
    stream, _, size = _open_for_reading(c, name)
    with stream, progress("cat", size) as bar:
        _copy(stream, sys.stdout.buffer, bar)


# -- listing and removing --------------------------------------------------------------------------


def _list(c: Context, client: Client, prefix: str, max_version: int | None) -> list[str]:
    """Absolute paths of the current files below folder PREFIX, sorted; not-a-folder is exit 3."""
    return sorted(_iter_list(c, client, prefix, max_version))


def _iter_list(c: Context, client: Client, prefix: str, max_version: int | None) -> Iterator[str]:
    """:func:`_list` as the origin gives it (castore's: path order), a page at a time."""
    folder = check_prefix(prefix).rstrip("/")
    if max_version is None:
        max_version = int(time.time())  # the protocol's default, given here so both origins agree
    check_version(max_version)
    try:
        paths = client.iter_remote_files(max_version, folder, absolute_paths=True)
    except FiletrackerError as e:
        if e.status == 400:
            fail(f"not a folder: {folder}", EXIT_NOT_FOUND)
        if e.status == 404 and c.url is not None:  # castore answers 404 only to an unknown endpoint
            from ..client.transport import redact_url

            fail(f"no file list at {redact_url(c.url)} (is the --url prefix right?)", EXIT_NOT_FOUND)
        raise
    return ("/" + p.lstrip("/") for p in paths)


@click.command(name="ls")
@click.argument("prefix", required=False, default="/")
@click.option("--max-version", type=int, default=None,
              help="Only files whose version is not newer (default: now, as Filetracker's list).")
@click.option("-l", "--long", "long", is_flag=True, help="Also the version and size of each file.")
@pass_context
def ls(c: Context, prefix: str, max_version: int | None, long: bool) -> None:
    """List the current files below the folder PREFIX (default /), one path per line.

    A PREFIX that holds no file is "not found" (exit 3). With -l each line is
    NAME@VERSION<TAB>SIZE (one more request per file with --url). Names are printed as
    they arrive, in path order from castore (a Filetracker server's own order with
    --url to one), so a folder of millions of files costs a page of memory.

    Example: castore ls -l /problems/12
    """
    client = c.client()
    for path in _iter_list(c, client, prefix, max_version):  # streamed: a huge folder costs one page
        if not long:
            c.emit({"path": path}, path)
            continue
        try:
            version, size = client.file_version(path), client.file_size(path)
        except NotFound:
            continue  # removed since the listing
        name = versioned_name(path, version)
        c.emit({"name": name, "path": path, "version": version, "size": size}, f"{name}\t{size}")



def _delete(c: Context, client: Client, name: str) -> int | None:
    """Delete NAME; None when removed, else the newer version that was kept."""
    client.delete_file(name)
    path = parse_name(name).path
    try:
        return client.file_version(path)  # still there: a newer version was kept
    except NotFound:
        return None


def _is_folder(client: Client, path: str) -> bool:
    """Whether ``path`` is a folder of the store (for a hint after a file of that name was not found)."""
    try:
        client.list_remote_files(subpath=path)
    except FiletrackerError:
        return False  # not a folder (400), or the listing failed: the "not found" stands
    return True


@click.command()
@click.argument("name")
@click.option("-r", "--recursive", is_flag=True, help="NAME is a folder: remove every file below it.")
@click.option("-y", "--yes", is_flag=True, help="With -r, do not ask for confirmation.")
@strict_option
@pass_context
def rm(c: Context, name: str, recursive: bool, yes: bool, strict: bool) -> None:
    """Remove NAME with its history (NAME@V: only if V is not older than the stored version).

    With -r, NAME is a folder and every file below it is removed, after a confirmation
    (--yes skips it; without a terminal --yes is required). Without -r, a folder is
    refused (exit 2) with a hint. A refused token or role (HTTP 401/403) or a read-only
    store stops it at the first file (exit 10).

    Example: castore rm /eval/3/17/out;  castore rm -r --yes /eval/3
    """
    client = c.client()
    if not recursive:
        try:
            kept = _delete(c, client, name)
        except NotFound:
            path = parse_name(name).path
            if _is_folder(client, path):
                fail(f"{path} is a folder: remove it with castore rm -r {path}", EXIT_USAGE)
            raise
        if kept is not None:
            _check_kept(c, name, versioned_name(parse_name(name).path, kept), strict, "was not removed")
        c.emit({"name": name, "removed": kept is None}, f"removed {name}" if kept is None else None)
        return
    paths = _list(c, client, name, None)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"rm -r would remove {len(paths)} files below {name}: confirm with --yes", EXIT_USAGE)
        click.confirm(f"Remove {len(paths)} files below {name}?", abort=True, err=True)
    removed = kept_count = 0
    with progress("rm", None, files=len(paths), by_files=True) as bar:
        for path in paths:
            try:
                kept = _delete(c, client, path)
            except NotFound:
                kept = None  # removed by someone else meanwhile
            removed += kept is None
            kept_count += kept is not None
            bar.file_done()
    c.emit({"folder": name, "removed": removed, "kept": kept_count},
           f"removed {removed} files below {name}" + (f", kept {kept_count} newer" if kept_count else ""))
    if kept_count and strict:
        fail(f"{kept_count} files below {name} have a newer version and were kept", EXIT_KEPT)


# -- one file's versions ---------------------------------------------------------------------------


@click.command()
@click.argument("name")
@pass_context
def stat(c: Context, name: str) -> None:
    """Show the current version and size of NAME (NAME@V: of that retained version).

    Stored size, codec and key: castore log NAME.

    Example: castore stat /problems/12/tests/1a.in
    """
    origin = c.client().remote_store
    assert origin is not None  # the command's client always has one (Context.client)
    parsed = parse_name(name)
    info = origin.stat(parsed.path, version=parsed.version)
    version, size = info.version, info.size
    if parsed.version is not None and parsed.version != version:  # a Filetracker server: its current one only
        raise FileNotAvailable.other_version(parsed.path, parsed.version, version)
    stored = versioned_name(parsed.path, version)
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(min(version, 2**37)))
    c.emit({"name": stored, "path": parsed.path, "version": version, "size": size},
           f"name:    {stored}\nversion: {version} ({date} UTC)\nsize:    {size}")


def _info(info: FileInfo) -> dict[str, Any]:
    return {**asdict(info), "name": info.name}


@click.command()
@click.argument("name")
@pass_context
def log(c: Context, name: str) -> None:
    """List the retained versions of NAME, newest first: name, size, stored size, codec, key.

    Example: castore log /problems/12/tests/1a.in
    """
    c.local_only("log")
    history = c.store().versions(name)
    if c.as_json:
        c.emit([_info(i) for i in history], None)
    else:
        for info in history:
            click.echo(f"{info.name}\t{info.size}\t{info.stored_size}\t{info.codec}\t{info.key}")


# -- ingest: a folder, each file at its modification time ------------------------------------------


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("prefix")
@click.option("--follow-symlinks", is_flag=True, help="Store what symbolic links point to (off: skip them).")
@strict_option
@pass_context
def ingest(c: Context, folder: Path, prefix: str, follow_symlinks: bool, strict: bool) -> None:
    """Store every regular file below FOLDER under PREFIX, keeping relative paths.

    The version of each file is its modification time (whole seconds). Symbolic links
    (unless --follow-symlinks), FIFOs, sockets and devices are skipped and listed on
    stderr. A file whose stored version is newer is kept as stored and counted. Any
    other failure stops it there (a refused token or role, HTTP 401/403, or a read-only
    store: exit 10); the same command again stores the rest.

    Example: castore ingest ./packages /packages
    """
    base = check_prefix(prefix).rstrip("/")
    from ..client.walk import walk_folder

    walk = walk_folder(folder, follow_symlinks=follow_symlinks)
    for path, why in walk.skipped:
        c.warn(f"skipped ({why}): {path}")
    # every name is checked before the first put: a bad one is refused with nothing stored
    names = [versioned_name(check_path(f"{base}/{path.relative_to(folder).as_posix()}"), check_version(int(info.st_mtime)))
             for path, info in walk.files]
    client = c.client()
    total = sum(info.st_size for _, info in walk.files)
    kept: list[str] = []
    with progress("ingest", total, files=len(walk.files)) as bar:
        for wanted, (path, info) in zip(names, walk.files, strict=True):
            stored = client.put_file(wanted, path, progress=bar.update)
            if stored != wanted:
                kept.append(stored)
                c.warn(f"kept: a newer version @{parse_name(stored).version} is stored ({wanted} was not stored)")
            bar.file_done(info.st_size, kept=int(stored != wanted))
    stored_count = len(walk.files) - len(kept)
    c.emit({"files": stored_count, "bytes": total, "kept_newer": len(kept), "skipped": len(walk.skipped)},
           f"ingested {stored_count} files ({format_size(total)}), {len(kept)} kept (a newer version is stored), "
           f"{len(walk.skipped)} skipped")
    if kept and strict:
        fail(f"{len(kept)} files not stored: a newer version is stored", EXIT_KEPT)


COMMANDS = (put, get, cat, ls, rm, stat, log, ingest)
"""The commands this module adds to the ``castore`` group."""
