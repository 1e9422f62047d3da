"""What the whole-store totals cost as the store grows: ``usage()``, the web page's landing page, a put.

Usage (the castore measured is the one on PYTHONPATH, printed first)::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/totals.py --paths 100000 1000000
    PYTHONPATH=/work/main .venv/bin/python benchmarks/totals.py --paths 100000   # another tree: before/after

For each size a SQLite store is built as ``benchmarks/report.py`` builds it (metadata
through ``WriteTxn.bulk_add_paths``, 100 paths per content); then it times ``usage()``
(median of 5), ``GET /ui/`` in process (the first request, then the median of 5 with the
page's clock moved past any cache, so each request does what a request after the cache
expires does), and 500 puts of new 1 KiB files (the write path the totals' triggers ride on).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import castore  # the castore on PYTHONPATH is the one measured


def _median_ms(function: object, times: int = 5) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        function()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _landing_page(store: object) -> tuple[float, float]:
    """Milliseconds of the first ``GET /ui/`` and the median of 5 more, each past the page's caches."""
    import httpx
    from starlette.applications import Starlette

    from castore.server import ui

    now = [0.0]
    app = Starlette(routes=[ui.ui_mount(store, clock=lambda: now[0])])  # type: ignore[arg-type]

    async def timings() -> list[float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            found = []
            for _ in range(6):
                now[0] += 3600  # past any cache of the page
                started = time.perf_counter()
                page = await http.get("/ui/")
                found.append(time.perf_counter() - started)
                assert page.status_code == 200
            return found

    seconds = asyncio.run(timings())
    return seconds[0] * 1000, statistics.median(seconds[1:]) * 1000


def measure(root: Path, count: int) -> None:
    from report import build  # benchmarks/report.py, beside this script: after castore (it adds this tree)

    from castore.store import Store

    started = time.perf_counter()
    build(root, count)
    built = time.perf_counter() - started
    with Store.open(root) as store:
        usage = store.usage()
        usage_ms = _median_ms(store.usage)
        first, later = _landing_page(store)
        started = time.perf_counter()
        for i in range(500):
            store.put(f"/bench/new/{i}", b"%d" % i * 256, 1)
        put_ms = (time.perf_counter() - started) / 500 * 1000
    print(f"| {usage.files:,} | {built:.0f} s | {usage_ms:.2f} ms | {first:.1f} ms | {later:.1f} ms | {put_ms:.2f} ms |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(f"castore from {Path(castore.__file__).parent}")
    print("| paths | build | usage() | GET /ui/ first | GET /ui/ later (median) | put 1 KiB |")
    print("|---|---|---|---|---|---|")
    for count in args.paths:
        work = Path(tempfile.mkdtemp(prefix="castore-totals-"))
        try:
            measure(work / "store", count)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
