"""indexes on paths.blob_key and versions.blob_key, so that gc stays flat as the store grows

Deleting a ``blobs`` row (garbage collection, ``check --repair``) makes the database
check the foreign keys that name it: ``paths.blob_key`` and ``versions.blob_key``.
Without an index each check scans both tables: measured on SQLite with a million paths,
0.11 s per blob freed (``gc`` with 1 % to free took 128 s, 10.7x its time at 100 k
paths; ``benchmarks/scale.py``), 0.8 ms with the indexes. The price is space: on SQLite
(WITHOUT ROWID tables, so each index entry holds the key and the row's primary key) a
synthetic store of a million contest paths grew from 180 to 324 bytes a path.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_paths_blob_key'), 'paths', ['blob_key'], unique=False)
    op.create_index(op.f('ix_versions_blob_key'), 'versions', ['blob_key'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_versions_blob_key'), table_name='versions')
    op.drop_index(op.f('ix_paths_blob_key'), table_name='paths')
