"""Write castore/metadata/schema.sql: a new store's schema as SQLAlchemy creates it.

Run after adding a migration (tests/store/test_creating.py fails until the file is current)::

    .venv/bin/python scripts/make_schema_sql.py

castore.creating makes new SQLite stores from that file with the standard library only.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from castore.creating import SCHEMA_FILE, render_schema
from castore.metadata.migrate import SCHEMA_REVISION


def schema_from_sqlalchemy() -> str:
    """The schema file's text, from a database that castore.metadata.migrate creates with SQLAlchemy."""
    from sqlalchemy import create_engine

    from castore.metadata.migrate import upgrade_schema

    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "metadata.sqlite3"
        engine = create_engine(f"sqlite:///{database}")
        try:
            upgrade_schema(engine)
        finally:
            engine.dispose()
        connection = sqlite3.connect(database)
        try:
            return render_schema(connection, SCHEMA_REVISION)
        finally:
            connection.close()


def main() -> None:
    target = ROOT / "castore" / "metadata" / SCHEMA_FILE
    target.write_text(schema_from_sqlalchemy(), encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)} (schema revision {SCHEMA_REVISION})")


if __name__ == "__main__":
    main()
