"""``raw_file``: a stored file for superusers, the URL :meth:`FiletrackerStorage.url` points at."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, StreamingHttpResponse

from .filename import FiletrackerFilename
from .storage import UnsafeName
from .utils import stream_file

__all__ = ["raw_file_view"]


def raw_file_view(request: HttpRequest, filename: str) -> StreamingHttpResponse:
    """Stream ``filename`` from the default storage; 403 unless superuser, 404 if missing."""
    if not filename or filename.startswith("/"):
        raise Http404("no such file")
    user: Any = getattr(request, "user", None)
    if user is None or not user.is_superuser:
        raise PermissionDenied
    try:
        if not default_storage.exists(filename):
            raise Http404("no such file")
    except (UnsafeName, ValueError):
        raise Http404("no such file") from None
    return stream_file(default_storage.open(filename, "rb"), name=FiletrackerFilename(filename).rsplit("/", 1)[-1])
