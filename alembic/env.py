"""Alembic environment for castore's metadata database.

Used programmatically (``castore.metadata.migrate``, which hands over an open
connection) and from the command line::

    alembic -x url=sqlite:///castore-data/metadata.sqlite3 upgrade head

The URL comes from ``-x url=…``, else ``sqlalchemy.url`` in the config, else the
``CASTORE_METADATA_URL`` environment variable.

The revisions are ``versions/stepNN_revXXXX_<slug>.py``: ``NN`` is the place in the
chain, ``XXXX`` the revision id (which databases store: never renamed).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from castore.metadata.models import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url") or os.environ.get("CASTORE_METADATA_URL")
    if not url:
        raise SystemExit("castore alembic: give the database with -x url=… or CASTORE_METADATA_URL")
    return url


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
