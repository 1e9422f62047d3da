"""recompressed frames: blobs.frame, which frame of a content the blob backend holds

``castore compact`` (issue #23) writes a content's recompressed frame under a new backend
name (``<key>.<frame>``) and switches the row to it in one transaction; 0, the default, is
the frame a put wrote, under the key itself. Nothing else changes.

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


def downgrade() -> None:
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
