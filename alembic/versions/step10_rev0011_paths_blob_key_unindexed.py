"""paths.blob_key without its foreign key and index: versions holds every reference

A path's current content is named twice: by ``paths.blob_key`` and by the ``versions``
row of its current version (``castore check`` reports a path where the two differ).
``blobs.refcount`` counts ``versions`` rows, and ``versions.blob_key``'s foreign key and
index (revision 0008) already keep a named blob from being deleted. The second foreign
key, on ``paths.blob_key``, needed an index of its own, whose entries lie wherever a
content's key sorts: at 10 M paths every imported link wrote one more random leaf for
it (an import of 100 k links into copies of a 10 M-path store, three runs each:
4,281-6,001 paths/s with it, 5,711-7,749 without). The freed pages are given back after
the upgrade (``castore.metadata.migrate.upgrade_schema``).

SQLite cannot drop a constraint with ALTER TABLE, and copying a table of millions of rows
to drop one would take minutes and twice its space. Removing a foreign key changes
nothing stored, so the table's definition is edited in place, as SQLite documents for
exactly this change ("Making Other Kinds Of Table Schema Changes": ``writable_schema``,
then a new ``schema_version``), inside the migration's transaction; anything unexpected in
the definition stops the migration before a byte is written.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""
from __future__ import annotations

import re

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_FOREIGN_KEY = 'CONSTRAINT fk_paths_blob_key_blobs FOREIGN KEY(blob_key) REFERENCES blobs ("key")'
_IN_DEFINITION = re.compile(
    r',\s*CONSTRAINT\s+"?fk_paths_blob_key_blobs"?\s+FOREIGN\s+KEY\s*\(\s*"?blob_key"?\s*\)'
    r'\s*REFERENCES\s+"?blobs"?\s*\(\s*"?key"?\s*\)', re.IGNORECASE)
_PRIMARY_KEY = re.compile(r'CONSTRAINT\s+"?pk_paths"?\s+PRIMARY\s+KEY\s*\(\s*"?path"?\s*\)', re.IGNORECASE)


def _paths_definition() -> str:
    bind = op.get_bind()
    (definition,) = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'paths'").one()
    return str(definition)


def _set_paths_definition(definition: str) -> None:
    """Make ``definition`` the SQLite definition of ``paths``, as SQLite documents for a change
    that leaves what is stored as it is."""
    bind = op.get_bind()
    (schema_version,) = bind.exec_driver_sql("PRAGMA schema_version").one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'paths'", (definition,))
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(schema_version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    # the new definition is parsed now (a malformed one fails here, and the transaction with it);
    # not PRAGMA integrity_check, which reads the whole database: minutes at 10 M paths
    bind.exec_driver_sql("SELECT path, version, blob_key, nversions FROM paths LIMIT 1").all()


def _without_foreign_key(definition: str) -> str:
    changed, found = _IN_DEFINITION.subn("", definition)
    if found != 1:
        raise RuntimeError(f"revision 0011: paths' definition is not castore's, nothing changed: {definition!r}")
    return changed


def _with_foreign_key(definition: str) -> str:
    changed, found = _PRIMARY_KEY.subn(lambda m: f"{m.group(0)}, \n\t{_FOREIGN_KEY}", definition)
    if found != 1 or _IN_DEFINITION.search(definition):
        raise RuntimeError(f"revision 0011 (down): paths' definition is not castore's, nothing changed: {definition!r}")
    return changed


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        definition = _without_foreign_key(_paths_definition())  # checked before anything changes
        op.drop_index('ix_paths_blob_key', table_name='paths')
        _set_paths_definition(definition)
    else:
        op.drop_index('ix_paths_blob_key', table_name='paths')
        op.drop_constraint('fk_paths_blob_key_blobs', 'paths', type_='foreignkey')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        _set_paths_definition(_with_foreign_key(_paths_definition()))
        broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check(paths)").all()
        if broken:
            raise RuntimeError(f"revision 0011 (down): {len(broken)} paths name no blob, e.g. {broken[:3]}")
    else:
        op.create_foreign_key('fk_paths_blob_key_blobs', 'paths', 'blobs', ['blob_key'], ['key'])
    op.create_index('ix_paths_blob_key', 'paths', ['blob_key'], unique=False)
