"""A Django ``Storage`` on castore: files are store paths below a prefix.

A storage name ``problems/1/a.in`` is the store path ``<prefix>/problems/1/a.in``. Saving
returns a :class:`~django_bridge.filename.FiletrackerFilename` that remembers the version
stored, which :class:`~django_bridge.fields.FileField` writes to the database.

Names are normalised as OIOIOI's ``os.path.normpath`` does for ``.`` and empty segments
(``d/./e.txt`` is ``d/e.txt``). Differences from OIOIOI's ``FiletrackerStorage``, all in
the direction of safety: ``exists`` lets errors other than "not found" through (a server
that is down must not look like a free name, which would overwrite a file); ``..`` and
absolute names raise :class:`UnsafeName` (both a ``SuspiciousFileOperation`` and a
``ValueError``) before the store is asked anything, where normpath would collapse
``a/../b``; ``delete`` of a missing file is a no-op, as in Django's own storages;
``listdir`` works. What ``open`` returns closes with every client, and what
``read_using_cache`` returns can seek (:mod:`django_bridge.streams`).
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import Storage
from django.urls import reverse
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from django.utils.functional import cached_property

from castore.names import is_valid_path

from .client import get_client
from .filename import FiletrackerFilename, split_versioned
from .streams import closable, known_size, seekable

__all__ = ["FiletrackerStorage", "StoredFile", "UnsafeName", "is_missing"]

VERSION_SUFFIX_MAX = len("@9999999999")
"""Room kept in a field's ``max_length`` for the ``@version`` the database column stores."""


class UnsafeName(SuspiciousFileOperation, ValueError):
    """A name that would leave the storage's prefix: absolute, or with ``..``."""


def is_missing(error: BaseException) -> bool:
    """Whether a client error means "no such file" (castore's, or Filetracker's clients)."""
    if isinstance(error, (FileNotFoundError, KeyError)):
        return True
    text = str(error)
    return type(error).__name__ == "FiletrackerError" and ("404" in text or "not available" in text)


@deconstructible(path="django_bridge.storage.FiletrackerStorage")
class FiletrackerStorage(Storage):
    """Files in castore below ``prefix`` (must start with ``/``).

    ``client``: a castore (or Filetracker) client; by default the one
    :func:`~django_bridge.client.get_client` builds from the settings, looked up at each
    use so that ``override_settings`` takes effect. ``url_view``: the URL name
    :meth:`url` reverses with ``filename=<versioned name>`` (``raw_file``, see
    ``django_bridge.urls``).
    """

    def __init__(self, prefix: str = "/", client: Any = None, url_view: str = "raw_file") -> None:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"FiletrackerStorage prefix must start with /, not {prefix!r}")
        self.prefix = prefix
        self._client = client
        self.url_view = url_view

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else get_client()

    # -- names ---------------------------------------------------------------------------

    def normalised_name(self, name: str) -> str:
        """``name`` as OIOIOI's ``os.path.normpath`` leaves it: ``.`` and empty segments dropped.

        ``d/./e.txt`` is ``d/e.txt``, ``f//g.txt`` is ``f/g.txt``, ``\\`` is ``/``; a version
        (``@17``) is kept. Raises :class:`UnsafeName` for an absolute name, one with ``..``
        (normpath would collapse ``a/../b``; castore refuses it), and one that is not a
        valid store path (NUL, nothing left, ``@`` in a folder's name, ...).
        """
        if isinstance(name, FiletrackerFilename):
            name = name.versioned_name
        name = str(name).replace("\\", "/")
        plain, version = split_versioned(name)
        if plain.startswith("/"):
            raise UnsafeName(f"{type(self).__name__} does not support absolute paths: {name!r}")
        parts = [part for part in plain.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise UnsafeName(f"Detected path traversal attempt in {name!r}")
        plain = "/".join(parts)
        if not plain or not is_valid_path("/" + plain):
            raise UnsafeName(f"{name!r} is not a valid file name for castore")
        return plain if version is None else f"{plain}@{version}"

    def _make_filetracker_path(self, name: str) -> str:
        """The store path (with ``@version`` if ``name`` has one) of a storage name (see :meth:`normalised_name`)."""
        path = self.prefix.rstrip("/") + "/" + self.normalised_name(name)
        if not is_valid_path(split_versioned(path)[0]):
            raise UnsafeName(f"{name!r} is not a valid file name for castore below {self.prefix!r}")
        return path

    def _cut_prefix(self, path: str) -> str:
        head = self.prefix.rstrip("/") + "/"
        if not path.startswith(head):
            raise ValueError(f"{path} is outside of storage prefix {self.prefix}")
        return path[len(head):]

    # -- saving ----------------------------------------------------------------------------

    def save(self, name: str | None, content: Any, max_length: int | None = None) -> FiletrackerFilename:
        """Save ``content``; return the name stored, with its version (Django's rules otherwise).

        A name already taken gets Django's random suffix; a file that is already in the
        store (see :func:`~django_bridge.utils.filetracker_to_django_file`) is not
        uploaded again, and its own name is returned.
        """
        from .utils import FileInFiletracker

        if isinstance(content, FileInFiletracker):
            # Already stored: name it relative to this storage's prefix, upload nothing.
            name = content.name.versioned_name if isinstance(content.name, FiletrackerFilename) else content.name
            full = content.storage._make_filetracker_path(name)
            return FiletrackerFilename(self._cut_prefix(full))
        if name is None:
            name = content.name
        if not hasattr(content, "chunks"):
            content = File(content, name)
        assert name is not None
        self._make_filetracker_path(name)
        # "d/./e.txt" is saved (and named) as "d/e.txt", as in OIOIOI; a FiletrackerFilename by its
        # plain name, as Django's get_available_name (str(name)) treats it in OIOIOI
        name = self.normalised_name(str(name))
        room = None if max_length is None else max_length - VERSION_SUFFIX_MAX
        if room is not None and room < 1:
            raise SuspiciousFileOperation(f"max_length {max_length} leaves no room for a name and its version")
        name = self.get_available_name(name, max_length=room)
        return self._save(name, content)

    def _save(self, name: str, content: Any) -> FiletrackerFilename:
        return self._upload(self._make_filetracker_path(name), content)

    def _upload(self, store_name: str, content: Any) -> FiletrackerFilename:
        """Put ``content`` at ``store_name`` (a store path, maybe ``@version``); the name stored."""
        with _local_file(content) as filename:
            stored = self.client.put_file(store_name, filename, to_local_store=False)
        return FiletrackerFilename(self._cut_prefix(stored))

    def save_replacing(self, name: str, content: Any) -> FiletrackerFilename:
        """Save ``content`` under exactly ``name``, replacing what is there (fixture loading).

        Falls back to :meth:`save` (a suffixed name) only when the store keeps a newer
        version than now, which an older upload must not replace.
        """
        path = self._make_filetracker_path(name)
        if split_versioned(name)[1] is not None:
            raise ValueError(f"give save_replacing an unversioned name, not {name!r}")
        version = int(time.time())
        stored = self._upload(f"{path}@{version}", content)
        if stored.version != version:
            return self.save(name, content)
        return stored

    # -- reading ---------------------------------------------------------------------------

    def _open(self, name: str, mode: str = "rb") -> File:
        """A read-only :class:`StoredFile` (it closes whatever the client's stream is)."""
        if any(flag in mode for flag in "wa+x"):
            raise ValueError(f"{type(self).__name__}.open does not support writing. Use save().")
        path = self._make_filetracker_path(name)
        stream, versioned = self.client.get_stream(path)
        return StoredFile(closable(stream), FiletrackerFilename(name), self, _one_version(path, versioned))

    def read_using_cache(self, name: str) -> File:
        """Open ``name`` through the client's local cache (downloaded there first), seekable.

        Seekable whatever the client (OIOIOI opens statements with
        ``zipfile.ZipFile(field.read_using_cache())``), and never read into memory whole:
        see :func:`django_bridge.streams.seekable`.
        """
        path = self._make_filetracker_path(name)
        stream, versioned = self.client.get_stream(path, serve_from_cache=True)
        readable, size = seekable(stream, getattr(settings, "FILE_UPLOAD_TEMP_DIR", None))
        return StoredFile(readable, FiletrackerFilename(name), self, _one_version(path, versioned), size=size)

    def delete(self, name: str) -> None:
        """Delete ``name``; with a version, only if the store has nothing newer. Missing: no-op."""
        path = self._make_filetracker_path(name)
        try:
            self.client.delete_file(path)
        except Exception as e:
            if not is_missing(e):
                raise

    def exists(self, name: str) -> bool:
        path = self._make_filetracker_path(name)
        wanted = split_versioned(path)[1]
        try:
            version = self.client.file_version(split_versioned(path)[0])
        except Exception as e:
            if is_missing(e):
                return False
            raise
        return wanted is None or int(version) == wanted

    def size(self, name: str) -> int:
        return int(self.client.file_size(self._make_filetracker_path(name)))

    def _version_time(self, name: str) -> datetime.datetime:
        version = self.client.file_version(self._make_filetracker_path(name))
        return datetime.datetime.fromtimestamp(int(version), tz=timezone.get_current_timezone())

    def get_modified_time(self, name: str) -> datetime.datetime:
        """When the stored version was made: the version is a Unix time."""
        return self._version_time(name)

    def get_created_time(self, name: str) -> datetime.datetime:
        return self._version_time(name)

    def get_accessed_time(self, name: str) -> datetime.datetime:
        return self._version_time(name)

    def url(self, name: str | None) -> str:
        if name is None:
            raise ValueError("a file without a name has no URL")
        self._make_filetracker_path(name)
        return str(reverse(self.url_view, kwargs={"filename": self.normalised_name(name)}))

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """Folders and files directly below ``path`` (FileNotFoundError if it holds nothing)."""
        folder = self.prefix.rstrip("/")
        if path.strip("/"):
            folder = self._make_filetracker_path(path.strip("/"))
        try:
            below = self.client.list_remote_files(subpath=folder or "/")
        except Exception as e:
            raise FileNotFoundError(f"no folder {path!r} in {self!r}: {e}") from e
        directories = sorted({p.split("/", 1)[0] for p in below if "/" in p})
        files = sorted(p for p in below if "/" not in p)
        return directories, files

    def path(self, name: str) -> str:
        raise NotImplementedError("File is in castore, cannot get its local path")

    def __repr__(self) -> str:
        return f"FiletrackerStorage(prefix={self.prefix!r})"


class StoredFile(File):
    """An open stored file; its size is given, or comes from the stream, or from the store when asked."""

    def __init__(
        self, stream: Any, name: FiletrackerFilename, storage: FiletrackerStorage, store_name: str,
        size: int | None = None,
    ) -> None:
        super().__init__(stream, name)
        self._storage = storage
        self._store_name = store_name
        if size is not None:
            self.size = size

    @cached_property
    def size(self) -> int:
        size = known_size(self.file)
        if size is not None:
            return size
        return int(self._storage.client.file_size(self._store_name))


def _one_version(path: str, versioned: str) -> str:
    """``path`` with the version a client answered, which may carry it twice.

    Filetracker 2.3.3's client answers ``get_stream(..., serve_from_cache=True)`` for a
    versioned name with ``p@v@v``, which its ``file_size`` then refuses.
    """
    plain = split_versioned(path)[0]
    try:
        version = split_versioned(versioned)[1]
    except ValueError:
        return plain
    return plain if version is None else f"{plain}@{version}"


@contextmanager
def _local_file(content: Any) -> Iterator[str]:
    """A local file holding ``content``: its own file when it has one, else a temporary copy."""
    temporary_path = getattr(content, "temporary_file_path", None)
    if temporary_path is not None:
        yield temporary_path()  # a large upload Django already spooled to disk: no copy
        return
    inner = getattr(content, "file", None)
    inner_name = getattr(inner, "name", None)
    if isinstance(inner_name, str) and os.path.isfile(inner_name) and not getattr(inner, "closed", False):
        flush = getattr(inner, "flush", None)
        if flush is not None and getattr(inner, "writable", lambda: False)():
            flush()
        yield inner_name  # File(open(path)): upload that file as it is
        return
    with tempfile.NamedTemporaryFile(prefix="castore-upload-") as spool:
        for chunk in content.chunks():
            spool.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
        spool.flush()
        yield spool.name
