"""whole-store totals: the totals table, kept by triggers inside every write transaction

``usage()``, ``castore du`` and the web page's landing page read the store's totals
(files, versions, logical and retained bytes, live blobs with their sizes, inline
blobs, unreferenced blobs) from ``totals`` instead of counting every row (#22). The
database keeps them: triggers on ``paths``, ``versions`` and ``blobs`` add each
statement's change to a ``totals`` row inside the transaction that makes it, so every
write path (put, batch, bulk insert, delete, retention, gc, repair, import, live
migration, a later ``castore compact``) keeps them right without knowing of them.

* SQLite: one row (``slot`` 0), row-level triggers (SQLite has no others; one writer
  at a time, so the row is never contended).
* PostgreSQL: statement-level triggers with transition tables (one UPDATE per
  statement, also for a bulk insert of a million rows) adding to the row
  ``slot = pg_backend_pid() % 16`` (created on first use): concurrent writers on
  different connections mostly update different rows, instead of all queueing on one
  row lock until each commits. A reader sums the rows.

Upgrading counts the totals of an existing store once (the table scans ``usage()``
did on every call). The triggers are :mod:`castore.metadata.totals`'s (also made for a
new SQLite store by ``castore.metadata.migrate``); changing them needs a new revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from castore.metadata.totals import COLUMNS, install, uninstall

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('totals',
    sa.Column('slot', sa.Integer(), autoincrement=False, nullable=False),
    *(sa.Column(column, sa.BigInteger(), nullable=False) for column in COLUMNS),
    sa.PrimaryKeyConstraint('slot', name=op.f('pk_totals'))
    )
    install(op.get_bind())


def downgrade() -> None:
    uninstall(op.get_bind())
    op.drop_table('totals')
