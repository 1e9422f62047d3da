"""The castore client a Django project uses, built once from its settings.

``settings.FILETRACKER_CLIENT_FACTORY`` names the factory (a dotted path or a callable);
:func:`get_client` calls it once per process and hands the result to sioworkers (when
installed) so that in-process judging shares it. Changing the setting (for instance
with ``override_settings`` in tests) forgets the cached client.

Factories:

* :func:`local_store_factory` — an embedded store at ``settings.CASTORE_ROOT`` (or, part by
  part, at ``settings.CASTORE_METADATA`` / ``settings.CASTORE_BLOBS`` URLs); no server
  (the default, for development and tests);
* :func:`remote_storage_factory` — a castore (or Filetracker) server at
  ``settings.FILETRACKER_URL`` (``http://`` or ``https://``, whose certificate is checked
  against ``settings.FILETRACKER_CA_BUNDLE``, else ``$CASTORE_CA_BUNDLE``, else the system's
  CAs) with a local cache at ``settings.FILETRACKER_CACHE_ROOT``;
* :func:`memory_store_factory` — a throw-away store in a temporary folder, for tests
  only: every file is gone when the process ends, so outside a test run it raises
  ``ImproperlyConfigured``. A test run is recognised the way Django marks one:
  ``django.test.utils.setup_test_environment()`` (called by ``manage.py test`` and by
  pytest-django) installs ``django.core.mail.outbox``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from castore.client import Client
from castore.client.transport import BadCaBundle
from castore.opening import open_store

__all__ = [
    "DEFAULT_FACTORY",
    "client_types",
    "get_client",
    "local_store_factory",
    "memory_store_factory",
    "remote_storage_factory",
    "reset_client",
    "running_tests",
]

DEFAULT_FACTORY = "django_bridge.client.local_store_factory"

_lock = threading.Lock()
_client: Any = None


def client_types() -> tuple[type, ...]:
    """Classes a factory may return: castore's client, and Filetracker's where installed."""
    types: list[type] = [Client]
    try:
        from filetracker.client import Client as FiletrackerClient
    except ImportError:
        pass
    else:
        types.append(FiletrackerClient)
    return tuple(types)


def _factory() -> Callable[[], Any]:
    factory: Any = getattr(settings, "FILETRACKER_CLIENT_FACTORY", DEFAULT_FACTORY)
    if isinstance(factory, str):
        try:
            factory = import_string(factory)
        except ImportError as e:
            raise ImproperlyConfigured(f"The FILETRACKER_CLIENT_FACTORY setting cannot be imported: {e}") from e
    if not callable(factory):
        raise ImproperlyConfigured(f"The FILETRACKER_CLIENT_FACTORY setting refers to non-callable: {factory!r}")
    return factory


def get_client() -> Any:
    """The process's client, built by ``settings.FILETRACKER_CLIENT_FACTORY`` on first use."""
    global _client
    with _lock:
        if _client is None:
            client = _factory()()
            if not isinstance(client, client_types()):
                raise ImproperlyConfigured(
                    f"The factory pointed by FILETRACKER_CLIENT_FACTORY returned non-FiletrackerClient: {client!r}"
                )
            _share_with_sioworkers(client)
            _client = client
        return _client


def reset_client() -> None:
    """Forget the cached client; the next :func:`get_client` builds a new one."""
    global _client
    with _lock:
        _client = None


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in ("FILETRACKER_CLIENT_FACTORY", "FILETRACKER_URL", "FILETRACKER_CACHE_ROOT", "FILETRACKER_CA_BUNDLE",
                   "CASTORE_ROOT",
                   "CASTORE_METADATA", "CASTORE_BLOBS"):
        reset_client()


def _share_with_sioworkers(client: Any) -> None:
    """Let sioworkers' in-process judging use the same client, as OIOIOI does."""
    try:
        import sio.workers.ft
    except ImportError:
        return
    sio.workers.ft.set_instance(client)


def running_tests() -> bool:
    """True inside a Django test run (``manage.py test``, pytest-django): it installs ``mail.outbox``."""
    from django.core import mail

    return hasattr(mail, "outbox")


def _required(name: str) -> Any:
    value = getattr(settings, name, None)
    if not value:
        raise ImproperlyConfigured(f"settings.{name} must be set for this FILETRACKER_CLIENT_FACTORY")
    return value


def remote_storage_factory() -> Client:
    """A client of the server at ``FILETRACKER_URL``, caching in ``FILETRACKER_CACHE_ROOT``.

    An ``https://`` server's certificate is always verified: against the CAs in the PEM file
    ``FILETRACKER_CA_BUNDLE`` names, else ``$CASTORE_CA_BUNDLE``, else the system's.
    """
    url = _required("FILETRACKER_URL")
    ca_bundle = getattr(settings, "FILETRACKER_CA_BUNDLE", None) or None
    try:
        return Client(remote_url=url, cache_dir=_required("FILETRACKER_CACHE_ROOT"), ca_bundle=ca_bundle)
    except ValueError as e:  # a URL that is not http[s]://host[:port][/prefix], or an unreadable CA bundle
        setting = "FILETRACKER_CA_BUNDLE" if isinstance(e, BadCaBundle) else "FILETRACKER_URL"
        raise ImproperlyConfigured(f"settings.{setting}: {e}") from None


def local_store_factory() -> Client:
    """A client of an embedded store at ``CASTORE_ROOT`` (default ``<BASE_DIR>/castore-data``).

    ``CASTORE_METADATA`` and ``CASTORE_BLOBS`` (URLs, see :func:`castore.open_store`)
    replace the folder's metadata database and blob folder, e.g. PostgreSQL and a bucket.
    """
    root = getattr(settings, "CASTORE_ROOT", None)
    if not root:
        root = os.path.join(str(getattr(settings, "BASE_DIR", ".")), "castore-data")
    metadata = getattr(settings, "CASTORE_METADATA", None) or None
    blobs = getattr(settings, "CASTORE_BLOBS", None) or None
    return Client(local_store=None, remote_store=open_store(root, metadata=metadata, blobs=blobs, create=True))


def memory_store_factory() -> Client:
    """A client of a new throw-away store: blobs in memory, metadata in a temporary folder.

    Tests only: raises ImproperlyConfigured outside a Django test run (see the module's
    docstring), because a file saved through it is lost when the process ends.
    """
    if not running_tests():
        raise ImproperlyConfigured(
            "FILETRACKER_CLIENT_FACTORY is memory_store_factory, which loses every file when the process "
            "ends; it is for tests only. Use django_bridge.client.local_store_factory (embedded store at "
            "CASTORE_ROOT) or remote_storage_factory (FILETRACKER_URL)."
        )
    folder = tempfile.mkdtemp(prefix="castore-django-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    store = open_store(folder, blobs="memory://", create=True)
    return Client(local_store=None, remote_store=store)
