"""castore standing in for Filetracker's server, for Filetracker's own test modules.

``filetracker/tests/*_test.py`` start their server by calling
``filetracker.servers.run.main(argv)`` in a forked ``multiprocessing.Process``, sleep
1-2 s, then connect. :func:`installed` puts a module in ``sys.modules`` whose ``main``
takes Filetracker's options (``-p``, ``-l``, ``-d``, ``--workers``, ``--fallback-url``;
logging options are accepted and ignored) and replaces the forked process with
``castore serve --init`` (``exec``), so the test's own ``terminate()`` or
``kill_process_tree`` stops castore. Nothing else in the test modules changes: their
ports, sleeps and assertions are Filetracker's.

Their ports are fixed, so :func:`port_lock` serialises runs across processes on one
machine (two worktrees running tests/compat at once would otherwise collide).
"""

from __future__ import annotations

import fcntl
import optparse
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager

MODULE = "filetracker.servers.run"


def main(args: list[str] | None = None) -> None:
    """Exec ``castore serve`` with Filetracker's server options (never returns)."""
    parser = optparse.OptionParser()
    parser.add_option("-p", "--port", dest="port", type="int", default=9999)
    parser.add_option("-l", "--listen-on", dest="listen_on", default="127.0.0.1")
    parser.add_option("-d", "--dir", dest="dir", default=None)
    parser.add_option("-L", "--log", dest="log", default=None)
    parser.add_option("--log-level", dest="log_level", default="INFO")
    parser.add_option("--log-config", dest="log_config", default=None)
    parser.add_option("-D", "--no-daemon", dest="daemonize", action="store_false", default=True)
    parser.add_option("--fallback-url", dest="fallback_url", default=None)
    parser.add_option("--workers", dest="workers", type="int", default=None)
    options, rest = parser.parse_args(args)
    if rest:
        parser.error("Unrecognized arguments: " + " ".join(rest))
    folder = options.dir or os.environ["FILETRACKER_DIR"]
    command = [sys.executable, "-m", "castore", "--root", folder, "serve", "--init",
               "--host", options.listen_on, "--port", str(options.port)]
    if options.workers is not None:
        command += ["--workers", str(options.workers)]
    if options.fallback_url:
        command += ["--fallback-url", options.fallback_url]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


@contextmanager
def installed() -> Iterator[None]:
    """``filetracker.servers.run`` is this stand-in while the block runs (its real one needs bsddb3)."""
    stub = types.ModuleType(MODULE)
    stub.main = main  # type: ignore[attr-defined]
    saved = sys.modules.get(MODULE)
    sys.modules[MODULE] = stub
    try:
        yield
    finally:
        if saved is None:
            del sys.modules[MODULE]
        else:
            sys.modules[MODULE] = saved


@contextmanager
def port_lock() -> Iterator[None]:
    """Held while a Filetracker test module's fixed ports are in use on this machine."""
    with open(os.path.join(tempfile.gettempdir(), "castore-filetracker-test-ports.lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
