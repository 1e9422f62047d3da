"""Free SQLite pages left by contents that shrink or go are given back; ``du`` names the overhead (#23)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from castore.cli import cli
from castore.layout import METADATA_FILE
from castore.store import Store

from .test_compacting import numbers


def _database(root: Path) -> Path:
    return root / METADATA_FILE


def _pragma(root: Path, name: str) -> int:
    with sqlite3.connect(_database(root)) as c:
        return int(c.execute(f"PRAGMA {name}").fetchone()[0])


def test_a_new_store_gives_free_pages_back_after_compact_and_gc(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        assert _pragma(root, "auto_vacuum") == 2  # INCREMENTAL
        for i in range(40):
            store.put(f"/t/{i}.in", numbers(i, 3000), 1)
        report = store.compact()
        assert report.settled == 40 and report.metadata_bytes_reclaimed > 0
        assert _pragma(root, "freelist_count") == 0
        for i in range(40):
            store.delete(f"/t/{i}.in")
        gc = store.collect_garbage()
        assert gc.blobs == 40 and gc.metadata_bytes_reclaimed > 0
        assert _pragma(root, "freelist_count") == 0
        assert store.overhead()["free_pages"] == 0


def test_an_older_store_keeps_its_pages_until_compact_vacuum(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        store.put("/a", b"x", 1)
    with sqlite3.connect(_database(root), isolation_level=None) as c:  # as a store made before #23 is
        c.execute("PRAGMA auto_vacuum = NONE")
        c.execute("VACUUM")
    with Store.open(root) as store:
        assert _pragma(root, "auto_vacuum") == 0
        for i in range(20):
            store.put(f"/t/{i}.in", numbers(i, 3000), 1)
        for i in range(20):
            store.delete(f"/t/{i}.in")
        assert store.collect_garbage().metadata_bytes_reclaimed == 0  # nothing given back: not incremental
        assert store.overhead()["free_pages"] and store.overhead()["incremental"] == 0
    runner = CliRunner()
    du = runner.invoke(cli, ["--root", str(root), "du"])
    assert du.exit_code == 0 and "overhead:" in du.output and "castore compact --vacuum" in du.output, du.output
    done = runner.invoke(cli, ["--root", str(root), "compact", "--vacuum"])
    assert done.exit_code == 0, done.output
    assert _pragma(root, "auto_vacuum") == 2 and _pragma(root, "freelist_count") == 0
    data = json.loads(runner.invoke(cli, ["--root", str(root), "--json", "du"]).output)
    overhead = data["overhead"]
    assert overhead["free_pages"] == 0 and overhead["incremental"] == 1 and overhead["reserve"] == 2 << 20
    assert overhead["total"] == overhead["tables"] + overhead["file_slack"] + overhead["reserve"]
