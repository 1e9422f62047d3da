"""Write-ahead-log checkpoints of a SQLite store in a background thread, off the puts' path.

In WAL mode SQLite copies the log back into the database file (a *checkpoint*, with
its fsyncs) inside whichever commit pushes the log past ``wal_autocheckpoint`` pages
(1000 by default). With small files stored inline that is about every 60 puts of
64 KiB, and that put waits for it: measured on the 2-core test machine, puts of 64 KiB
ran at ~600/s with a 99th percentile of ~24 ms, and at ~900/s with a 99th percentile
of ~6 ms once the checkpoints ran elsewhere.

A :class:`Checkpointer` (one per server worker) runs ``PRAGMA wal_checkpoint(PASSIVE)``
on its own connection a moment after commits happened. PASSIVE never waits for readers
or writers, so it delays no request; the log is reused from its start once a checkpoint
has copied all of it. The writers' own automatic checkpoint stays as a backstop, at a
larger size (:data:`BACKSTOP_PAGES`), in case this thread falls behind.

Durability is unchanged: a commit is in the log before it returns (``synchronous=NORMAL``,
see ``docs/design.md``), whoever copies it to the database file later.

On a full disk a checkpoint fails (the database file cannot grow) and the log keeps what
it holds, until a write that needs room has it truncated (``PutSteps._make_room``); that is
logged at debug level only: the writes that still find no room fail with
:class:`~castore.errors.StoreFull` and say so (an import's one line, a put's 507).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from ..faults import is_disk_full
from .sqlite import set_on_new_connections

__all__ = ["BACKSTOP_PAGES", "INTERVAL", "Checkpointer"]

BACKSTOP_PAGES = 16384
"""``wal_autocheckpoint`` of the writers while a Checkpointer runs (64 MiB of 4 KiB pages)."""
INTERVAL = 0.1
"""Seconds between two looks at whether something was committed."""

log = logging.getLogger(__name__)


class Checkpointer:
    """A daemon thread checkpointing a SQLite database's log after commits (see the module doc)."""

    def __init__(self, writer: Engine, connect: Any, *, interval: float = INTERVAL) -> None:
        self._connect = connect
        self._interval = interval
        self._stop = threading.Event()
        self.commits = 0
        """Commits noted so far (:meth:`noted`); approximate across threads, which is enough."""
        self.checkpoints = 0
        """Checkpoints run so far (for tests and curiosity)."""
        set_on_new_connections(writer, f"wal_autocheckpoint = {BACKSTOP_PAGES}")
        self._thread = threading.Thread(target=self._run, name="castore-checkpoint", daemon=True)
        self._thread.start()

    def noted(self) -> None:
        """A write transaction committed."""
        self.commits += 1

    def _run(self) -> None:
        connection = None
        seen = 0
        try:
            connection = self._connect()
            while not self._stop.wait(self._interval):
                if self.commits == seen:
                    continue
                seen = self.commits
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except Exception as e:  # noqa: BLE001 - the writers' own checkpoint is the backstop
                    log.log(logging.DEBUG if is_disk_full(e) else logging.WARNING,
                            "castore: a background checkpoint failed: %s", e)
        except Exception as e:  # noqa: BLE001 - cannot connect: the writers checkpoint as before
            log.warning("castore: no background checkpoints: %s", e)
        finally:
            if connection is not None:
                connection.close()

    def close(self) -> None:
        """Stop the thread (after a checkpoint in progress, if any)."""
        self._stop.set()
        self._thread.join()
