"""A stand-in for OIOIOI\x27s top package (tests/bridge/test_oioioi_migrations.py)."""
