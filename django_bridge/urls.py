"""URLs of the bridge: ``include("django_bridge.urls")`` gives ``file/<name>/`` (``raw_file``)."""

from __future__ import annotations

from django.urls import path

from .views import raw_file_view

urlpatterns = [
    path("file/<path:filename>/", raw_file_view, name="raw_file"),
]
