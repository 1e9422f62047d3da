"""chunk digests: blobs.digests, the per-MiB digests that verified reads check

Revision ID: 0002
Revises: 0003
Create Date: 2026-11-25
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for blobs written before: they get their digests on their first verified
    # read, or from Store.add_missing_digests() (castore check --repair).
    op.add_column('blobs', sa.Column('digests', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('blobs') as batch:
        batch.drop_column('digests')
