"""Alembic: the migrations build the schema the models describe; upgrading is explicit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from alembic import command
from castore.errors import SchemaOutdated, StoreNotFound
from castore.metadata.migrate import SCHEMA_REVISION, alembic_config, alembic_dir, current_revision
from castore.metadata.repo import MetadataRepo
from castore.opening import locate, migrate, open_store

from ..backends import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]


def test_schema_revision_is_the_alembic_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [SCHEMA_REVISION]
    assert alembic_dir() == ROOT / "alembic"


def test_upgrade_from_empty_database_and_no_drift(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.check(config)  # raises when the models and the migrations disagree
    engine = create_engine(url)
    with engine.connect() as c:
        assert current_revision(c) == SCHEMA_REVISION
        assert {"blobs", "paths", "versions", "settings"} <= set(inspect(c).get_table_names())
    command.downgrade(config, "base")
    with engine.connect() as c:
        assert "blobs" not in inspect(c).get_table_names()
    engine.dispose()


def test_opening_never_migrates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE unrelated (x INTEGER)"))
    with pytest.raises(StoreNotFound, match="castore init"):
        MetadataRepo(url)
    command.upgrade(alembic_config(url), "0001")
    with pytest.raises(SchemaOutdated, match=r"revision 0001, .*run: castore migrate-schema"):
        MetadataRepo(url)
    with engine.connect() as c:
        assert current_revision(c) == "0001"  # opening changed nothing
        assert "unrelated" in inspect(c).get_table_names()
    engine.dispose()


def test_migrate_upgrades_an_old_store_and_keeps_its_content(tmp_path: Path) -> None:
    root = tmp_path / "old"
    with open_store(root, create=True) as store:
        store.put("/a", b"kept", 5)
    url = f"sqlite:///{root / 'metadata.sqlite3'}"
    command.downgrade(alembic_config(url), "0001")
    with pytest.raises(SchemaOutdated):
        open_store(root)
    assert migrate(locate(root)) == ("0001", SCHEMA_REVISION)
    assert migrate(locate(root)) == (SCHEMA_REVISION, SCHEMA_REVISION)
    with open_store(root) as store:
        assert store.read_bytes("/a@5") == b"kept"


def test_alembic_command_line_upgrade(tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "-x", f"url=sqlite:///{database}",
         "upgrade", "head"],
        check=True,
        capture_output=True,
    )
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as c:
        assert current_revision(c) == SCHEMA_REVISION
    engine.dispose()


def test_postgresql_upgrade_check_and_downgrade(postgres: PostgresCluster) -> None:
    """The same revisions on PostgreSQL: no drift from the models, paths compared as bytes."""
    url = postgres.empty_database()
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.check(config)
    engine = create_engine(url)
    with engine.connect() as c:
        collations = c.execute(text(
            "SELECT table_name, collation_name FROM information_schema.columns WHERE column_name = 'path'"
        )).all()
        assert sorted(collations) == [("deletions", "C"), ("paths", "C"), ("versions", "C")]
    command.downgrade(config, "base")
    with engine.connect() as c:
        assert "blobs" not in inspect(c).get_table_names()
    engine.dispose()


def _schema(url: str) -> dict[str, object]:
    """Everything about a SQLite database's tables that a migration decides."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            found = inspect(c)
            rowid = {name: "WITHOUT ROWID" in (sql or "").upper()
                     for name, sql in c.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))}
            triggers = sorted(c.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all())
            return {
                "triggers": [tuple(row) for row in triggers],
                **{table: (
                    [(col["name"], str(col["type"]), col["nullable"], col["default"], col["primary_key"])
                     for col in found.get_columns(table)],
                    found.get_pk_constraint(table)["constrained_columns"],
                    sorted((fk["referred_table"], tuple(fk["constrained_columns"]), tuple(fk["referred_columns"]))
                           for fk in found.get_foreign_keys(table)),
                    sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(table)),
                    sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(table)),
                    rowid[table],
                )
                for table in found.get_table_names()},
            }
    finally:
        engine.dispose()


def test_a_new_sqlite_store_made_without_alembic_has_the_migrated_schema(tmp_path: Path) -> None:
    """``upgrade_schema`` makes a new SQLite database straight from the models (fast start-up):
    the result must be what running every revision makes."""
    from castore.metadata.migrate import upgrade_schema

    migrated = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    command.upgrade(alembic_config(migrated), "head")
    direct = f"sqlite:///{tmp_path / 'direct.sqlite3'}"
    engine = create_engine(direct)
    try:
        assert upgrade_schema(engine) is None
        with engine.connect() as c:
            assert current_revision(c) == SCHEMA_REVISION
    finally:
        engine.dispose()
    assert _schema(direct) == _schema(migrated)
    command.check(alembic_config(direct))  # and Alembic sees no drift from the models


def _blob_key_references(url: str) -> dict[str, tuple[list[str], list[str]]]:
    """For ``paths`` and ``versions``: the tables their foreign keys name, and their indexes."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            found = inspect(c)
            return {table: (sorted(fk["referred_table"] for fk in found.get_foreign_keys(table)),
                            sorted(str(i["name"]) for i in found.get_indexes(table)))
                    for table in ("paths", "versions")}
    finally:
        engine.dispose()


BEFORE_0011 = {"paths": (["blobs"], ["ix_paths_blob_key"]),
               "versions": (["blobs", "paths"], ["ix_versions_blob_key"])}
SINCE_0011 = {"paths": ([], []), "versions": (["blobs", "paths"], ["ix_versions_blob_key"])}


def _filled(store_at: Path | None = None, *, metadata: str | None = None, blobs: str | None = None) -> None:
    with open_store(store_at, metadata=metadata, blobs=blobs, create=True) as store:
        store.put("/a", b"first", 5)
        store.put("/a", b"second" * 50_000, 6)  # a blob file
        store.put("/b", b"first", 7)


def _still_there(store_at: Path | None = None, *, metadata: str | None = None, blobs: str | None = None) -> None:
    with open_store(store_at, metadata=metadata, blobs=blobs) as store:
        assert store.read_bytes("/a@5") == b"first" and store.read_bytes("/a") == b"second" * 50_000
        assert store.read_bytes("/b") == b"first"
        assert store.check() == []


def test_0011_leaves_the_blob_references_to_versions_on_sqlite(tmp_path: Path) -> None:
    """0011 drops paths.blob_key's foreign key (edited in SQLite's schema, no copy of the
    table) and its index, keeps every row, and a blob that a version names still cannot go."""
    import sqlite3

    root = tmp_path / "store"
    _filled(root)
    url = f"sqlite:///{root / 'metadata.sqlite3'}"
    assert _blob_key_references(url) == SINCE_0011  # a new store
    command.downgrade(alembic_config(url), "0010")
    assert _blob_key_references(url) == BEFORE_0011
    assert migrate(locate(root)) == ("0010", SCHEMA_REVISION)
    assert _blob_key_references(url) == SINCE_0011
    _still_there(root)
    with sqlite3.connect(root / "metadata.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # the dropped index's pages were given back, not left for later writes to take one by one
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,) and db.execute("PRAGMA freelist_count").fetchone() == (0,)
        db.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("DELETE FROM blobs WHERE key = (SELECT blob_key FROM paths WHERE path = '/b')")


def test_0011_refuses_a_paths_table_it_does_not_know_and_changes_nothing(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "store"
    _filled(root)
    url = f"sqlite:///{root / 'metadata.sqlite3'}"
    command.downgrade(alembic_config(url), "0010")
    with sqlite3.connect(root / "metadata.sqlite3") as db:  # someone's own foreign key, spelt otherwise
        (definition,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'paths'").fetchone()
        (schema_version,) = db.execute("PRAGMA schema_version").fetchone()
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'paths'",
                   (definition.replace("fk_paths_blob_key_blobs", "my_own_key"),))
        db.execute(f"PRAGMA schema_version = {schema_version + 1}")
        db.execute("PRAGMA writable_schema = OFF")
    with pytest.raises(RuntimeError, match="not castore's, nothing changed"):
        migrate(locate(root))
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            assert current_revision(c) == "0010"
    finally:
        engine.dispose()
    assert _blob_key_references(url) == BEFORE_0011


def test_0011_on_postgresql(postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.new_database()
    where = {"metadata": url, "blobs": (tmp_path / "blobs").as_uri()}
    _filled(**where)
    assert _blob_key_references(url) == SINCE_0011
    command.downgrade(alembic_config(url), "0010")
    assert _blob_key_references(url) == BEFORE_0011
    command.upgrade(alembic_config(url), "head")
    assert _blob_key_references(url) == SINCE_0011
    command.check(alembic_config(url))
    _still_there(**where)
