"""recompressed frames: blobs.frame, which frame of a content the blob backend holds

``castore compact`` (issue #23) writes a content's recompressed frame under a new backend
name (``<key>.<frame>``) and switches the row to it in one transaction; 0, the default, is
the frame a put wrote, under the key itself. And an index on ``blobs (created, key)``:
compact takes contents oldest first, after a cursor, and without it each batch scanned and
sorted every blob (``tests/metadata/test_compaction_queries.py`` counts the steps).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from castore.metadata.totals import drop_blobs_column

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('blobs', sa.Column('frame', sa.Integer(), nullable=False, server_default=sa.text('0')))
    op.create_index('ix_blobs_created_key', 'blobs', ['created', 'key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_blobs_created_key', table_name='blobs')
    drop_blobs_column(op, 'frame')
