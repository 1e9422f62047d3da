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

from castore.metadata.totals import install, uninstall

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('blobs', sa.Column('frame', sa.Integer(), nullable=False, server_default=sa.text('0')))
    op.create_index('ix_blobs_created_key', 'blobs', ['created', 'key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_blobs_created_key', table_name='blobs')
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_column('blobs', 'frame')
        return
    # SQLite: batch mode copies blobs into a new table and renames it, which the totals'
    # triggers (0007), naming blobs, would refuse; they are dropped and made again around it.
    uninstall(bind)
    with op.batch_alter_table('blobs') as batch:
        batch.drop_column('frame')
    install(bind)
