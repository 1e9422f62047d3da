"""``castore serve``: the store at ``--root`` over HTTP (:mod:`castore.server`).

Only click and castore's pure pieces are imported here: the server, its limits and the
live migration are imported when ``serve`` runs.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import click

from ..sizes import parse_size
from .common import EXIT_IO, EXIT_NETWORK, EXIT_USAGE, Context, fail, pass_context

if TYPE_CHECKING:
    from ..server.tls import TlsFiles

__all__ = ["COMMANDS"]


@click.command()
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
              help="Fetch missing files from this old Filetracker server, store and serve them "
                   "(https://: its certificate is checked against --ca-bundle, see castore --help).")
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
@click.option("--create-bucket", is_flag=True,
              help="--blobs s3://…: make the bucket if it does not exist (else a missing bucket is an error, exit 5).")
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
@click.option("--tls-cert", default=None, metavar="FILE",
              help="Serve HTTPS with this certificate (PEM, intermediates after it); needs --tls-key. "
                   "For sites without a TLS proxy in front.")
@click.option("--tls-key", default=None, metavar="FILE", help="The private key of --tls-cert (PEM, unencrypted).")
@click.option("--verify-first", default="auto", show_default=True, type=click.Choice(["auto", "always", "never"]),
              help="Verify a whole file before its headers go out: auto = for clients that cannot take a "
                   "cut body (no zstd), so they get a 500 rather than a truncated file.")
@click.option("--compact-when-idle", is_flag=True,
              help="Recompress stored contents at zstd 19 (as castore compact) in slices while no request comes; "
                   "a request stops a slice at once. Off by default.")
@click.option("--compact-idle", default=60.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="--compact-when-idle: seconds without a request (/health and /metrics aside) before a slice starts.")
@click.option("--compact-cpu", default=0.5, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
              metavar="SHARE", help="--compact-when-idle: the share of one core a slice may use (0.25: a quarter).")
@pass_context
def serve(c: Context, host: str, allowed_hosts: tuple[str, ...], port: int, workers: str, prefix: str,
          fallback_url: str | None, migrate_from: str | None, migrate_timeout: float, migrate_deadline: float,
          migrate_fetches: int, migrate_queue: int, gzip: bool, create: bool, create_bucket: bool, log_level: str,
          header_timeout: float, body_timeout: float, max_upload_size: str | None, max_zstd_window: str,
          read_only: bool, verify_first: str, tls_cert: str | None, tls_key: str | None, compact_when_idle: bool,
          compact_idle: float, compact_cpu: float) -> None:
    """Serve the store at --root over HTTP, Filetracker v2 protocol, until SIGTERM or Ctrl-C.

    A missing store is an error (exit 5) unless --init is given, so that a mistyped
    --root does not serve a new, empty store. With --blobs s3://… the bucket is checked
    before serving (a small put, get and delete; exit 5 saying what to do when it is
    missing or not writable). Prints one line on start: URL, store, workers, version,
    and whether requests need an access token (castore token --help). Idle and slow
    clients hold no worker thread (bodies are received on the event loop); a store on a
    read-only filesystem is served read-only.
    With --compact-when-idle it settles stored contents at zstd 19 while it has nothing
    else to do (see castore compact --help), in slices that a request stops at once.
    With --tls-cert and --tls-key it serves HTTPS (https:// on the start line); a missing,
    unreadable or mismatched file is one line at start-up (exit 7 unreadable, 2 unusable).

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
    if migrate_from is not None and not re.match(r"https?://[^/\s]+", migrate_from):
        fail(f"--migrate-from: {migrate_from!r} is not http[s]://host[:port][/prefix]", EXIT_USAGE)
    if migrate_from is not None and c.ca_bundle:
        os.environ["CASTORE_CA_BUNDLE"] = os.path.abspath(c.ca_bundle)  # the workers' client of the old server
    if migrate_from is not None and read_only:
        fail("--migrate-from moves files in: it cannot go with --read-only", EXIT_USAGE)
    if compact_when_idle and read_only:
        fail("--compact-when-idle rewrites stored contents: it cannot go with --read-only", EXIT_USAGE)
    sizes = {}
    for option, text in (("--max-upload-size", max_upload_size), ("--max-zstd-window", max_zstd_window)):
        try:
            sizes[option] = parse_size(text) if text else None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=option) from None
    limits = UploadLimits(body_timeout=body_timeout, max_upload_size=sizes["--max-upload-size"],
                          max_zstd_window=sizes["--max-zstd-window"] or UploadLimits.max_zstd_window)
    hosts = [entry.strip() for item in allowed_hosts for entry in item.split(",") if entry.strip()] or None
    from ..server.hosts import AllowedHosts, default_allowed_hosts

    if hosts is not None:
        try:
            AllowedHosts.parse(hosts)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--allowed-hosts") from None
    tls = _tls_files(tls_cert, tls_key)
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
        closed = (c.store(create=create and not read_only, read_only=True if read_only else None,  # closed at exit
                          check_blobs=not read_only, create_bucket=create_bucket).metadata.access_closed())
    else:
        closed = ready.closed
    access = "access tokens required" if closed else "open to anyone: no access token needed"
    shown_host = f"[{host}]" if ":" in host else host
    c.warn(f"castore {__version__} serving {c.describe()} at {'https' if tls else 'http'}://{shown_host}:{port}"
           f"{prefix.rstrip('/')} ({count} worker{'s' if count > 1 else ''}{', read-only' if read_only else ''}, "
           f"{access})")
    from ..server.config import ServerConfig, token_cache_seconds
    from ..server.serving import serve as run_server

    migration_limits = None
    if migrate_from:
        from ..migration.live import MigrationLimits

        migration_limits = MigrationLimits(timeout=migrate_timeout, deadline=migrate_deadline, fetches=migrate_fetches,
                                           queue=migrate_queue)
    config = ServerConfig(
        root=os.path.abspath(c.root) if c.root else None, metadata=c.metadata or None, blobs=c.blobs or None,
        read_only=read_only, prefix=prefix, fallback_url=fallback_url or None, gzip=gzip, verify_first=verify_first,
        limits=limits, header_timeout=header_timeout,
        allowed_hosts=tuple(hosts if hosts is not None else default_allowed_hosts(host, sock.getsockname()[0])),
        token_cache_seconds=token_cache_seconds(os.environ), migrate_from=migrate_from,
        migration_limits=migration_limits, compact_when_idle=compact_when_idle, compact_idle=compact_idle,
        compact_cpu=compact_cpu)
    run_server(config, host=host, port=port, workers=count, log_level=log_level, sock=sock, early_version=not closed,
               tls=tls)


def _tls_files(cert: str | None, key: str | None) -> TlsFiles | None:
    """``--tls-cert`` and ``--tls-key``, checked (they come together, and the pair loads), or None."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        fail("--tls-cert and --tls-key go together", EXIT_USAGE)
    from ..server.tls import TlsFiles, UnreadableFile

    tls = TlsFiles(cert, key).absolute()
    try:
        tls.check()
    except ValueError as e:
        fail(str(e), EXIT_IO if isinstance(e, UnreadableFile) else EXIT_USAGE)
    return tls


COMMANDS = (serve,)
"""The commands this module adds to the ``castore`` group."""
