"""The Django app: installs the signal that resets the cached client when settings change,
and a system check (``manage.py check``) that refuses the test-only memory store."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


class CastoreBridgeConfig(AppConfig):
    """``django_bridge``: castore's storage, file field, fixtures and client for Django."""

    name = "django_bridge"
    verbose_name = "castore file store"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import client  # noqa: F401 - connects the setting_changed receiver

        checks.register(check_client_factory)


def check_client_factory(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    """``django_bridge.E001``: the memory store (files lost when the process ends) outside a test run."""
    from django.conf import settings

    from .client import memory_store_factory, running_tests

    factory = getattr(settings, "FILETRACKER_CLIENT_FACTORY", None)
    if factory not in ("django_bridge.client.memory_store_factory", memory_store_factory) or running_tests():
        return []
    return [checks.Error(
        "FILETRACKER_CLIENT_FACTORY is memory_store_factory: every stored file is lost when the process ends.",
        hint="Use django_bridge.client.local_store_factory (embedded store at CASTORE_ROOT) or "
             "remote_storage_factory (FILETRACKER_URL); memory_store_factory is for tests only.",
        id="django_bridge.E001",
    )]
