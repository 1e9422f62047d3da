"""Metadata: which path holds which blob at which version, through SQLAlchemy (and, on SQLite,
the driver's own connections for the hot statements: :mod:`castore.metadata.sqlite`)."""
