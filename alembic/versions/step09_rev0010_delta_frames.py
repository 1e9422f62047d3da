"""delta frames: blobs.base, the content a delta frame was compressed against; two indexes

``castore compact`` (issue #23) may store a content as a zstd frame compressed against
another stored content (codec ``zdelta``): ``base`` names that reference (NULL for every
other frame), indexed so that gc asks "is this content some delta's reference?" in one
lookup. ``ix_blobs_head`` indexes each content's first chunk digest (the first 16 bytes of
``digests``; ``substr`` works on SQLite's BLOB and PostgreSQL's bytea): compact finds the
contents that begin like the one it settles without a scan.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from castore.metadata.totals import drop_blobs_column

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('blobs', sa.Column('base', sa.String(length=32), nullable=True))
    op.create_index('ix_blobs_base', 'blobs', ['base'], unique=False)
    op.create_index('ix_blobs_head', 'blobs', [sa.text('substr(digests, 1, 16)')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_blobs_head', table_name='blobs')
    op.drop_index('ix_blobs_base', table_name='blobs')
    drop_blobs_column(op, 'base')
