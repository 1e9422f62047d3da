"""Alembic: the migrations build the schema the models describe, and stores upgrade on open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from alembic import command
from castore.metadata.migrate import SCHEMA_REVISION, alembic_config, alembic_dir, current_revision
from castore.metadata.repo import MetadataRepo
from castore.store import Store

ROOT = Path(__file__).resolve().parents[1]


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


def test_opening_an_unmigrated_database_runs_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE unrelated (x INTEGER)"))
    engine.dispose()
    repo = MetadataRepo(url)
    Store.init_metadata(repo)
    assert "seed" in repo.settings()
    repo.close()


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
