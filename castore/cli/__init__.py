"""The ``castore`` command: thin click commands over :class:`castore.client.Client` and :class:`Store`.

One behaviour, local or remote: ``put``, ``get``, ``cat``, ``ls``, ``rm``, ``stat`` and
``ingest`` go through :class:`castore.client.Client`, whose origin is the embedded store
at ``--root`` or the server at ``--url``; only ``init``, ``log``, ``du``, ``gc``,
``check`` and ``serve`` open the :class:`~castore.store.Store` itself.

Every expected error is one line (``Error: …`` on stderr, or ``{"error": …, "code": …}``
on stdout with ``--json``) and one of these exit codes (also in the README):

====  ==================================================
0     success
1     any other error
2     bad usage (unknown option, missing argument, bad --url, a command --url cannot do)
3     not found: no such path or folder, or that version is not retained
4     invalid name or version
5     no store at ``--root`` (run ``castore init``)
6     integrity problem: corrupt or missing blob, hash collision; check could not run
7     a local file or folder could not be read or written
8     ``--strict``: a newer version was already stored, so this one was not
9     network: the server cannot be reached, or ``serve`` cannot listen on its address
141   stdout was closed early (``castore ls | head -1``), quietly, as Unix tools do
====  ==================================================

``castore check`` has its own statuses: 0 clean, 1 every problem repaired, 2 damage
remains (see :mod:`castore.maintenance`); 5 and 6 when it cannot run.

Shared helpers for commands (also for those other modules add at the end of this file):
:func:`fail` (one line, exit code), :func:`exit_code_for` (an exception's exit code),
:class:`CliError`, :meth:`Context.emit`/:meth:`Context.warn`, and :func:`progress` (a
bar of files, bytes, rate and ETA, for uploads and downloads). Heavy imports (SQLAlchemy,
Starlette, tqdm) happen inside commands, so ``castore --help`` starts fast.
"""

from __future__ import annotations

import os
import re
import stat as stat_module
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NoReturn, cast

import click
from click.core import ParameterSource

from ..errors import (
    CastoreError,
    FileNotAvailable,
    FiletrackerError,
    IntegrityError,
    InvalidName,
    NotFound,
    SourceError,
    StoreNotFound,
)
from ..names import check_path, check_prefix, check_version, parse_name, parse_prefix, versioned_name
from ..sizes import IO_BUFFER, format_size, parse_size

if TYPE_CHECKING:
    from ..client import Client
    from ..maintenance import CheckReport
    from ..metadata.report import DedupReport, GroupUsage
    from ..opening import Location
    from ..store import FileInfo, Store

__all__ = [
    "EXIT_CODES",
    "CliError",
    "Context",
    "Progress",
    "cli",
    "exit_code_for",
    "fail",
    "main",
    "parse_size",
    "progress",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_NO_STORE = 5
EXIT_INTEGRITY = 6
EXIT_IO = 7
EXIT_KEPT = 8
EXIT_NETWORK = 9
EXIT_BROKEN_PIPE = 141

EXIT_CODES = {
    0: "success",
    EXIT_ERROR: "any other error",
    EXIT_USAGE: "bad usage: unknown option, missing argument, bad --url, a command --url cannot do",
    EXIT_NOT_FOUND: "not found: no such path or folder, or that version is not retained",
    EXIT_INVALID: "invalid name or version",
    EXIT_NO_STORE: "no store at --root (run castore init)",
    EXIT_INTEGRITY: "integrity problem: corrupt or missing blob, hash collision, failed check",
    EXIT_IO: "a local file or folder could not be read or written",
    EXIT_KEPT: "--strict: a newer version was already stored, so this one was not",
    EXIT_NETWORK: "network: the server cannot be reached, or serve cannot listen on its address",
    EXIT_BROKEN_PIPE: "stdout was closed early (castore ls | head -1); nothing is printed",
}
"""Every exit code of the ``castore`` command and what it means (the README's table)."""

PROGRESS_MIN_BYTES = 32 << 20
"""Show a progress bar for transfers at least this large (when stderr is a terminal)."""


# -- errors: one line, one documented exit code ---------------------------------------------


class CliError(click.ClickException):
    """A one-line error with castore's exit code for its kind; with ``--json`` printed as JSON."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, *, as_json: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]
        self.as_json = as_json
        """Print as ``{"error": …, "code": …}`` (set from ``--json`` by the group)."""

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            click.echo(_json({"error": self.format_message(), "code": self.exit_code}))
        else:
            click.echo(f"Error: {self.format_message()}", err=True)


def _json(data: Any) -> str:
    """One JSON line (``--json``); json is imported here, not by ``castore --help``."""
    import json

    return json.dumps(data, sort_keys=True)


def fail(message: str, exit_code: int = EXIT_ERROR) -> NoReturn:
    """Stop the command with a one-line error and a documented exit code (see :data:`EXIT_CODES`)."""
    raise CliError(message, exit_code)


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of an exception a library call raised."""
    for kind, code in (
        (NotFound, EXIT_NOT_FOUND),  # before FiletrackerError: FileNotAvailable is both
        (InvalidName, EXIT_INVALID),
        (StoreNotFound, EXIT_NO_STORE),
        (IntegrityError, EXIT_INTEGRITY),
        (SourceError, EXIT_IO),
        (OSError, EXIT_IO),
    ):
        if isinstance(error, kind):
            return code
    if isinstance(error, FiletrackerError) and error.status is None:
        return EXIT_NETWORK  # no server answered (refused, timed out, cut short)
    return EXIT_ERROR


def _message_for(error: BaseException) -> str:
    """One line for an error, the same whether the store is local or behind a server."""
    if isinstance(error, FileNotAvailable) and error.status == 404:
        return f"not found: {error.path}"  # not the server's "HTTP/404: ..." plus its body
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    if isinstance(error, FiletrackerError) and error.status is None and error.server is not None:
        return f"no answer from {error.server}: {error.reason}"  # not the request's URL with its query
    return str(error).splitlines()[0] if str(error) else type(error).__name__


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    """Turn castore's errors and OS errors raised inside the block into one-line :class:`CliError`."""
    try:
        yield
    except (CastoreError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            raise
        raise CliError(_message_for(e), exit_code_for(e)) from e


class _Group(click.Group):
    """castore's command group: expected errors of every command become one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with errors_as_exit_codes():
                return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except click.ClickException as e:
            obj = ctx.find_object(Context)
            if obj is None or not obj.as_json:
                raise
            if isinstance(e, CliError):
                e.as_json = True
                raise
            raise CliError(e.format_message(), e.exit_code, as_json=True) from e  # a usage error, as JSON
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("CASTORE_DEBUG") == "1":
                raise
            obj = ctx.find_object(Context)
            raise CliError(f"{type(e).__name__}: {_message_for(e)} (CASTORE_DEBUG=1 shows the traceback)",
                           as_json=obj is not None and obj.as_json) from e


def _quiet_broken_pipe() -> NoReturn:
    """The reader of stdout went away (``castore ls | head -1``): exit at once, print nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not complain again
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


# -- progress: files, bytes, rate, ETA -----------------------------------------------------------


@dataclass
class Progress:
    """A progress bar on stderr (tqdm), or nothing when it is off; ``update(n)`` counts bytes."""

    bar: Any = None
    files_total: int = 0
    files_done: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    by_files: bool = False
    """The bar counts files (``rm -r``), not bytes."""

    def update(self, n: int) -> None:
        if self.bar is not None and n > 0 and not self.by_files:
            self.bar.update(n)

    def file_done(self, **counts: int) -> None:
        """One more file finished; ``counts`` (e.g. ``kept=1``) are added to the bar's postfix."""
        self.files_done += 1
        for key, value in counts.items():
            self.extra[key] = self.extra.get(key, 0) + value
        if self.bar is None:
            return
        shown = {k: v for k, v in self.extra.items() if v}
        if self.by_files:
            if shown:
                self.bar.set_postfix(**shown, refresh=False)
            self.bar.update(1)
        else:
            self.bar.set_postfix(files=f"{self.files_done}/{self.files_total}", **shown)


def _progress_wanted(total_bytes: int, files: int) -> bool:
    """``$CASTORE_PROGRESS`` = 1 forces the bar, 0 hides it; else on a terminal, for big or many files."""
    forced = os.environ.get("CASTORE_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty() and (total_bytes >= PROGRESS_MIN_BYTES or files > 1)


@contextmanager
def progress(description: str, total_bytes: int | None, files: int = 1, *, by_files: bool = False) -> Iterator[Progress]:
    """A progress bar of bytes (rate and ETA) and files for a transfer in either direction.

    Shown on stderr when it is a terminal and the transfer is large or has several files
    (``$CASTORE_PROGRESS=1`` forces it, ``0`` hides it). ``total_bytes`` None: unknown.
    ``by_files``: no bytes move (``rm -r``), so the bar counts files, with their rate and ETA.
    """
    if not _progress_wanted(total_bytes or 0, files):
        yield Progress(files_total=files)
        return
    from tqdm import tqdm

    if by_files:
        with tqdm(total=files, desc=description, unit=" files", leave=False, file=sys.stderr, dynamic_ncols=True,
                  mininterval=0.2) as bar:
            yield Progress(bar=bar, files_total=files, by_files=True)
        return
    with tqdm(total=total_bytes, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
              leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.2) as bar:
        yield Progress(bar=bar, files_total=files)


def _copy(source: BinaryIO, out: BinaryIO, bar: Progress) -> None:
    while chunk := source.read(IO_BUFFER):
        out.write(chunk)
        bar.update(len(chunk))


# -- the context every command gets -------------------------------------------------------------


class Context:
    """What every command gets: where the store is (a local root or a server URL) and how to print."""

    def __init__(self, root: Path, as_json: bool, url: str | None = None, *, metadata: str | None = None,
                 blobs: str | None = None) -> None:
        self.root = root
        self.as_json = as_json
        self.url = url
        self.metadata = metadata
        self.blobs = blobs

    def client(self) -> Client:
        """A client without a cache whose origin is the server at ``--url`` or the store at ``--root``."""
        from ..client import Client

        if self.url is None:
            return Client(local_store=None, remote_store=self.store())
        try:
            client = Client(local_store=None, remote_url=self.url)
        except ValueError as e:
            fail(f"--url: {e}", EXIT_USAGE)
        click.get_current_context().call_on_close(client.close)
        return client

    def local_only(self, command: str) -> None:
        """Refuse a command the Filetracker protocol cannot carry when ``--url`` is in effect."""
        if self.url is not None:
            from ..client.remote import redact_url

            fail(f"castore {command} needs a local store (--root), not --url {redact_url(self.url)}", EXIT_USAGE)

    def store(self, create: bool = False, read_only: bool | None = None, **settings: int) -> Store:
        """The store at ``--root`` (or ``--metadata``/``--blobs``), closed when the command ends."""
        from ..opening import open_store  # checks the settings (castore.location.open_parts)

        self.location()  # a bad URL: one line, exit 2
        store = open_store(self.root, metadata=self.metadata, blobs=self.blobs, create=create, read_only=read_only,
                           retention=settings.get("retention"), inline_max=settings.get("inline_max"),
                           zstd_level=settings.get("zstd_level"))
        click.get_current_context().call_on_close(store.close)
        return store

    def location(self) -> Location:
        """Where the store is: ``--root``, with ``--metadata`` / ``--blobs`` replacing its parts."""
        from ..opening import locate

        try:
            return locate(self.root, metadata=self.metadata, blobs=self.blobs)
        except ValueError as e:
            fail(str(e), EXIT_USAGE)

    def describe(self) -> str:
        """The store for messages: the ``--root`` folder, or its URLs when they replace it."""
        if self.metadata is None and self.blobs is None:
            return str(self.root.resolve())
        return self.location().describe()

    def emit(self, data: Any, text: str | None) -> None:
        """Print ``data`` as one JSON line with ``--json``, else ``text`` (nothing when None)."""
        if self.as_json:
            click.echo(_json(data))
        elif text is not None:
            click.echo(text)

    def warn(self, text: str) -> None:
        """A one-line notice on stderr (not an error): e.g. ``kept: a newer version @N is stored``."""
        click.echo(text, err=True)


pass_context = click.make_pass_decorator(Context)


def _info(info: FileInfo) -> dict[str, Any]:
    return {**asdict(info), "name": info.name}


strict_option = click.option(
    "--strict", is_flag=True,
    help=f"Exit {EXIT_KEPT} when a newer version is already stored (the older one is never stored).",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default="castore-data",
    show_default=True,
    envvar="CASTORE_ROOT",
    help="Store folder (env CASTORE_ROOT).",
)
@click.option(
    "--url",
    default=None,
    envvar=["CASTORE_URL", "FILETRACKER_URL"],
    help="Work against this server instead of --root (env CASTORE_URL, FILETRACKER_URL). "
    "put, get, cat, ls, rm, stat and ingest work remotely, with the same output.",
)
@click.option("--metadata", default=None, envvar="CASTORE_METADATA", metavar="URL",
              help="Metadata database instead of --root's: sqlite:///…/metadata.sqlite3 or "
              "postgresql+psycopg://user:pw@host/db (env CASTORE_METADATA).")
@click.option("--blobs", default=None, envvar="CASTORE_BLOBS", metavar="URL",
              help="Blob storage instead of --root's: file:///…/blobs or s3://bucket/prefix?endpoint_url=… "
              "(env CASTORE_BLOBS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (errors too: {error, code}).")
@click.version_option(package_name="castore")
@click.pass_context
def cli(ctx: click.Context, root: Path, url: str | None, metadata: str | None, blobs: str | None,
        as_json: bool) -> None:
    """castore: a content-addressed, deduplicating file store.

    Names are absolute paths, optionally with @version: /problems/1/a.in@1700000000.
    A --root given on the command line wins over a URL from the environment.
    Exit codes are listed in the README ("Command line").

    Example: castore --root ./castore-data init && castore put a.in /problems/1/a.in
    """
    if url is not None and ctx.get_parameter_source("root") is ParameterSource.COMMANDLINE:
        if ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
            raise click.UsageError("give --root or --url, not both")
        url = None
    ctx.obj = Context(root, as_json, url or None, metadata=metadata or None, blobs=blobs or None)


@cli.command()
@click.option("--retention", type=click.IntRange(1), default=None, help="Versions kept per path (default 10).")
@click.option("--inline-max", type=click.IntRange(0), default=None,
              help="Largest content kept inline in the database, in bytes (default 131072).")
@click.option("--zstd-level", type=click.IntRange(1, 22), default=None, help="zstd level for blobs (default 1).")
@pass_context
def init(c: Context, retention: int | None, inline_max: int | None, zstd_level: int | None) -> None:
    """Create a store at --root (or upgrade an existing one's schema).

    The settings are chosen at creation; giving one that differs from an existing
    store's is an error.

    Example: castore --root ./castore-data init --retention 3
    """
    c.local_only("init")
    given = {k: v for k, v in (("retention", retention), ("inline_max", inline_max),
                               ("zstd_level", zstd_level)) if v is not None}
    try:
        store = c.store(create=True, **cast(dict[str, Any], given))
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    where = {} if c.metadata is None and c.blobs is None else vars(c.location())
    c.emit({"root": str(c.root), **where, **store.settings()},
           f"castore store ready at {c.root if not where else c.describe()} ("
           + ", ".join(f"{k}={v}" for k, v in store.settings().items()) + ")")


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


@cli.command()
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

    With -r, LOCAL is a folder and NAME a prefix: every regular file below LOCAL is
    stored under it, all with one version (NAME's @version, else now), --jobs at a time
    over kept-alive connections. A file that fails does not stop the others: each
    failure is one line on stderr, and the exit code is the first failed file's.

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


def _open_for_reading(c: Context, name: str) -> tuple[BinaryIO, str, int | None]:
    """A stream of NAME's content, its versioned name and (when known) its size."""
    stream, stored = c.client().get_stream(name)
    size = getattr(stream, "size", None) or getattr(getattr(stream, "raw", None), "size", None)
    return stream, stored, size


@cli.command()
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


@cli.command()
@click.argument("name")
@pass_context
def cat(c: Context, name: str) -> None:
    """Print the content of NAME to stdout.

    Example: castore cat /problems/12/tests/1a.out
    """
    stream, _, size = _open_for_reading(c, name)
    with stream, progress("cat", size) as bar:
        _copy(stream, sys.stdout.buffer, bar)


def _list(c: Context, client: Client, prefix: str, max_version: int | None) -> list[str]:
    """Absolute paths of the current files below folder PREFIX; not-a-folder is exit 3."""
    folder = check_prefix(prefix).rstrip("/")
    if max_version is None:
        max_version = int(time.time())  # the protocol's default, given here so both origins agree
    check_version(max_version)
    try:
        paths = client.list_remote_files(max_version, folder, absolute_paths=True)
    except FiletrackerError as e:
        if e.status == 400:
            fail(f"not a folder: {folder}", EXIT_NOT_FOUND)
        if e.status == 404 and c.url is not None:  # castore answers 404 only to an unknown endpoint
            from ..client.remote import redact_url

            fail(f"no file list at {redact_url(c.url)} (is the --url prefix right?)", EXIT_NOT_FOUND)
        raise
    return sorted("/" + p.lstrip("/") for p in paths)


@cli.command(name="ls")
@click.argument("prefix", required=False, default="/")
@click.option("--max-version", type=int, default=None,
              help="Only files whose version is not newer (default: now, as Filetracker's list).")
@click.option("-l", "--long", "long", is_flag=True, help="Also the version and size of each file.")
@pass_context
def ls(c: Context, prefix: str, max_version: int | None, long: bool) -> None:
    """List the current files below the folder PREFIX (default /), one path per line.

    A PREFIX that holds no file is "not found" (exit 3). With -l each line is
    NAME@VERSION<TAB>SIZE (one more request per file with --url).

    Example: castore ls -l /problems/12
    """
    client = c.client()
    for path in _list(c, client, prefix, max_version):
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


@cli.command()
@click.argument("name")
@click.option("-r", "--recursive", is_flag=True, help="NAME is a folder: remove every file below it.")
@click.option("-y", "--yes", is_flag=True, help="With -r, do not ask for confirmation.")
@strict_option
@pass_context
def rm(c: Context, name: str, recursive: bool, yes: bool, strict: bool) -> None:
    """Remove NAME with its history (NAME@V: only if V is not older than the stored version).

    With -r, NAME is a folder and every file below it is removed, after a confirmation
    (--yes skips it; without a terminal --yes is required).

    Example: castore rm /eval/3/17/out;  castore rm -r --yes /eval/3
    """
    client = c.client()
    if not recursive:
        kept = _delete(c, client, name)
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


@cli.command()
@click.argument("name")
@pass_context
def stat(c: Context, name: str) -> None:
    """Show the current version and size of NAME (NAME@V: fails unless V is current).

    Stored size, codec and key: castore log NAME.

    Example: castore stat /problems/12/tests/1a.in
    """
    from ..errors import VersionNotFound

    client = c.client()
    parsed = parse_name(name)
    version, size = client.file_version(parsed.path), client.file_size(parsed.path)
    if parsed.version is not None and parsed.version != version:
        raise VersionNotFound(parsed.path, parsed.version, version)
    stored = versioned_name(parsed.path, version)
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(min(version, 2**37)))
    c.emit({"name": stored, "path": parsed.path, "version": version, "size": size},
           f"name:    {stored}\nversion: {version} ({date} UTC)\nsize:    {size}")


@cli.command()
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


@cli.command()
@click.option("--staging-grace", type=float, default=3600.0, show_default=True,
              help="Seconds before an abandoned staging file is removed.")
@pass_context
def gc(c: Context, staging_grace: float) -> None:
    """Remove blobs no retained version references (run it after manage.py collectgarbage).

    Example: castore gc
    """
    c.local_only("gc")
    report = c.store().collect_garbage(staging_grace=staging_grace)
    c.emit(asdict(report), f"removed {report.blobs} blobs ({format_size(report.stored_bytes)}), "
                           f"{report.staging_files} staging files")


@dataclass
class _Walk:
    """What ``ingest`` found below a folder: regular files to store, and what it skipped."""

    files: list[tuple[Path, os.stat_result]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _is_store_folder(path: str) -> bool:
    """Whether ``path`` is a castore store folder (a metadata database and a blob folder)."""
    from ..layout import BLOBS_DIR, METADATA_FILE

    return os.path.isfile(os.path.join(path, METADATA_FILE)) and os.path.isdir(os.path.join(path, BLOBS_DIR))


def _a_loop(link: str, inside: list[str]) -> bool:
    """Whether the folder ``link`` points to is one of the folders ``inside`` (real paths + sep) or above one."""
    target = os.path.realpath(link).rstrip(os.sep) + os.sep
    return any(real.startswith(target) for real in inside)


def _walk(folder: Path, follow_symlinks: bool) -> _Walk:
    """Regular files below ``folder`` (sorted); links are skipped unless followed, FIFOs etc. always.

    A store folder below ``folder`` (such as ``./castore-data`` under ``put -r .``) is
    skipped whole, listed: its files are the store's own (a database that changes while
    it is read, blobs that are stored contents already), never files to store.
    """
    found = _Walk()
    if _is_store_folder(str(folder)):  # put -r ./castore-data: the tree is a store itself
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
            for name in [d for d in dirs if os.path.islink(os.path.join(top, d)) and _a_loop(os.path.join(top, d), inside)]:
                dirs.remove(name)
                found.skipped.append((Path(top, name), "a symlink loop"))
        for name in [d for d in dirs if (follow_symlinks or not os.path.islink(os.path.join(top, d)))
                     and _is_store_folder(os.path.join(top, d))]:
            dirs.remove(name)
            found.skipped.append((Path(top, name), "a castore store's folder"))
        for entry in [*sorted(names), *(d for d in dirs if os.path.islink(os.path.join(top, d)))]:
            path = Path(top, entry)
            info = path.lstat()
            if stat_module.S_ISLNK(info.st_mode):
                if not follow_symlinks:
                    found.skipped.append((path, "symlink"))
                    continue
                try:
                    info = path.stat()
                except OSError:
                    found.skipped.append((path, "broken symlink"))
                    continue
                if stat_module.S_ISDIR(info.st_mode):
                    continue  # os.walk descends into it
            if stat_module.S_ISREG(info.st_mode):
                found.files.append((path, info))
            elif not stat_module.S_ISDIR(info.st_mode):
                found.skipped.append((path, "not a regular file"))
    found.files.sort()
    return found


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("prefix")
@click.option("--follow-symlinks", is_flag=True, help="Store what symbolic links point to (off: skip them).")
@strict_option
@pass_context
def ingest(c: Context, folder: Path, prefix: str, follow_symlinks: bool, strict: bool) -> None:
    """Store every regular file below FOLDER under PREFIX, keeping relative paths.

    The version of each file is its modification time (whole seconds). Symbolic links
    (unless --follow-symlinks), FIFOs, sockets and devices are skipped and listed on
    stderr. A file whose stored version is newer is kept as stored and counted.

    Example: castore ingest ./packages /packages
    """
    base = check_prefix(prefix).rstrip("/")
    walk = _walk(folder, follow_symlinks)
    for path, why in walk.skipped:
        c.warn(f"skipped ({why}): {path}")
    # every name is checked before the first put: a bad one is refused with nothing stored
    names = [versioned_name(check_path(f"{base}/{path.relative_to(folder).as_posix()}"), check_version(int(info.st_mtime)))
             for path, info in walk.files]
    client = c.client()
    total = sum(info.st_size for _, info in walk.files)
    kept: list[str] = []
    with progress("ingest", total, files=len(walk.files)) as bar:
        for wanted, (path, _) in zip(names, walk.files, strict=True):
            stored = client.put_file(wanted, path, progress=bar.update)
            if stored != wanted:
                kept.append(stored)
                c.warn(f"kept: a newer version @{parse_name(stored).version} is stored ({wanted} was not stored)")
            bar.file_done(kept=int(stored != wanted))
    stored_count = len(walk.files) - len(kept)
    c.emit({"files": stored_count, "bytes": total, "kept_newer": len(kept), "skipped": len(walk.skipped)},
           f"ingested {stored_count} files ({format_size(total)}), {len(kept)} kept (a newer version is stored), "
           f"{len(walk.skipped)} skipped")
    if kept and strict:
        fail(f"{len(kept)} files not stored: a newer version is stored", EXIT_KEPT)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--allowed-hosts", "allowed_hosts", multiple=True, metavar="NAMES",
              help="Host header values answered, others get 421 (DNS rebinding): names, IP addresses, networks "
                   "(10.0.0.0/8) or * for any; comma-separated, repeatable. Default: localhost, 127.0.0.1, [::1] "
                   "and --host; with --host 0.0.0.0 or :: also this machine's names and any IP address.")
@click.option("--port", default=9999, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default="auto", show_default=True, metavar="N|auto",
              help="Worker processes: a number, or auto = one per CPU core castore may use (see README).")
@click.option("--prefix", default="", help="URL prefix, e.g. /ft behind a reverse proxy.")
@click.option("--fallback-url", default=None, help="Redirect GET/HEAD of missing files to this old server.")
@click.option("--migrate-from", default=None, metavar="URL",
              help="Fetch missing files from this old Filetracker server, store and serve them.")
@click.option("--migrate-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="--migrate-from: seconds to connect to the old server and for each next "
                                      "byte of its answer (then 502).")
@click.option("--migrate-deadline", default=120.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="--migrate-from: seconds one fetch may take in all, waiting included (then 502).")
@click.option("--migrate-fetches", default=4, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="--migrate-from: fetches from the old server at once per worker, each in a thread of its own.")
@click.option("--migrate-queue", default=60, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="--migrate-from: further fetches that may wait per worker; beyond, 503 with Retry-After.")
@click.option("--gzip/--no-gzip", default=False, show_default=True,
              help="gzip compressible files on the fly for clients that accept gzip but not zstd.")
@click.option("--init", "create", is_flag=True, help="Create the store at --root if there is none.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--header-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a client may take to send a request line and headers (then 408).")
@click.option("--body-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds an upload may go without sending a byte of its body (then 408).")
@click.option("--max-upload-size", default=None, metavar="SIZE",
              help="Refuse bodies or contents larger than this with 413, e.g. 512M (default: no limit).")
@click.option("--max-zstd-window", default="8M", show_default=True, metavar="SIZE",
              help="Largest window a zstd upload may ask for (memory per decoder); larger: 400.")
@click.option("--read-only", is_flag=True,
              help="Serve reads only: PUT and DELETE answer 403, and the store is never changed.")
@click.option("--verify-first", default="auto", show_default=True, type=click.Choice(["auto", "always", "never"]),
              help="Verify a whole file before its headers go out: auto = for clients that cannot take a "
                   "cut body (no zstd), so they get a 500 rather than a truncated file.")
@pass_context
def serve(c: Context, host: str, allowed_hosts: tuple[str, ...], port: int, workers: str, prefix: str,
          fallback_url: str | None, migrate_from: str | None, migrate_timeout: float, migrate_deadline: float,
          migrate_fetches: int, migrate_queue: int, gzip: bool, create: bool, log_level: str,
          header_timeout: float, body_timeout: float, max_upload_size: str | None, max_zstd_window: str,
          read_only: bool, verify_first: str) -> None:
    """Serve the store at --root over HTTP, Filetracker v2 protocol, until SIGTERM or Ctrl-C.

    A missing store is an error (exit 5) unless --init is given, so that a mistyped
    --root does not serve a new, empty store. Prints one line on start: URL, store,
    workers, version. Idle and slow clients hold no worker thread (bodies are received
    on the event loop); a store on a read-only filesystem is served read-only.

    Example: castore --root ./castore-data serve --init --port 9999   # FILETRACKER_URL=http://127.0.0.1:9999
    """
    from .. import __version__
    from ..server.upload import UploadLimits

    c.local_only("serve")
    if workers == "auto":
        from ..server.listening import auto_workers

        count = auto_workers()
    elif workers.isdigit() and int(workers) >= 1:
        count = int(workers)
    else:
        raise click.BadParameter(f"{workers!r} is not a number >= 1 nor auto", param_hint="--workers")
    if migrate_from is not None and not re.match(r"http://[^/\s]+", migrate_from):
        fail(f"--migrate-from: {migrate_from!r} is not http://host[:port][/prefix]", EXIT_USAGE)
    if migrate_from is not None and read_only:
        fail("--migrate-from moves files in: it cannot go with --read-only", EXIT_USAGE)
    sizes = {}
    for option, text in (("--max-upload-size", max_upload_size), ("--max-zstd-window", max_zstd_window)):
        try:
            sizes[option] = parse_size(text) if text else None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=option) from None
    limits = UploadLimits(body_timeout=body_timeout, max_upload_size=sizes["--max-upload-size"],
                          max_zstd_window=sizes["--max-zstd-window"] or UploadLimits.max_zstd_window)
    hosts = [entry.strip() for item in allowed_hosts for entry in item.split(",") if entry.strip()] or None
    if hosts is not None:
        from ..server.hosts import AllowedHosts

        try:
            AllowedHosts.parse(hosts)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--allowed-hosts") from None
    from ..server.listening import listen

    try:  # first: from here on, clients that connect wait for an answer instead of being refused
        sock = listen(host, port)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", EXIT_NETWORK)
    click.get_current_context().call_on_close(sock.close)
    from ..preflight import preflight

    # a current SQLite store (or a new one, made here with --init): each worker opens it while it answers
    # /version/ (SQLAlchemy is not loaded here); otherwise create or migrate once here, before workers start
    ready = None if c.metadata or c.blobs else preflight(c.root, create=create and not read_only)
    if ready is None:
        tokens = bool(c.store(create=create and not read_only, read_only=True if read_only else None)  # closed at exit
                      .metadata.token_roles())
    else:
        tokens = ready.tokens
    shown_host = f"[{host}]" if ":" in host else host
    c.warn(f"castore {__version__} serving {c.describe()} at http://{shown_host}:{port}"
           f"{prefix.rstrip('/')} ({count} worker{'s' if count > 1 else ''}{', read-only' if read_only else ''})")
    from ..migration.live import MigrationLimits
    from ..server.app import serve as run_server

    run_server(str(c.root), metadata=c.metadata, blobs=c.blobs, host=host, port=port, workers=count, prefix=prefix,
               fallback_url=fallback_url, gzip=gzip, log_level=log_level, migrate_from=migrate_from,
               migration_limits=MigrationLimits(timeout=migrate_timeout, deadline=migrate_deadline,
                                                fetches=migrate_fetches, queue=migrate_queue),
               header_timeout=header_timeout, limits=limits, read_only=read_only, verify_first=verify_first,
               sock=sock, early_version=not tokens, allowed_hosts=hosts)


@cli.command(name="cache-clean")
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

    Example: castore cache-clean --cache-dir /var/cache/castore --max-size 8G --keep 50
    """
    from ..client import default_cache_dir
    from ..client.cache import LocalCache

    try:
        limit = parse_size(max_size)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--max-size") from None
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


# -- moving in from Filetracker (castore/migration/) -----------------------------------


@cli.command(name="import-filetracker")
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
    are reported and skipped. Safe while castore serve uses the same store.

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
            ServerSource(source_url) if source_url is not None else (FolderV1 if v1 else FolderV2)(cast(Path, folder))
        )
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    show = _progress_wanted(0, 2) if progress is None else progress
    store = c.store()
    try:
        importer = Importer(store, source, jobs=jobs)
        with _import_bar(source.count() if show else None, "import", show) as advance:
            report = importer.run(advance)
        if verify:
            with _import_bar(len(importer.done), "verify", show) as advance:
                differences = importer.verify(advance)
            report.verified = len(importer.done) - len(differences)
            report.problems.extend(differences)
    finally:
        source.close()
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
    """A progress bar of files with bytes and MB/s; yields the per-file callback."""
    from tqdm import tqdm

    started = time.perf_counter()
    done_bytes = 0
    with tqdm(total=total, desc=description, unit="file", disable=not show, leave=False, smoothing=0.1) as bar:

        def advance(_outcome: Any, size: int) -> None:
            nonlocal done_bytes
            done_bytes += size
            rate = done_bytes / max(time.perf_counter() - started, 1e-9) / 1e6
            bar.set_postfix_str(f"{format_size(done_bytes)}, {rate:.1f} MB/s", refresh=False)
            bar.update(1)

        yield advance


@cli.group()
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
    status = migration_status(c.store(), url, versions=versions)
    lines = [(f"{url}: {status.old_files} files; moved {status.moved}, deleted in castore {status.deleted}, "
             f"left {len(status.left)}")]
    lines += [f"  {path}" for path in status.left[:show]]
    if len(status.left) > show:
        lines.append(f"  ... and {len(status.left) - show} more")
    lines += [f"  problem: {p}" for p in status.problems]
    c.emit({**status.as_dict(), "left_paths": status.left[:show]}, "\n".join(lines))


def main() -> None:
    """Entry point of the ``castore`` console script."""
    cli(prog_name="castore")


# -- commands added by other features go below, each block using the helpers above ----------------


# -- du: usage, and the dedup report of a prefix (issue #12) -----------------------------

DU_SORT_KEYS = ("name", "files", "versions", "logical", "retained", "stored", "freed", "shared", "ratio")
"""``castore du --sort`` choices: :data:`castore.metadata.report.SORT_KEYS` (kept here so that
``castore --help`` does not import SQLAlchemy; a test checks they agree)."""


@cli.command()
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

    Without arguments: the store's totals and deduplication ratio. With PREFIX (default /)
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
    usage = c.store().usage()
    data = {**asdict(usage), "dedup_ratio": round(usage.dedup_ratio, 4)}
    text = "\n".join(
        [
            f"files:          {usage.files} ({usage.versions} versions retained)",
            f"logical bytes:  {format_size(usage.logical_bytes)} current, {format_size(usage.retained_bytes)} retained",
            f"blobs:          {usage.blobs} ({usage.inline_blobs} inline), {format_size(usage.blob_bytes)} distinct",
            f"stored bytes:   {format_size(usage.stored_bytes)}",
            f"dedup ratio:    {usage.dedup_ratio:.2f}x (retained / stored)",
            f"collectable:    {usage.unreferenced_blobs} blobs (castore gc)",
        ]
    )
    c.emit(data, text)


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


# -- castore check (castore/maintenance.py) --------------------------------------------------------


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


@cli.command()
@click.option("--verify-content", is_flag=True, help="Also decode every blob and verify it against its key.")
@click.option("--repair", is_flag=True,
              help="Fix reference counts, remove old orphan and staging files, add missing chunk digests.")
@click.option("--grace", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              help="Seconds an orphan or staging file must be old before --repair removes it.")
@click.option("--json", "check_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def check(c: Context, verify_content: bool, repair: bool, grace: float, check_json: bool) -> None:
    """Check the metadata and the blobs page by page; --repair fixes what can be fixed.

    Paths whose blob is missing or corrupt are listed, never dropped.

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
        click.echo(_json(report.as_dict()))
    else:
        click.echo(_check_text(report))
    click.get_current_context().exit(report.exit_code)


# -- castore token (castore/tokens.py) ---------------------------------------------------------------


@cli.group()
def token() -> None:
    """Manage the server's access tokens (off until the first one exists).

    Once a token exists, castore serve answers only requests that carry one (GET and HEAD
    /health stay open): Filetracker's client with FILETRACKER_URL=http://any:TOKEN@host:9999,
    castore's with the same URL or CASTORE_TOKEN. Roles: read (GET, HEAD, /metrics),
    write (also PUT, DELETE), admin (everything). Servers notice new and revoked tokens
    within 5 seconds.

    Example: castore token create --role write --name judge-1
    """


@token.command(name="create")
@click.option("--role", required=True, type=click.Choice(["read", "write", "admin"]), help="What the token may do.")
@click.option("--name", default=None, help="A name to list and revoke it by (default: ROLE-<random>).")
@pass_context
def token_create(c: Context, role: str, name: str | None) -> None:
    """Create a token and print it: it is shown only this once (only its hash is kept).

    Example: castore token create --role read --name grader
    """
    from ..server.tokens import create_token

    c.local_only("token create")
    try:
        name, secret = create_token(c.store().metadata, role, name)
    except ValueError as e:
        fail(str(e), EXIT_INVALID)
    if c.as_json:
        c.emit({"name": name, "role": role, "token": secret}, "")
        return
    click.echo(secret)
    click.echo(f"castore: token {name!r} ({role}) created; it cannot be shown again.", err=True)


@token.command(name="list")
@pass_context
def token_list(c: Context) -> None:
    """List the tokens: name, role, creation time (never the tokens themselves).

    Example: castore token list
    """
    c.local_only("token list")
    rows = c.store().metadata.tokens()
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.created))
        c.emit({"name": row.name, "role": row.role, "created": row.created}, f"{row.name}\t{row.role}\t{created} UTC")


@token.command(name="revoke")
@click.argument("name")
@pass_context
def token_revoke(c: Context, name: str) -> None:
    """Delete the token called NAME; servers refuse it within 5 seconds.

    Example: castore token revoke grader
    """
    from ..server.tokens import revoke_token

    c.local_only("token revoke")
    if not revoke_token(c.store().metadata, name):
        fail(f"no token named {name!r}", EXIT_NOT_FOUND)
    c.emit({"name": name, "revoked": True}, f"revoked {name}")


# -- opening stores by URL (issue 13) ---------------------------------------------------------------


@cli.command(name="migrate-schema")
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


@cli.command(name="migrate-store")
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


# -- put -r: a folder of many small files over a few connections (issue #10) ----------------

PUT_JOBS = 4
"""Files ``castore put -r`` sends at a time unless --jobs says otherwise."""


def _printable(name: str) -> str:
    """A name as one line of output: quoted and escaped when it holds a newline or control character."""
    return name if name.isprintable() else repr(name)


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
    walk = _walk(folder, follow_symlinks=False)
    for path, why in walk.skipped:
        c.warn(f"skipped ({why}): {_printable(str(path))}")
    pairs = [(versioned_name(f"{base}/{path.relative_to(folder).as_posix()}", version), path) for path, _ in walk.files]
    total = sum(info.st_size for _, info in walk.files)
    client = c.client()
    with progress("put", total, files=len(pairs)) as bar:
        results = client.put_files(pairs, jobs=jobs, progress=bar.update,
                                   on_result=lambda r: bar.file_done(kept=int(r.kept_newer), failed=int(not r.ok)))
    stored = [r for r in results if r.ok and not r.kept_newer]
    kept = [r for r in results if r.kept_newer]
    failed = [r for r in results if r.error is not None]
    for r in kept:
        c.warn(f"kept: a newer version @{parse_name(r.stored or '').version} is stored "
               f"({_printable(r.wanted)} was not stored)")
    for r in failed:
        assert r.error is not None
        c.warn(f"failed: {_printable(r.wanted)}: {_message_for(r.error)}")
    c.emit({"files": len(stored), "bytes": total, "kept_newer": len(kept), "failed": len(failed),
            "skipped": len(walk.skipped), "names": [r.stored for r in stored]},
           f"put {len(stored)} files ({format_size(total)}) as {base}/…@{version}, {len(kept)} kept "
           f"(a newer version is stored), {len(failed)} failed, {len(walk.skipped)} skipped")
    if failed:
        first = failed[0].error
        assert first is not None
        fail(f"{len(failed)} of {len(results)} files were not stored (first: {_printable(failed[0].wanted)}: "
             f"{_message_for(first)})", exit_code_for(first))
    if kept and strict:
        fail(f"{len(kept)} files not stored: a newer version is stored", EXIT_KEPT)
