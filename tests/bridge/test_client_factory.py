"""get_client(): built once from FILETRACKER_CLIENT_FACTORY, clear errors, reset by override_settings."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from castore.client import Client
from castore.client.remote import Remote
from django_bridge.client import get_client, local_store_factory, remote_storage_factory

NOT_A_CLIENT = object()


def returns_not_a_client() -> object:
    return NOT_A_CLIENT


def test_client_is_built_once() -> None:
    assert get_client() is get_client()
    assert isinstance(get_client(), Client)


def test_override_settings_resets_the_cached_client(tmp_path: Path) -> None:
    first = get_client()
    with override_settings(FILETRACKER_CLIENT_FACTORY="django_bridge.client.local_store_factory",
                           CASTORE_ROOT=str(tmp_path / "root")):
        inside = get_client()
        assert inside is not first and (tmp_path / "root" / "metadata.sqlite3").exists()
    assert get_client() is not inside


@pytest.mark.parametrize(
    "factory, message",
    [
        (42, "non-callable"),
        ("django_bridge.no_such_module.factory", "cannot be imported"),
        ("tests.bridge.test_client_factory.NOT_A_CLIENT", "non-callable"),
        ("tests.bridge.test_client_factory.returns_not_a_client", "returned non-FiletrackerClient"),
    ],
)
def test_bad_factories_are_improperly_configured(factory: object, message: str) -> None:
    with override_settings(FILETRACKER_CLIENT_FACTORY=factory), pytest.raises(ImproperlyConfigured, match=message):
        get_client()


def test_a_callable_factory_and_filetracker_clients_are_accepted() -> None:
    from filetracker.client.dummy import DummyClient

    with override_settings(FILETRACKER_CLIENT_FACTORY=DummyClient):
        assert isinstance(get_client(), DummyClient)


def test_remote_factory_uses_url_and_cache_root(tmp_path: Path) -> None:
    with override_settings(FILETRACKER_URL="http://127.0.0.1:9999/ft", FILETRACKER_CACHE_ROOT=str(tmp_path)):
        client = remote_storage_factory()
    assert isinstance(client.remote_store, Remote) and client.remote_store.base_url == "http://127.0.0.1:9999/ft"
    assert client.local_store is not None and client.local_store.root == tmp_path
    with override_settings(FILETRACKER_URL=None), pytest.raises(ImproperlyConfigured, match="FILETRACKER_URL"):
        remote_storage_factory()


def test_local_factory_defaults_under_base_dir(settings: object, tmp_path: Path) -> None:
    with override_settings(CASTORE_ROOT=None, BASE_DIR=tmp_path):
        local_store_factory()
    assert (tmp_path / "castore-data" / "metadata.sqlite3").exists()


@pytest.fixture
def fake_sioworkers() -> Iterator[list[object]]:
    """A stand-in ``sio.workers.ft`` module recording set_instance calls."""
    handed: list[object] = []
    modules = {name: types.ModuleType(name) for name in ("sio", "sio.workers", "sio.workers.ft")}
    modules["sio.workers.ft"].set_instance = handed.append  # type: ignore[attr-defined]
    modules["sio"].workers = modules["sio.workers"]  # type: ignore[attr-defined]
    modules["sio.workers"].ft = modules["sio.workers.ft"]  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    yield handed
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def test_client_is_shared_with_sioworkers(fake_sioworkers: list[object]) -> None:
    client = get_client()
    get_client()
    assert fake_sioworkers == [client]  # handed over once, when built


def test_castore_metadata_and_blobs_settings_replace_the_folders_parts(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "meta.sqlite3"
    with override_settings(FILETRACKER_CLIENT_FACTORY="django_bridge.client.local_store_factory",
                           CASTORE_ROOT=str(tmp_path / "root"), CASTORE_METADATA=f"sqlite:///{database}",
                           CASTORE_BLOBS=(tmp_path / "blobs-here").as_uri()):
        client = get_client()
        local = tmp_path / "f.bin"
        local.write_bytes(b"x" * 300_000)  # a blob file, not inline
        client.put_file("/django/f", local)
    assert database.exists() and not (tmp_path / "root" / "metadata.sqlite3").exists()
    assert [p for p in (tmp_path / "blobs-here").rglob("*") if p.is_file() and ".staging" not in p.parts]
