"""several servers on one store: blobs.pending_until; path columns compare bytes on PostgreSQL

``blobs.pending_until`` (nullable): a put that uploads a blob's bytes outside its
transaction leases the row until then, and garbage collection skips it meanwhile.

Range scans (``ls``, ``list``) rely on the database ordering paths by their UTF-8
bytes, as :func:`castore.names.child_range` does. SQLite's default collation already
does; PostgreSQL's default follows the server's locale. Nothing changes on SQLite.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-25
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0002'
branch_labels = None
depends_on = None

_PATH_COLUMNS = (('paths', 'path'), ('versions', 'path'), ('deletions', 'path'))


def _set_collation(collation: str | None) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    # versions.path references paths.path: both change in one statement each, with the
    # foreign key checked again only at the end of the transaction.
    op.drop_constraint('fk_versions_path_paths', 'versions', type_='foreignkey')
    for table, column in _PATH_COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=4096, collation=collation),
                        existing_nullable=False)
    op.create_foreign_key('fk_versions_path_paths', 'versions', 'paths', ['path'], ['path'])


def upgrade() -> None:
    with op.batch_alter_table('blobs') as batch:
        batch.add_column(sa.Column('pending_until', sa.BigInteger(), nullable=True))
    _set_collation('C')


def downgrade() -> None:
    _set_collation(None)
    with op.batch_alter_table('blobs') as batch:
        batch.drop_column('pending_until')
