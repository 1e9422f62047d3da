"""Between store paths and Django files, and sending a stored file as an HTTP response."""

from __future__ import annotations

import mimetypes
import urllib.parse
from typing import Any

from django.core.files import File
from django.core.files.storage import default_storage
from django.http import StreamingHttpResponse
from django.utils.functional import cached_property

from castore.sizes import IO_BUFFER

from .filename import FiletrackerFilename

__all__ = [
    "FileInFiletracker",
    "django_to_filetracker_path",
    "filetracker_to_django_file",
    "make_content_disposition_header",
    "stream_file",
]

STREAM_CHUNK = IO_BUFFER
SHOWABLE_EXTENSIONS = ("pdf", "ps", "txt")
"""Shown in the browser by :func:`stream_file`, others downloaded: OIOIOI's list, case-sensitive as there."""


class FileInFiletracker(File):
    """A file already in the store, for assigning to a FileField without uploading it again.

    Usage: ``instance.file_field = filetracker_to_django_file("/problems/1/a.in")``.
    Nothing is read or checked until something asks for its size.
    """

    def __init__(self, storage: Any, name: str) -> None:
        super().__init__(None, FiletrackerFilename(name))
        self.storage = storage

    @cached_property
    def size(self) -> int:
        return int(self.storage.size(self.name))

    def close(self) -> None:
        pass


def filetracker_to_django_file(filetracker_path: str, storage: Any = None) -> FileInFiletracker:
    """A lazy file for the existing store path ``filetracker_path`` (may end with ``@version``).

    Only for assignment to a FileField: the field then stores this path (its
    ``upload_to`` is not applied). ValueError when the path is outside ``storage``'s
    prefix (default storage by default).
    """
    storage = storage if storage is not None else default_storage
    prefix = storage.prefix.rstrip("/")
    if not filetracker_path.startswith(prefix + "/") or len(filetracker_path) == len(prefix) + 1:
        raise ValueError(f"Path {filetracker_path} is outside of storage prefix {storage.prefix}")
    name = filetracker_path[len(prefix) + 1:]
    storage._make_filetracker_path(name)  # refuse ".." and the like now, not at save time
    return FileInFiletracker(storage, name)


def django_to_filetracker_path(django_file: Any) -> str:
    """The store path of a field file (or of a :class:`FileInFiletracker`), with its version if known.

    ValueError for a file that is not in castore, such as a bare ``ContentFile``.
    """
    storage = getattr(django_file, "storage", None)
    if not storage:
        raise ValueError(f"File of type {type(django_file)!r} is not stored in Filetracker")
    make_path = getattr(storage, "_make_filetracker_path", None)
    if make_path is None:
        raise ValueError(f"File is stored in {storage!r}, not Filetracker")
    name = django_file.name
    return str(make_path(getattr(name, "versioned_name", name)))


def make_content_disposition_header(disposition: str, filename: str) -> bytes:
    """An RFC 6266 ``Content-Disposition`` value: ASCII ``filename=`` plus ``filename*=`` if needed."""
    disposition = disposition.lower()
    if disposition not in ("attachment", "inline"):
        raise ValueError(f"disposition must be 'attachment' or 'inline', not {disposition!r}")
    ascii_name = filename.encode("ascii", "ignore").strip()
    quoted = ascii_name.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    header = b'%s; filename="%s"' % (disposition.encode("ascii"), quoted)
    utf8_name = filename.encode("utf-8", "ignore").strip()
    if utf8_name != ascii_name:
        header += b"; filename*=utf-8''" + urllib.parse.quote(utf8_name, safe="").encode("ascii")
    return header


def stream_file(django_file: Any, name: str | None = None, showable: bool | None = None) -> StreamingHttpResponse:
    """A streaming response with ``django_file``'s content, its size and a download name.

    ``name`` defaults to the file's base name; ``showable`` (shown inline rather than
    downloaded) defaults to what OIOIOI decides: True when the text after the last dot is
    exactly ``pdf``, ``ps`` or ``txt`` (``REPORT.PDF`` is downloaded; so is any name
    without a dot, except ``pdf``, ``ps`` and ``txt`` themselves).
    """
    if name is None:
        name = str(django_file.name).rsplit("/", 1)[-1]
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if showable is None:
        showable = name.rsplit(".", 1)[-1] in SHOWABLE_EXTENSIONS
    response = StreamingHttpResponse(_chunks(django_file), content_type=content_type)
    response["Content-Length"] = str(django_file.size)
    disposition = make_content_disposition_header("inline" if showable else "attachment", name)
    response["Content-Disposition"] = disposition.decode("latin-1")
    return response


def _chunks(django_file: Any) -> Any:
    try:
        django_file.open("rb")
    except (ValueError, AttributeError):
        pass  # already open, or not re-openable: read it from where it is
    try:
        yield from django_file.chunks(STREAM_CHUNK)
    finally:
        django_file.close()
