"""The ``castore`` command: thin click commands over :class:`castore.store.Store`.

Exit codes (also in the README):

====  ==================================================
0     success
1     any other error
2     bad usage (unknown option, missing argument)
3     not found: no such path, or that version is not retained
4     invalid name or version
5     no store at ``--root`` (run ``castore init``)
6     integrity problem: corrupt or missing blob, hash collision, failed check
7     the local source or destination could not be read or written
====  ==================================================
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import click
from click.core import ParameterSource
from tqdm import tqdm

from .cache import LocalCache
from .client import Client, default_cache_dir
from .errors import CastoreError, IntegrityError, InvalidName, NotFound, SourceError, StoreNotFound
from .names import parse_name, versioned_name
from .store import FileInfo, Store

__all__ = ["cli", "main"]

EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_NO_STORE = 5
EXIT_INTEGRITY = 6
EXIT_IO = 7

PROGRESS_MIN_BYTES = 32 << 20
"""Show a progress bar for transfers at least this large (when stderr is a terminal)."""

F = TypeVar("F", bound=Callable[..., Any])


class CastoreClickError(click.ClickException):
    """A one-line error with castore's exit code for its kind."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


def _exit_code(error: Exception) -> int:
    for kind, code in (
        (NotFound, EXIT_NOT_FOUND),
        (InvalidName, EXIT_INVALID),
        (StoreNotFound, EXIT_NO_STORE),
        (IntegrityError, EXIT_INTEGRITY),
        (SourceError, EXIT_IO),
        (OSError, EXIT_IO),
    ):
        if isinstance(error, kind):
            return code
    return 1


@contextmanager
def _errors_as_exit_codes() -> Iterator[None]:
    try:
        yield
    except (CastoreError, OSError) as e:
        raise CastoreClickError(str(e), _exit_code(e)) from e


class Context:
    """What every command gets: where the store is (a local root or a server URL) and how to print."""

    def __init__(self, root: Path, as_json: bool, url: str | None = None) -> None:
        self.root = root
        self.as_json = as_json
        self.url = url

    def client(self) -> Client | None:
        """A remote-only client when ``--url`` is in effect, else None (use the local store)."""
        if self.url is None:
            return None
        return Client(local_store=None, remote_url=self.url)

    def local_only(self, command: str) -> None:
        """Refuse a command the Filetracker protocol cannot carry when ``--url`` is in effect."""
        if self.url is not None:
            raise CastoreClickError(f"castore {command} needs a local store (--root), not --url {self.url}", 2)

    def store(self, create: bool = False) -> Store:
        store: Store = Store.open(self.root, create=create)
        return store

    def emit(self, data: Any, text: str) -> None:
        if self.as_json:
            click.echo(json.dumps(data, sort_keys=True))
        else:
            click.echo(text)


pass_context = click.make_pass_decorator(Context)


def _info(info: FileInfo) -> dict[str, Any]:
    return {**asdict(info), "name": info.name}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _progress(total: int, description: str) -> tqdm:
    show = total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, disable=not show, leave=False)


class _CountingReader:
    """A binary reader that advances a progress bar."""

    def __init__(self, inner: BinaryIO, bar: tqdm) -> None:
        self._inner = inner
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._bar.update(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n: int = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self._bar.update(n)
        return n

    def seekable(self) -> bool:
        return False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    "put, get, cat, ls, rm, stat and ingest work remotely.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.version_option(package_name="castore")
@click.pass_context
def cli(ctx: click.Context, root: Path, url: str | None, as_json: bool) -> None:
    """castore: a content-addressed, deduplicating file store.

    Names are absolute paths, optionally with @version: /problems/1/a.in@1700000000.
    A --root given on the command line wins over a URL from the environment.
    """
    if url is not None and ctx.get_parameter_source("root") is ParameterSource.COMMANDLINE:
        if ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
            raise click.UsageError("give --root or --url, not both")
        url = None
    ctx.obj = Context(root, as_json, url or None)


@cli.command()
@pass_context
def init(c: Context) -> None:
    """Create a store at --root (or upgrade an existing one).

    Example: castore --root ./castore-data init
    """
    c.local_only("init")
    with _errors_as_exit_codes(), c.store(create=True):
        pass
    c.emit({"root": str(c.root)}, f"castore store ready at {c.root}")


@cli.command()
@click.argument("local", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("name")
@pass_context
def put(c: Context, local: str, name: str) -> None:
    """Store a local file (or - for stdin) under NAME; print the versioned name.

    Example: castore put tests/1a.in /problems/12/tests/1a.in
    """
    client = c.client()
    if client is not None:
        with _errors_as_exit_codes():
            stored = _remote_put(client, local, name)
        c.emit({"name": stored}, stored)
        return
    with _errors_as_exit_codes(), c.store() as store:
        if local == "-":
            stored = store.put(name, sys.stdin.buffer)
        else:
            size = os.path.getsize(local)
            if size >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
                with open(local, "rb") as f, _progress(size, "put") as bar:
                    stored = store.put(name, cast(BinaryIO, _CountingReader(f, bar)))
            else:
                stored = store.put(name, local)
    c.emit({"name": stored}, stored)


@cli.command()
@click.argument("name")
@click.argument("local", required=False, default="-", type=click.Path(dir_okay=False, allow_dash=True))
@pass_context
def get(c: Context, name: str, local: str) -> None:
    """Write the content of NAME to LOCAL (default: stdout).

    Example: castore get /problems/12/tests/1a.in@1700000000 1a.in
    """
    client = c.client()
    if client is not None:
        with _errors_as_exit_codes():
            if local == "-":
                stream, stored = client.get_stream(name)
                with stream:
                    shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)
            else:
                stored = client.get_file(name, local)
        if c.as_json and local != "-":
            c.emit({"name": stored, "local": local, "size": os.path.getsize(local)}, "")
        return
    with _errors_as_exit_codes(), c.store() as store, store.open(name) as reader:
        if local == "-":
            _copy(reader, sys.stdout.buffer, reader.size)
            return
        partial = Path(f"{local}.castore-partial")
        try:
            with open(partial, "wb") as out:
                _copy(reader, out, reader.size)
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)
    if c.as_json:
        c.emit({"name": reader.name, "local": local, "size": reader.size}, "")


def _copy(reader: BinaryIO, out: BinaryIO, size: int) -> None:
    with _progress(size, "get") as bar:
        while chunk := reader.read(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))


@cli.command()
@click.argument("name")
@pass_context
def cat(c: Context, name: str) -> None:
    """Print the content of NAME to stdout.

    Example: castore cat /problems/12/tests/1a.out
    """
    client = c.client()
    if client is not None:
        with _errors_as_exit_codes():
            stream, _ = client.get_stream(name)
            with stream:
                shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)
        return
    with _errors_as_exit_codes(), c.store() as store, store.open(name) as reader:
        _copy(reader, sys.stdout.buffer, reader.size)


@cli.command(name="ls")
@click.argument("prefix", required=False, default="/")
@click.option("--max-version", type=int, default=None, help="Only files whose version is not newer.")
@pass_context
def ls(c: Context, prefix: str, max_version: int | None) -> None:
    """List the current files below PREFIX (a folder; default /).

    Example: castore ls /problems/12   (with --url: paths only, no versions or sizes)
    """
    client = c.client()
    if client is not None:
        with _errors_as_exit_codes():
            folder = "/" + prefix.strip("/") if prefix.strip("/") else ""
            paths = client.list_remote_files(max_version, folder, absolute_paths=True)
        for path in sorted(paths):
            c.emit({"path": "/" + path}, "/" + path)
        return
    with _errors_as_exit_codes(), c.store() as store:
        for info in store.list(prefix, max_version=max_version):
            c.emit(_info(info), f"{info.name}\t{info.size}")


@cli.command()
@click.argument("name")
@pass_context
def rm(c: Context, name: str) -> None:
    """Remove NAME with its history (with @version: only if not older than the current).

    Example: castore rm /eval/3/17/out
    """
    client = c.client()
    if client is not None:
        with _errors_as_exit_codes():
            removed = _remote_delete(client, name)
    else:
        with _errors_as_exit_codes(), c.store() as store:
            removed = store.delete(name)
    c.emit({"name": name, "removed": removed}, "removed" if removed else "kept: a newer version is stored")


@cli.command()
@click.argument("name")
@pass_context
def stat(c: Context, name: str) -> None:
    """Show version, size, key and storage of NAME.

    Example: castore stat /problems/12/tests/1a.in   (with --url: version and size only)
    """
    client = c.client()
    if client is not None:
        with _errors_as_exit_codes():
            path = parse_name(name).path
            version, size = client.file_version(path), client.file_size(path)
        stored = versioned_name(path, version)
        c.emit({"name": stored, "path": path, "version": version, "size": size},
               f"name:    {stored}\nversion: {version}\nsize:    {size}")
        return
    with _errors_as_exit_codes(), c.store() as store:
        info = store.stat(name)
    text = "\n".join(
        [
            f"name:    {info.name}",
            f"version: {info.version} ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(min(info.version, 2**37)))} UTC)",
            f"size:    {info.size}",
            f"stored:  {info.stored_size} ({info.codec})",
            f"key:     {info.key}",
        ]
    )
    c.emit(_info(info), text)


@cli.command()
@click.argument("name")
@pass_context
def log(c: Context, name: str) -> None:
    """List the retained versions of NAME, newest first.

    Example: castore log /problems/12/tests/1a.in
    """
    c.local_only("log")
    with _errors_as_exit_codes(), c.store() as store:
        history = store.versions(name)
    if c.as_json:
        c.emit([_info(i) for i in history], "")
    else:
        for info in history:
            click.echo(f"{info.name}\t{info.size}\t{info.key}")


@cli.command()
@pass_context
def du(c: Context) -> None:
    """Show logical vs stored bytes and the deduplication ratio.

    Example: castore du
    """
    c.local_only("du")
    with _errors_as_exit_codes(), c.store() as store:
        usage = store.usage()
    data = {**asdict(usage), "dedup_ratio": round(usage.dedup_ratio, 4)}
    text = "\n".join(
        [
            f"files:          {usage.files} ({usage.versions} versions retained)",
            f"logical bytes:  {_human(usage.logical_bytes)} current, {_human(usage.retained_bytes)} retained",
            f"blobs:          {usage.blobs} ({usage.inline_blobs} inline), {_human(usage.blob_bytes)} distinct",
            f"stored bytes:   {_human(usage.stored_bytes)}",
            f"dedup ratio:    {usage.dedup_ratio:.2f}x (retained / stored)",
            f"collectable:    {usage.unreferenced_blobs} blobs (castore gc)",
        ]
    )
    c.emit(data, text)


@cli.command()
@click.option("--staging-grace", type=float, default=3600.0, show_default=True,
              help="Seconds before an abandoned staging file is removed.")
@pass_context
def gc(c: Context, staging_grace: float) -> None:
    """Remove blobs no retained version references.

    Example: castore gc
    """
    c.local_only("gc")
    with _errors_as_exit_codes(), c.store() as store:
        report = store.collect_garbage(staging_grace=staging_grace)
    c.emit(asdict(report), f"removed {report.blobs} blobs ({_human(report.stored_bytes)}), "
                           f"{report.staging_files} staging files")


@cli.command()
@pass_context
def check(c: Context) -> None:
    """Read back and verify every retained version; exit 6 on any problem.

    Example: castore check
    """
    c.local_only("check")
    with _errors_as_exit_codes(), c.store() as store:
        problems = store.check()
    c.emit({"problems": problems}, "\n".join(problems) or "ok")
    if problems:
        raise CastoreClickError(f"{len(problems)} problems found", EXIT_INTEGRITY)


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("prefix")
@pass_context
def ingest(c: Context, folder: Path, prefix: str) -> None:
    """Store every file below FOLDER under PREFIX, keeping relative paths.

    The version of each file is its modification time (whole seconds).
    Example: castore ingest ./packages /packages
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    base = prefix.rstrip("/")
    total = sum(p.stat().st_size for p in files)
    client = c.client()
    with _errors_as_exit_codes(), c.store() if client is None else nullcontext() as store:
        put_one: Callable[[str, Path], object] = (
            client.put_file if client is not None else lambda name, p: cast(Store, store).put(name, p)
        )
        show = len(files) > 1 and sys.stderr.isatty()
        with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=not show, leave=False) as bar:
            for p in files:
                put_one(versioned_name(f"{base}/{p.relative_to(folder).as_posix()}", int(p.stat().st_mtime)), p)
                bar.update(p.stat().st_size)
    c.emit({"files": len(files), "bytes": total}, f"ingested {len(files)} files ({_human(total)})")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9999, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--prefix", default="", help="URL prefix, e.g. /ft behind a reverse proxy.")
@click.option("--fallback-url", default=None, help="Redirect GET/HEAD of missing files to this old server.")
@click.option("--gzip/--no-gzip", default=False, show_default=True,
              help="gzip compressible files on the fly for clients that accept gzip but not zstd.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@pass_context
def serve(c: Context, host: str, port: int, workers: int, prefix: str, fallback_url: str | None,
          gzip: bool, log_level: str) -> None:
    """Serve the store over HTTP with the Filetracker v2 protocol (until SIGTERM).

    Example: castore serve --port 9999   # then FILETRACKER_URL=http://127.0.0.1:9999
    """
    from .server import serve as run_server

    c.local_only("serve")
    with _errors_as_exit_codes():
        run_server(str(c.root), host=host, port=port, workers=workers, prefix=prefix,
                   fallback_url=fallback_url, gzip=gzip, log_level=log_level)


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
    try:
        limit = parse_size(max_size)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--max-size") from None
    caches = [LocalCache(d) for d in cache_dirs] or [LocalCache(default_cache_dir())]
    while True:
        for cache in caches:
            with _errors_as_exit_codes():
                report = cache.clean(limit, keep_fraction=keep / 100, dry_run=dry_run)
            verb = "would remove" if dry_run else "removed"
            c.emit({"cache_dir": str(cache.root), "dry_run": dry_run, **asdict(report)},
                   f"{cache.root}: {report.files_before} files, {_human(report.bytes_before)}; "
                   f"{verb} {report.files_removed} files, {_human(report.bytes_removed)}")
        if every is None:
            return
        time.sleep(every)


_SIZE_PART = r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?"


def parse_size(text: str) -> int:
    """Bytes in a size such as ``8G``, ``512M``, ``1G512M``, ``2GiB`` or ``1000`` (binary units)."""
    if not re.fullmatch(f"(?:{_SIZE_PART})+", text.strip(), re.IGNORECASE):
        raise ValueError(f"not a size: {text!r} (use e.g. 8G, 512M, 1G512M)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    parts = re.findall(_SIZE_PART, text.strip(), re.IGNORECASE)
    return int(sum(float(number) * scale[unit.upper()] for number, unit in parts))


def _remote_put(client: Client, local: str, name: str) -> str:
    if local != "-":
        return client.put_file(name, local)
    with tempfile.NamedTemporaryFile(prefix="castore-stdin-") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.flush()
        return client.put_file(name, spool.name)


def _remote_delete(client: Client, name: str) -> bool:
    """Delete over HTTP; False when the server kept a newer version (the protocol answers 200 both ways)."""
    client.delete_file(name)
    parsed = parse_name(name)
    try:
        client.file_version(parsed.path)
    except NotFound:
        return True
    return False  # still there: a newer version was kept (or a put came right after)


def main() -> None:
    """Entry point of the ``castore`` console script."""
    cli(prog_name="castore")
