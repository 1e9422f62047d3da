"""The Django app: installs the signal that resets the cached client when settings change."""

from __future__ import annotations

from django.apps import AppConfig


class CastoreBridgeConfig(AppConfig):
    """``django_bridge``: castore's storage, file field, fixtures and client for Django."""

    name = "django_bridge"
    verbose_name = "castore file store"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import client  # noqa: F401 - connects the setting_changed receiver
