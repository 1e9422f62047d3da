"""Metadata: which path holds which blob at which version, through SQLAlchemy only."""
