"""Request counters and a latency histogram, rendered in the Prometheus text format.

One :class:`Metrics` per server process; with several workers each reports its own
counters (Prometheus sums them when scraping each worker, or use one worker per port).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server imports this module before SQLAlchemy (castore.server.serving)
    from ..metadata.rows import Usage

__all__ = ["LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Thread-safe counters of one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

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

    def render(self, usage: Usage) -> str:
        with self._lock:
            lines = [
                "# HELP castore_requests_total HTTP requests by method and status.",
                "# TYPE castore_requests_total counter",
            ]
            for (method, status), n in sorted(self.requests.items()):
                lines.append(f'castore_requests_total{{method="{method}",status="{status}"}} {n}')
            lines += [
                "# HELP castore_request_bytes_total Request body bytes received.",
                "# TYPE castore_request_bytes_total counter",
                f"castore_request_bytes_total {self.bytes_in}",
                "# HELP castore_response_bytes_total Response body bytes sent.",
                "# TYPE castore_response_bytes_total counter",
                f"castore_response_bytes_total {self.bytes_out}",
                "# HELP castore_request_duration_seconds Time to answer a request.",
                "# TYPE castore_request_duration_seconds histogram",
            ]
            for bound, n in zip(LATENCY_BUCKETS, self.buckets, strict=True):
                lines.append(f'castore_request_duration_seconds_bucket{{le="{bound}"}} {n}')
            lines += [
                f'castore_request_duration_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                f"castore_request_duration_seconds_sum {self.latency_sum}",
                f"castore_request_duration_seconds_count {self.latency_count}",
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
