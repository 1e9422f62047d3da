"""initial schema: settings, blobs, paths, versions

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('key', sa.String(length=32), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('stored_size', sa.BigInteger(), nullable=False),
    sa.Column('codec', sa.String(length=8), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.Column('refcount', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_blobs'))
    )
    op.create_table('settings',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_settings'))
    )
    op.create_table('paths',
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('blob_key', sa.String(length=32), nullable=False),
    sa.Column('nversions', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['blob_key'], ['blobs.key'], name=op.f('fk_paths_blob_key_blobs')),
    sa.PrimaryKeyConstraint('path', name=op.f('pk_paths')),
    sqlite_with_rowid=False
    )
    op.create_table('versions',
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('blob_key', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['blob_key'], ['blobs.key'], name=op.f('fk_versions_blob_key_blobs')),
    sa.ForeignKeyConstraint(['path'], ['paths.path'], name=op.f('fk_versions_path_paths')),
    sa.PrimaryKeyConstraint('path', 'version', name=op.f('pk_versions')),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('versions')
    op.drop_table('paths')
    op.drop_table('settings')
    op.drop_table('blobs')
