"""deletions: paths deleted while moving in from Filetracker (live migration)

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deletions',
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('path', name=op.f('pk_deletions')),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('deletions')
