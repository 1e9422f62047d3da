"""Fixtures of the Django bridge tests: a fresh store per test, and store statistics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from castore.store import Store
from django_bridge.client import get_client, reset_client


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    """Each test starts with a new throw-away store (FILETRACKER_CLIENT_FACTORY is memory_store_factory)."""
    reset_client()
    yield
    reset_client()


def embedded_store(client: Any = None) -> Store:
    """The store behind a client built by memory_store_factory or local_store_factory."""
    client = client if client is not None else get_client()
    store: Store = client.remote_store.store
    return store
