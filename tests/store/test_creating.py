"""A new store folder made with the standard library (castore.creating): the same store SQLAlchemy makes.

``castore serve --init`` on a new folder makes its store this way in the master, before
any worker starts, without loading SQLAlchemy. Real files, real processes, a real
``castore serve`` on 127.0.0.1.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from castore.creating import SCHEMA_FILE, create_database, create_folder, render_schema, schema_script
from castore.layout import DEFAULTS, SETTING_NAMES
from castore.metadata.migrate import SCHEMA_REVISION
from castore.opening import locate, open_store, upgrade_schema_of
from castore.preflight import preflight

from ..server_process import free_port

CASTORE = [sys.executable, "-m", "castore"]


def _rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _describe(database: Path) -> dict[str, Any]:
    """Everything about a store database that does not depend on its content or its seed."""
    pragmas = ("page_size", "journal_mode", "user_version", "application_id", "auto_vacuum", "encoding")
    return {
        "sqlite_master": _rows(database, "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master ORDER BY rowid"),
        "alembic_version": _rows(database, "SELECT * FROM alembic_version"),
        "settings": _rows(database, "SELECT name, value FROM settings WHERE name != 'seed' ORDER BY name"),
        **{pragma: _rows(database, f"PRAGMA {pragma}") for pragma in pragmas},
    }


def _seed(database: Path) -> int:
    [(seed,)] = _rows(database, "SELECT value FROM settings WHERE name = 'seed'")
    return int(seed)


def _made_by_sqlalchemy(root: Path, **settings: int) -> Path:
    """A store folder made as castore made every store before castore.creating: SQLAlchemy's schema, then settings."""
    upgrade_schema_of(locate(root))  # castore.metadata.migrate: the models' tables, stamped (no settings yet)
    open_store(root, create=True, **settings).close()  # an existing database: its settings, through SQLAlchemy
    return root / "metadata.sqlite3"


def test_the_schema_file_is_what_sqlalchemy_creates(tmp_path: Path) -> None:
    database = _made_by_sqlalchemy(tmp_path / "reference")
    connection = sqlite3.connect(database)
    try:
        current = render_schema(connection, SCHEMA_REVISION)
    finally:
        connection.close()
    assert schema_script() == current, f"castore/metadata/{SCHEMA_FILE} is stale: run python scripts/make_schema_sql.py"


@pytest.mark.parametrize("settings", [{}, {"retention": 3, "inline_max": 0, "zstd_level": 19}])
def test_a_new_folder_is_the_store_sqlalchemy_makes(tmp_path: Path, settings: dict[str, int]) -> None:
    reference = _made_by_sqlalchemy(tmp_path / "reference", **settings)
    assert create_folder(tmp_path / "new", settings)
    made = tmp_path / "new" / "metadata.sqlite3"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [".reserve", "blobs", "metadata.sqlite3"]
    assert _describe(made) == _describe(reference)
    assert {row[0] for row in _rows(made, "SELECT name FROM settings")} == SETTING_NAMES
    assert 0 <= _seed(made) < 1 << 64 and _seed(made) != _seed(reference)
    assert _rows(made, "PRAGMA integrity_check") == [("ok",)]
    assert (tmp_path / "new" / "blobs" / ".staging").is_dir()
    assert (tmp_path / "new" / ".reserve").stat().st_size > 0
    assert not create_folder(tmp_path / "new", settings)  # already there: left as it is
    with open_store(tmp_path / "new") as store:
        assert store.settings() == {**DEFAULTS, **settings}
        assert store.read_bytes(store.put("/a.txt", b"hello")) == b"hello"


def test_every_way_of_creating_a_store_gives_the_same_store(tmp_path: Path) -> None:
    reference = _describe(_made_by_sqlalchemy(tmp_path / "reference", retention=4))
    open_store(tmp_path / "opened", create=True, retention=4).close()
    subprocess.run([*CASTORE, "--root", str(tmp_path / "init"), "init", "--retention", "4"], check=True,
                   capture_output=True)
    for folder in ("opened", "init"):
        assert _describe(tmp_path / folder / "metadata.sqlite3") == reference, folder


def test_a_schema_file_for_another_revision_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("castore.creating.SCHEMA_REVISION", "9999")
    with pytest.raises(RuntimeError, match="make_schema_sql"):
        create_folder(tmp_path / "new")
    assert not (tmp_path / "new" / "metadata.sqlite3").exists()
    assert preflight(tmp_path / "new", create=True) is None  # serve --init: the master makes it with SQLAlchemy
    assert not (tmp_path / "new" / "metadata.sqlite3").exists()


_RACE = """
import sys, time
from castore.creating import create_folder
from castore.opening import open_store
root, at, how = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < at:
    pass
if how == "creating":
    print(create_folder(root))
else:
    open_store(root, create=True).close()
    print("opened")
"""


def test_processes_creating_one_folder_at_once_share_one_store(tmp_path: Path) -> None:
    for round_ in range(3):
        root = tmp_path / f"s{round_}"
        at = time.time() + 1.5  # after every interpreter has started
        ways = ["creating"] * 6 + ["opening"] * 2
        processes = [subprocess.Popen([sys.executable, "-c", _RACE, str(root), str(at), how], stdout=subprocess.PIPE,
                                      text=True) for how in ways]
        printed = [process.communicate(timeout=60)[0].strip() for process in processes]
        assert all(process.returncode == 0 for process in processes), printed
        assert printed.count("opened") == 2 and printed.count("True") <= 1, printed
        assert _rows(root / "metadata.sqlite3", "PRAGMA integrity_check") == [("ok",)]
        assert preflight(root) is not None
        assert not [p.name for p in root.iterdir() if ".new-" in p.name]  # no temporary folder left
        with open_store(root) as store:  # one seed, which every process saw
            assert store.read_bytes(store.put("/a", b"x")) == b"x"


def test_two_creators_of_one_database_one_makes_it(tmp_path: Path) -> None:
    database = tmp_path / "metadata.sqlite3"
    assert create_database(database, DEFAULTS)
    seed = _seed(database)
    assert not create_database(database, {**DEFAULTS, "retention": 2})  # built, then found there: not linked
    assert _seed(database) == seed and ("retention", "10") in _rows(database, "SELECT name, value FROM settings")
    assert not [p.name for p in tmp_path.iterdir() if ".new-" in p.name]  # no temporary folder left


_CREATE_FOREVER = """
import itertools, sys
from castore.opening import open_store
work = sys.argv[1]
print("ready", flush=True)
for i in itertools.count():
    open_store(f"{work}/s{i}", create=True).close()
"""


def test_kill_9_while_creating_leaves_no_database_or_a_complete_one(tmp_path: Path) -> None:
    for round_, delay in enumerate((0.3, 0.45, 0.6, 0.75, 0.9, 1.05)):
        work = tmp_path / f"round{round_}"
        work.mkdir()
        process = subprocess.Popen([sys.executable, "-c", _CREATE_FOREVER, str(work)], stdout=subprocess.PIPE,
                                   text=True)
        try:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
            time.sleep(delay)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        folders = sorted(work.iterdir())
        assert folders, "no store was being made"
        for root in folders:
            database = root / "metadata.sqlite3"
            if database.exists():  # complete: at this schema, every setting there
                assert preflight(root) is not None, f"{database} is half made"
                assert _rows(database, "PRAGMA integrity_check") == [("ok",)]


def _await_version(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/version/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "castore serve did not start"
        time.sleep(0.02)


def test_serve_init_makes_a_new_store_without_sqlalchemy_in_the_master(tmp_path: Path) -> None:
    root = tmp_path / "new"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    # -X importtime: every process prints each import it makes; the master prints its start-up line before forking
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-X", "importtime", *CASTORE[1:], "--root", str(root), "serve",
                                    "--init", "--workers", "2", "--port", str(port)], stdout=output, stderr=output)
        try:
            _await_version(url, process)
            local = tmp_path / "a.txt"
            local.write_bytes(b"hello\n" * 1000)
            subprocess.run([*CASTORE, "--url", url, "put", str(local), "/dir/a.txt"], check=True, capture_output=True)
            got = subprocess.run([*CASTORE, "--url", url, "cat", "/dir/a.txt"], check=True, capture_output=True)
            assert got.stdout == local.read_bytes()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    lines = log.read_text(errors="replace").splitlines()
    started = next(i for i, line in enumerate(lines) if " serving " in line)
    before_fork = [line for line in lines[:started] if line.startswith("import time:")]
    assert before_fork, "no import lines: -X importtime did not apply"
    assert not [line for line in before_fork if "sqlalchemy" in line or "alembic" in line], "the master loaded SQLAlchemy"
    assert any("sqlalchemy" in line for line in lines[started:]), "the workers never opened the store"

    checked = subprocess.run([*CASTORE, "--root", str(root), "check"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    migrated = subprocess.run([*CASTORE, "--root", str(root), "migrate-schema"], capture_output=True, text=True,
                              check=False)
    assert migrated.returncode == 0, migrated.stderr
    _assert_alembic_sees_head(root / "metadata.sqlite3")


def _assert_alembic_sees_head(database: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from castore.metadata.migrate import alembic_config
    from castore.metadata.models import metadata

    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert context.get_current_revision() == head == SCHEMA_REVISION
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_serve_init_where_the_store_cannot_be_made_says_why(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_bytes(b"not a folder")
    done = subprocess.run([*CASTORE, "--root", str(blocked / "store"), "serve", "--init", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert done.stderr.strip() and "Traceback" not in done.stderr, done.stderr
    assert not (blocked.parent / "store").exists()


def test_a_killed_creators_leftovers_do_not_matter(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    leftover = Path(tempfile.mkdtemp(prefix=".metadata.sqlite3.new-", dir=root))
    (leftover / "metadata.sqlite3").write_bytes(b"half a database")
    assert preflight(root, create=True) is not None
    assert _rows(root / "metadata.sqlite3", "PRAGMA integrity_check") == [("ok",)]
    assert (leftover / "metadata.sqlite3").read_bytes() == b"half a database"  # never read, never used
