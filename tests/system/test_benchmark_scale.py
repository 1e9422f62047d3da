"""The scale benchmark (#22) runs at its small scale and reports every figure for every store.

No timing is asserted: the benchmark measures; this test keeps it from rotting (its own
checks: ``ls`` and ``/list/`` give every name of the big folder, the imports import every path).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from benchmarks.scale import CONTEST, SCALES, build, build_by_copy, table
from castore.metadata.totals import COLUMNS
from castore.opening import open_store

from ..backends import PostgresCluster, postgres_bin
from ..conftest import Clock

ROOT = Path(__file__).resolve().parents[2]


def test_small_run_reports_every_figure_on_each_backend(tmp_path: Path) -> None:
    backends = "sqlite,postgresql" if postgres_bin() is not None else "sqlite"
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--scale", "small", "--backends", backends,
                           "--out", str(tmp_path / "out"), "--work", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    sizes = SCALES["small"]
    assert sorted(data["backends"]) == sorted(backends.split(","))
    for backend, rows in data["backends"].items():
        assert [int(n) for n in rows] == sizes
        first, last = (rows[str(n)] for n in sizes)
        assert first.keys() == last.keys()
        assert all(value > 0 for value in last.values()), last
        assert last["files in /big/"] == sizes[1]
        assert "check (no content), peak RSS MiB" in last and "import, new contents, paths/s" in last
        text = table(backend, sizes, {int(n): row for n, row in rows.items()})
        assert "x)" in text  # ratios to the smallest store
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("| put 64 KiB, ms |") == len(data["backends"])
    assert list(tmp_path.glob("castore-scale-*")) == []  # the scratch stores are removed


def test_kept_stores_are_built_once_and_never_measured_themselves(tmp_path: Path) -> None:
    kept = tmp_path / "kept"

    def run(out: str) -> dict[str, dict[str, float]]:
        done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--scale", "small", "--backends", "sqlite",
                               "--keep", str(kept), "--out", str(tmp_path / out), "--work", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows: dict[str, dict[str, float]] = json.loads((tmp_path / out / "results.json").read_text())["backends"]["sqlite"]
        return rows

    first = run("one")
    database = kept / f"sqlite-{SCALES['small'][1]}" / "metadata.sqlite3"
    before = database.read_bytes()
    second = run("two")
    assert database.read_bytes() == before  # measured on a copy: the kept store is as built
    for n in SCALES["small"]:
        assert second[str(n)]["build (bulk), s"] == first[str(n)]["build (bulk), s"]  # not built again
        assert second[str(n)].keys() == first[str(n)].keys()
        assert all(value > 0 for value in second[str(n)].values())
    with sqlite3.connect(database) as c:
        assert c.execute("select count(*) from paths where path like '/bench/%' or path like '/imported-%'"
                         ).fetchone() == (0,)
    assert subprocess.run([sys.executable, "-m", "benchmarks.scale", "--keep", str(kept), "--backends",
                           "sqlite,postgresql"], cwd=ROOT, capture_output=True, timeout=60,
                          check=False).returncode == 2


def test_a_store_kept_by_an_older_castore_is_measured_upgraded(tmp_path: Path) -> None:
    """A kept store at an older schema revision: its copy is upgraded and opens; the kept one stays as it was."""
    from alembic import command
    from benchmarks.scale import built_copy
    from castore.metadata.migrate import SCHEMA_REVISION, alembic_config
    from castore.opening import locate

    kept = tmp_path / "kept" / "sqlite-2000"
    with open_store(kept, create=True) as store:
        store.put("/a", b"kept", 5)
    kept.with_suffix(".json").write_text(json.dumps({"build (bulk), s": 1.0, "contents": 1}))
    database = kept / "metadata.sqlite3"
    command.downgrade(alembic_config(f"sqlite:///{database}"), "0010")
    said: list[str] = []
    built_copy(kept, locate(tmp_path / "copy"), 0, 0, said.append)
    assert said == [f"the copy upgraded from schema 0010 to {SCHEMA_REVISION}"]
    with open_store(tmp_path / "copy") as store:
        assert store.read_bytes("/a") == b"kept"
    with sqlite3.connect(database) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == ("0010",)


SCHEMA_QUERIES = {
    "indexes": "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE connamespace = 'public'::regnamespace",
    "triggers": "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
    # a foreign key's own triggers (named after their OIDs): which table, which function, when
    "internal triggers": "SELECT tgrelid::regclass::text, tgfoid::regproc::text, tgtype, tgenabled FROM pg_trigger "
                         "WHERE tgisinternal",
    "functions": "SELECT pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
}


def contents(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the store's tables, and its schema: indexes, constraints, triggers, functions."""
    with psycopg.connect(dsn) as c:
        found = {table: sorted(c.execute(f"SELECT * FROM {table}").fetchall())  # type: ignore[arg-type]
                 for table in ("paths", "versions", "blobs", "settings", "deletions", "tokens")}
        found["totals"] = [c.execute("SELECT " + ", ".join(f"sum({column})" for column in COLUMNS)  # type: ignore[arg-type]
                                     + " FROM totals").fetchone() or ()]
        for name, query in SCHEMA_QUERIES.items():
            found[name] = sorted(c.execute(query).fetchall())  # type: ignore[arg-type]
    return found


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed")
def test_postgresql_store_written_with_copy_is_the_store_inserts_make(postgres: PostgresCluster,
                                                                       tmp_path: Path, clock: Clock) -> None:
    count, big = CONTEST + 2_000, 500  # a whole contest (tests and submissions) and part of the next
    template = postgres.new_database()  # both stores start from one created store: the same key seed
    open_store(metadata=template, blobs=(tmp_path / "unused").as_uri(), create=True, clock=clock).close()
    urls = {}
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as c:
        for way in ("inserts", "copy"):
            urls[way] = postgres.url(f"scale_{way}_{os.getpid()}")
            c.execute(f"CREATE DATABASE {urls[way].rsplit('/', 1)[1]} "  # type: ignore[arg-type]
                      f"TEMPLATE {template.rsplit('/', 1)[1]}")
    blobs = {way: (tmp_path / way).as_uri() for way in urls}
    with open_store(metadata=urls["inserts"], blobs=blobs["inserts"], clock=clock) as store:
        build(store, count, big)
    with open_store(metadata=urls["copy"], blobs=blobs["copy"], clock=clock) as store:
        figures = build_by_copy(store, urls["copy"], count, big)
    assert {"build_copy_paths_s", "build_foreign_keys_s", "build_totals_s"} <= figures.keys()

    made, copied = contents(postgres.dsn(urls["inserts"])), contents(postgres.dsn(urls["copy"]))
    assert len(copied["paths"]) == len(copied["versions"]) == count + big + figures["contents"]
    for part in made:
        assert copied[part] == made[part], part
    done = subprocess.run([sys.executable, "-m", "castore", "--metadata", urls["copy"], "--blobs", blobs["copy"],
                           "--json", "check", "--verify-content"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
