"""/metrics of a server with several workers counts the requests of them all (#22)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ..server_process import castore_server

PUTS = 40


def _counted(text: str) -> int:
    found = re.search(r'^castore_requests_total\{method="PUT",status="200"\} (\d+)$', text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def test_metrics_add_up_the_workers(tmp_path: Path) -> None:
    with castore_server(tmp_path / "s", "--workers", "2") as url:
        def put(i: int) -> int:
            # a connection of its own each: the workers share them out
            with httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}) as http:
                return http.put(f"/files/m/{i}", params={"last_modified": "Sat, 01 Jan 2000 00:00:00 GMT"},
                                content=b"x%d" % i).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(put, range(PUTS))) == {200}
        deadline = time.monotonic() + 20
        counts: list[int] = []
        while time.monotonic() < deadline:  # each worker shares its counters within a second
            text = httpx.get(url + "/metrics").text
            counts.append(_counted(text))
            if counts[-1] == PUTS:
                break
            time.sleep(0.1)
        assert counts[-1] == PUTS, counts
        assert re.search(r"^castore_worker_processes [2-9]$", text, re.MULTILINE), text
