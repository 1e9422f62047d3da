"""Request counters and a latency histogram, rendered in the Prometheus text format.

One :class:`Metrics` per server process. With several workers, ``/metrics`` (answered by
whichever worker gets the request) shows the sum over every worker of the server: before
forking, the master makes a folder (:func:`share_metrics`, named in
:data:`METRICS_FOLDER_VARIABLE`); each worker writes its counters there as
``<pid>.json`` (:data:`SHARE_INTERVAL` seconds after they change at most, and when it
stops) and adds up the others' files to its own counters when it renders. A worker that
has ended leaves its file, so the counters never go back (Prometheus counters must not);
the folder goes when the master ends. The same idea as prometheus_client's multiprocess
mode, without the dependency. Another worker's requests show within about
:data:`SHARE_INTERVAL` seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server imports this module before SQLAlchemy (castore.server.serving)
    from ..metadata.rows import Usage

__all__ = ["LATENCY_BUCKETS", "METRICS_FOLDER_VARIABLE", "SHARE_INTERVAL", "Metrics", "share_metrics",
           "unshare_metrics"]

METRICS_FOLDER_VARIABLE = "CASTORE_METRICS_FOLDER"
"""The environment variable naming the folder where the workers of one server share their counters."""
SHARE_INTERVAL = 0.5
"""Seconds a worker waits at most before its changed counters reach the shared folder."""


def share_metrics() -> str:
    """In the master, before the workers fork: make the folder they share counters in (returned)."""
    folder = tempfile.mkdtemp(prefix="castore-metrics-")
    os.environ[METRICS_FOLDER_VARIABLE] = folder
    return folder


def unshare_metrics(folder: str) -> None:
    """In the master, once its workers have ended: remove the shared folder."""
    shutil.rmtree(folder, ignore_errors=True)
    if os.environ.get(METRICS_FOLDER_VARIABLE) == folder:
        del os.environ[METRICS_FOLDER_VARIABLE]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Thread-safe counters of one server process, shared with its sibling workers when ``folder`` is given.

    ``folder`` (default: :data:`METRICS_FOLDER_VARIABLE`, set by :func:`share_metrics`):
    where this process writes its counters and reads its siblings'; None: this process
    alone. :meth:`close` writes them one last time and stops the writing thread.
    """

    def __init__(self, folder: str | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self._folder = Path(folder) if folder else (Path(os.environ[METRICS_FOLDER_VARIABLE])
                                                    if os.environ.get(METRICS_FOLDER_VARIABLE) else None)
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        if self._folder is not None and self._folder.is_dir():
            self._writer = threading.Thread(target=self._share, daemon=True, name="castore-metrics")
            self._writer.start()
        else:
            self._folder = None

    def _own_file(self) -> Path:
        assert self._folder is not None
        return self._folder / f"{os.getpid()}.json"

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": [[m, s, n] for (m, s), n in self.requests.items()], "bytes_in": self.bytes_in,
                    "bytes_out": self.bytes_out, "buckets": list(self.buckets), "latency_sum": self.latency_sum,
                    "latency_count": self.latency_count}

    def _write(self) -> None:
        """This process's counters to its file, replaced at once (a reader never sees half of it)."""
        target = self._own_file()
        temporary = target.with_suffix(".tmp")
        with suppress(OSError):  # the folder removed by a master that is stopping: nothing to share with
            temporary.write_text(json.dumps(self._snapshot()), encoding="utf-8")
            temporary.replace(target)

    def _share(self) -> None:
        """The writing thread: the counters to the file after each change, at most once per interval."""
        while True:
            self._changed.wait()
            if self._stop.is_set():
                return
            self._changed.clear()
            self._write()
            if self._stop.wait(SHARE_INTERVAL):
                return

    def close(self) -> None:
        """Write the counters one last time (a worker that stops keeps its requests counted)."""
        if self._writer is None or self._stop.is_set():
            return
        self._stop.set()
        self._changed.set()
        self._writer.join(timeout=5)
        self._write()

    def _siblings(self) -> list[dict[str, Any]]:
        """The counters the other workers of this server last wrote."""
        if self._folder is None:
            return []
        own = self._own_file().name
        found = []
        for file in self._folder.glob("*.json"):
            if file.name == own:
                continue
            with suppress(OSError, ValueError):
                found.append(json.loads(file.read_text(encoding="utf-8")))
        return found

    def observe(self, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        with self._lock:
            self.requests[(method, status)] += 1
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
        if self._writer is not None:
            self._changed.set()

    def render(self, usage: Usage) -> str:
        """The counters of every worker of this server (this one's as they are now), and the store's totals."""
        parts = [self._snapshot(), *self._siblings()]
        requests: Counter[tuple[str, int]] = Counter()
        for part in parts:
            for method, status, n in part["requests"]:
                requests[(str(method), int(status))] += int(n)
        buckets = [sum(int(part["buckets"][i]) for part in parts) for i in range(len(LATENCY_BUCKETS))]
        count = sum(int(part["latency_count"]) for part in parts)
        lines = [
            "# HELP castore_requests_total HTTP requests by method and status.",
            "# TYPE castore_requests_total counter",
        ]
        for (method, status), n in sorted(requests.items()):
            lines.append(f'castore_requests_total{{method="{method}",status="{status}"}} {n}')
        lines += [
            "# HELP castore_request_bytes_total Request body bytes received.",
            "# TYPE castore_request_bytes_total counter",
            f"castore_request_bytes_total {sum(int(part['bytes_in']) for part in parts)}",
            "# HELP castore_response_bytes_total Response body bytes sent.",
            "# TYPE castore_response_bytes_total counter",
            f"castore_response_bytes_total {sum(int(part['bytes_out']) for part in parts)}",
            "# HELP castore_request_duration_seconds Time to answer a request.",
            "# TYPE castore_request_duration_seconds histogram",
        ]
        for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
            lines.append(f'castore_request_duration_seconds_bucket{{le="{bound}"}} {n}')
        lines += [
            f'castore_request_duration_seconds_bucket{{le="+Inf"}} {count}',
            f"castore_request_duration_seconds_sum {sum(float(part['latency_sum']) for part in parts)}",
            f"castore_request_duration_seconds_count {count}",
            "# HELP castore_worker_processes Server processes whose counters are summed (ended ones included).",
            "# TYPE castore_worker_processes gauge",
            f"castore_worker_processes {len(parts)}",
        ]
        gauges = {
            "castore_files": ("Current files.", usage.files),
            "castore_logical_bytes": ("Logical bytes of current files.", usage.logical_bytes),
            "castore_retained_bytes": ("Logical bytes of all retained versions.", usage.retained_bytes),
            "castore_stored_bytes": ("Bytes stored for referenced blobs.", usage.stored_bytes),
            "castore_blobs": ("Referenced blobs.", usage.blobs),
            "castore_dedup_ratio": ("Retained logical bytes per stored byte.", usage.dedup_ratio),
        }
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"
