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
9     network: the server cannot be reached, or its TLS certificate is refused; ``serve`` cannot listen
10    not allowed: a refused token (HTTP 401) or role (403), or a read-only store;
      ``put -r``, ``rm -r`` and ``ingest`` stop at the first refusal
11    exists already: ``token create`` with the name of an existing token
12    a file where the store has a folder, or below a file
130   interrupted (Ctrl-C); ``put -r`` says how many files it stored
141   stdout was closed early (``castore ls | head -1``), quietly, as Unix tools do
====  ==================================================

``castore check`` has its own statuses: 0 clean, 1 every problem repaired, 2 damage
remains (see :mod:`castore.maintenance`); 5 and 6 when it cannot run.

The commands, by topic: :mod:`castore.cli.files` (put, get, cat, ls, rm, stat, log,
ingest), :mod:`castore.cli.admin` (init, check, gc, du, token, cache-clean, migrate-schema,
migrate-store), :mod:`castore.cli.serve` and :mod:`castore.cli.migrate` (import-filetracker,
migrate status); what they share (exit codes, :func:`~castore.cli.common.fail`, the
:class:`~castore.cli.common.Context`, the progress bar) is :mod:`castore.cli.common`. Each
topic module lists its commands in ``COMMANDS``, which this module adds to :func:`cli`.
Heavy imports (SQLAlchemy, Starlette, tqdm) happen inside commands, so ``castore --help``
starts fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from . import admin, compact, files, migrate, serve
from .common import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, CliError, Context, errors_as_exit_codes, message_for

__all__ = ["cli", "main"]


_INSTEAD = {
    word: "castore log NAME lists a file's retained versions; castore cat NAME@VERSION reads one."
    for word in ("versions", "history")
}
"""Commands people try that castore spells otherwise, with what to type instead."""


class _Group(click.Group):
    """castore's command group: expected errors of every command become one line and an exit code."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        """Click's lookup; a command castore spells otherwise (:data:`_INSTEAD`) names the right one."""
        if args and args[0] in _INSTEAD and self.get_command(ctx, args[0]) is None:
            ctx.fail(f"No such command '{args[0]}'. {_INSTEAD[args[0]]}")
        return super().resolve_command(ctx, args)

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
        except (click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            obj = ctx.find_object(Context)
            raise CliError("interrupted", EXIT_INTERRUPTED, as_json=obj is not None and obj.as_json) from None
        except Exception as e:
            if os.environ.get("CASTORE_DEBUG") == "1":
                raise
            obj = ctx.find_object(Context)
            raise CliError(f"{type(e).__name__}: {message_for(e)} (CASTORE_DEBUG=1 shows the traceback)",
                           as_json=obj is not None and obj.as_json) from e


def _quiet_broken_pipe() -> NoReturn:
    """The reader of stdout went away (``castore ls | head -1``): exit at once, print nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not complain again
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


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
@click.option("--ca-bundle", default=None, envvar="CASTORE_CA_BUNDLE", metavar="FILE",
              help="CA certificates (PEM) trusted for an https:// --url, e.g. a private CA's (env CASTORE_CA_BUNDLE; "
              "default: the system's). Certificates are always verified: a refused one exits 9.")
@click.option("--metadata", default=None, envvar="CASTORE_METADATA", metavar="URL",
              help="Metadata database instead of --root's: sqlite:///…/metadata.sqlite3 or "
              "postgresql+psycopg://user:pw@host/db (env CASTORE_METADATA).")
@click.option("--blobs", default=None, envvar="CASTORE_BLOBS", metavar="URL",
              help="Blob storage instead of --root's: file:///…/blobs or s3://bucket/prefix?endpoint_url=… "
              "(env CASTORE_BLOBS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (errors too: {error, code}).")
@click.version_option(package_name="castore")
@click.pass_context
def cli(ctx: click.Context, root: Path, url: str | None, ca_bundle: str | None, metadata: str | None,
        blobs: str | None, as_json: bool) -> None:
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
    ctx.obj = Context(root, as_json, url or None, metadata=metadata or None, blobs=blobs or None,
                      ca_bundle=ca_bundle or None)


for _command in (*files.COMMANDS, *admin.COMMANDS, *compact.COMMANDS, *serve.COMMANDS, *migrate.COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``castore`` console script."""
    cli(prog_name="castore")
