"""What every ``castore`` command shares: exit codes, one-line errors, the progress bar, the context.

* :data:`EXIT_CODES` and the ``EXIT_*`` names (the table in :mod:`castore.cli`'s docstring);
* :class:`CliError` and :func:`fail` (one line, a documented exit code), :func:`exit_code_for`
  and :func:`message_for` (an exception's code and line), :func:`errors_as_exit_codes`;
* :func:`progress` (a bar of files, bytes, rate and ETA, for uploads and downloads);
* :class:`Context` (where the store is, how to print) with :data:`pass_context`, and the
  shared option :data:`strict_option`.

Imports only click and castore's pure pieces at module level: SQLAlchemy, httpx, tqdm and
json are imported where they are used, so that ``castore --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from ..errors import (
    CastoreError,
    FileNotAvailable,
    FiletrackerError,
    IntegrityError,
    InvalidName,
    NotFound,
    PathConflict,
    ReadOnlyStore,
    SourceError,
    StoreNotFound,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..opening import Location
    from ..store import Store

__all__ = [
    "EXIT_CODES",
    "CliError",
    "Context",
    "ProgressBar",
    "errors_as_exit_codes",
    "exit_code_for",
    "fail",
    "is_denied",
    "json_line",
    "message_for",
    "pass_context",
    "progress",
    "progress_wanted",
    "strict_option",
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
EXIT_DENIED = 10
EXIT_EXISTS = 11
EXIT_CONFLICT = 12
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

EXIT_CODES = {
    0: "success",
    EXIT_ERROR: "any other error",
    EXIT_USAGE: "bad usage: unknown option, missing argument, bad --url, a command --url cannot do",
    EXIT_NOT_FOUND: "not found: no such path or folder, or that version is not retained",
    EXIT_INVALID: "invalid name or version",
    EXIT_NO_STORE: "no store at --root (run castore init), or its bucket is missing or not writable",
    EXIT_INTEGRITY: "integrity problem: corrupt or missing blob, hash collision, failed check",
    EXIT_IO: "a local file or folder could not be read or written",
    EXIT_KEPT: "--strict: a newer version was already stored, so this one was not",
    EXIT_NETWORK: "network: the server cannot be reached, or its TLS certificate is refused; serve cannot listen "
                  "on its address",
    EXIT_DENIED: "not allowed: the server refused the token (401) or its role (403), or the store is read-only; "
                 "put -r, rm -r and ingest stop at the first refusal",
    EXIT_EXISTS: "exists already: token create with the name of an existing token",
    EXIT_CONFLICT: "a file where the store has a folder, or below a file (put /problems/1 when /problems/1/a.in is stored)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); put -r says how many files were stored",
    EXIT_BROKEN_PIPE: "stdout was closed early (castore ls | head -1); nothing is printed",
}
"""Every exit code of the ``castore`` command and what it means (the README's table)."""

PROGRESS_MIN_BYTES = 32 << 20
"""Show a progress bar for transfers at least this large (when stderr is a terminal)."""


# -- errors: one line, one documented exit code ----------------------------------------------------


class CliError(click.ClickException):
    """A one-line error with castore's exit code for its kind; with ``--json`` printed as JSON."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, *, as_json: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]
        self.as_json = as_json
        """Print as ``{"error": …, "code": …}`` (set from ``--json`` by the group)."""

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            click.echo(json_line({"error": self.format_message(), "code": self.exit_code}))
        else:
            click.echo(f"Error: {self.format_message()}", err=True)


def json_line(data: Any) -> str:
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
    if is_denied(error):
        return EXIT_DENIED
    if isinstance(error, PathConflict) or (isinstance(error, FiletrackerError) and error.status == 409):
        return EXIT_CONFLICT
    if isinstance(error, FiletrackerError) and error.status is None:
        return EXIT_NETWORK  # no server answered (refused, timed out, cut short)
    return EXIT_ERROR


def is_denied(error: BaseException) -> bool:
    """Whether ``error`` says the command may not do this at all: a refused token or role, a read-only store.

    Every other file would be refused alike, so ``put -r``, ``rm -r`` and ``ingest`` stop at the first.
    """
    return isinstance(error, ReadOnlyStore) or (isinstance(error, FiletrackerError) and error.status in (401, 403))


def message_for(error: BaseException) -> str:
    """One line for an error, the same whether the store is local or behind a server."""
    if isinstance(error, FileNotAvailable) and error.status == 404:  # not the server's "HTTP/404: ..." plus its body
        return error.detail or f"not found: {error.path}"  # detail: which versions are retained
    if isinstance(error, FiletrackerError) and error.status == 409:
        return str(error).splitlines()[0].removeprefix("HTTP/409: ")  # the store's own words, as with --root
    if is_denied(error):
        return f"not allowed: {str(error).splitlines()[0]}"
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
        raise CliError(message_for(e), exit_code_for(e)) from e


# -- progress: files, bytes, rate, ETA -------------------------------------------------------------


@dataclass
class ProgressBar:
    """A progress bar on stderr (tqdm), or nothing when it is off; ``update(n)`` counts bytes."""

    bar: Any = None
    files_total: int = 0
    files_done: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    by_files: bool = False
    """The bar counts files (``rm -r``), not bytes."""
    sent: int = 0
    """Bytes read so far (a file sent again after a refused batch counts twice)."""
    done_bytes: int = 0
    """Bytes of the files finished (``file_done(nbytes=…)``)."""

    def update(self, n: int) -> None:
        """``n`` more bytes read or written."""
        if self.bar is not None and n > 0 and not self.by_files:
            self.sent += n
            self._show()

    def _show(self) -> None:
        """Move the bar to the bytes done; with several files, below 99 % until every file is done.

        Bytes are counted as they are read, before the server has stored them (and again
        for a file sent twice): the bar reaches its total only with the last file's answer.
        """
        total = self.bar.total
        position = max(self.sent, self.done_bytes)
        if total is not None:
            if self.files_total > 1 and self.files_done < self.files_total:
                position = min(position, total * 99 // 100)
            position = min(position, total)
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)

    def file_done(self, nbytes: int = 0, **counts: int) -> None:
        """One more file finished, of ``nbytes``; ``counts`` (e.g. ``kept=1``) are added to the bar's postfix."""
        self.files_done += 1
        self.done_bytes += nbytes
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
            if self.files_done >= self.files_total and self.bar.total is not None:
                self.done_bytes = max(self.done_bytes, self.bar.total)
            self.bar.set_postfix(files=f"{self.files_done}/{self.files_total}", **shown)
            self._show()


def progress_wanted(total_bytes: int, files: int) -> bool:
    """``$CASTORE_PROGRESS`` = 1 forces the bar, 0 hides it; else on a terminal, for big or many files."""
    forced = os.environ.get("CASTORE_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty() and (total_bytes >= PROGRESS_MIN_BYTES or files > 1)


@contextmanager
def progress(description: str, total_bytes: int | None, files: int = 1, *, by_files: bool = False) -> Iterator[ProgressBar]:
    """A progress bar of bytes (rate and ETA) and files for a transfer in either direction.

    Shown on stderr when it is a terminal and the transfer is large or has several files
    (``$CASTORE_PROGRESS=1`` forces it, ``0`` hides it). ``total_bytes`` None: unknown.
    ``by_files``: no bytes move (``rm -r``), so the bar counts files, with their rate and ETA.
    """
    if not progress_wanted(total_bytes or 0, files):
        yield ProgressBar(files_total=files)
        return
    from tqdm import tqdm

    if by_files:
        with tqdm(total=files, desc=description, unit=" files", leave=False, file=sys.stderr, dynamic_ncols=True,
                  mininterval=0.2) as bar:
            yield ProgressBar(bar=bar, files_total=files, by_files=True)
        return
    with tqdm(total=total_bytes, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
              leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.2) as bar:
        yield ProgressBar(bar=bar, files_total=files)


# -- the context every command gets ----------------------------------------------------------------


class Context:
    """What every command gets: where the store is (a local root or a server URL, with the CA
    bundle trusted for an ``https://`` one) and how to print."""

    def __init__(self, root: Path, as_json: bool, url: str | None = None, *, metadata: str | None = None,
                 blobs: str | None = None, ca_bundle: str | None = None) -> None:
        self.root = root
        self.as_json = as_json
        self.url = url
        self.ca_bundle = ca_bundle
        self.metadata = metadata
        self.blobs = blobs

    def client(self) -> Client:
        """A client without a cache whose origin is the server at ``--url`` or the store at ``--root``."""
        from ..client import Client

        if self.url is None:
            return Client(local_store=None, remote_store=self.store())
        from ..client.transport import BadCaBundle

        try:
            client = Client(local_store=None, remote_url=self.url, ca_bundle=self.ca_bundle)
        except ValueError as e:
            fail(f"{'--ca-bundle' if isinstance(e, BadCaBundle) else '--url'}: {e}", EXIT_USAGE)
        click.get_current_context().call_on_close(client.close)
        return client

    def local_only(self, command: str) -> None:
        """Refuse a command the Filetracker protocol cannot carry when ``--url`` is in effect."""
        if self.url is not None:
            from ..client.transport import redact_url

            fail(f"castore {command} needs a local store (--root), not --url {redact_url(self.url)}", EXIT_USAGE)

    def store(self, create: bool = False, read_only: bool | None = None, *, check_blobs: bool | None = None,
              create_bucket: bool = False, **settings: int) -> Store:
        """The store at ``--root`` (or ``--metadata``/``--blobs``), closed when the command ends.

        ``check_blobs`` (default: with ``create``) checks first that ``--blobs`` takes writes;
        ``create_bucket`` makes a missing S3 bucket (castore.location.open_parts).
        """
        from ..opening import open_store  # checks the settings (castore.location.open_parts)

        self.location()  # a bad URL: one line, exit 2
        store = open_store(self.root, metadata=self.metadata, blobs=self.blobs, create=create, read_only=read_only,
                           retention=settings.get("retention"), inline_max=settings.get("inline_max"),
                           zstd_level=settings.get("zstd_level"), check_blobs=check_blobs,
                           create_bucket=create_bucket)
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
            click.echo(json_line(data))
        elif text is not None:
            click.echo(text)

    def warn(self, text: str) -> None:
        """A one-line notice on stderr (not an error): e.g. ``kept: a newer version @N is stored``."""
        click.echo(text, err=True)


pass_context = click.make_pass_decorator(Context)


strict_option = click.option(
    "--strict", is_flag=True,
    help=f"Exit {EXIT_KEPT} when a newer version is already stored (the older one is never stored).",
)
