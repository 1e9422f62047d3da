"""``FileField``: Django's file field on castore, with versions in the database and contents in fixtures.

* The database column holds the versioned name (``problems/1/a.in@1700000000``); the
  field file's ``name`` compares as the plain name (see
  :class:`~django_bridge.filename.FiletrackerFilename`).
* ``dumpdata`` writes ``data:<name>:<base64 of the content>`` (``none`` for an empty
  field); ``loaddata`` also reads ``data:<name>:raw:<ASCII text>``. Loading stores the
  content under ``<name>`` itself, replacing it, so loading a fixture twice creates no
  ``name_abc1234`` copies, and identical contents are stored once by castore.
* ``max_length`` defaults to 255 (Django: 100): names carry a version suffix.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.core.files.base import ContentFile
from django.db.models.fields import files

from .filename import FiletrackerFilename

__all__ = ["DATA_PREFIX", "EMPTY_VALUE", "FieldFile", "FileField", "decode_inline", "encode_inline"]

DATA_PREFIX = "data:"
EMPTY_VALUE = "none"
RAW_MARKER = "raw:"


def encode_inline(name: str, content: bytes) -> str:
    """A fixture value carrying a file: ``data:<name>:<base64>``."""
    if ":" in name:
        raise ValueError(f"cannot put {name!r} in a fixture: names with ':' cannot be read back")
    return f"{DATA_PREFIX}{name}:{base64.b64encode(content).decode('ascii')}"


def decode_inline(value: str) -> tuple[str, bytes]:
    """``data:<name>:<base64>`` or ``data:<name>:raw:<ASCII>`` → (name, content)."""
    try:
        _, name, payload = value.split(":", 2)
    except ValueError:
        raise ValueError(f"malformed fixture file value {value[:80]!r}: expected data:<name>:<content>") from None
    if not name:
        raise ValueError(f"malformed fixture file value {value[:80]!r}: the name is empty")
    try:
        if payload.startswith(RAW_MARKER):
            return name, payload[len(RAW_MARKER):].encode("ascii")
        return name, base64.b64decode("".join(payload.split()), validate=True)  # whitespace allowed
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"cannot decode the fixture content of {name!r}: {e}") from None


class FieldFile(files.FieldFile):
    """A field file whose ``name`` is a FiletrackerFilename (plain as a string, versioned inside)."""

    def __init__(self, instance: Any, field: Any, name: str | None) -> None:
        super().__init__(instance, field, name)
        if name:
            self.name = FiletrackerFilename(name)

    def read_using_cache(self) -> Any:
        """The content through the client's local cache when the storage has one, else opened."""
        reader = getattr(self.storage, "read_using_cache", None)
        if reader is not None:
            return reader(self.name)
        self.open("rb")
        return self


class _FileDescriptor(files.FileDescriptor):
    """Django's file descriptor, plus the fixture values ``none`` and ``data:...``.

    Loading a fixture puts the raw string in the instance's ``__dict__``; the first
    access (at the latest, the field's ``pre_save``) turns it into a stored file.
    """

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        attname = self.field.attname
        value = instance.__dict__.get(attname)
        if isinstance(value, str) and not isinstance(value, FiletrackerFilename):
            if value == EMPTY_VALUE:
                # "none": an empty field in a fixture (a real file named "none" at the
                # top of the storage reads the same way, as in OIOIOI).
                instance.__dict__[attname] = None
            elif value.startswith(DATA_PREFIX):
                # "data:<name>:<content>": store the content under <name> exactly
                # (no upload_to, no suffix) and keep the versioned name it got.
                name, content = decode_inline(value)
                storage = self.field.storage
                replace = getattr(storage, "save_replacing", None)
                if replace is not None:
                    instance.__dict__[attname] = replace(name, ContentFile(content))
                else:
                    instance.__dict__[attname] = storage.save(name, ContentFile(content))
            # any other string is a name from the database: Django wraps it below
        return super().__get__(instance, cls)


class FileField(files.FileField):
    """A FileField for castore storages: versioned names in the database, contents in fixtures."""

    attr_class = FieldFile
    descriptor_class = _FileDescriptor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 255)
        super().__init__(*args, **kwargs)

    def get_prep_value(self, value: Any) -> Any:
        name = getattr(value, "name", value)
        if isinstance(name, FiletrackerFilename):
            return name.versioned_name
        return super().get_prep_value(value)

    def value_to_string(self, obj: Any) -> str:
        value = self.value_from_object(obj)
        if not value:
            return EMPTY_VALUE
        with value.storage.open(value.name.versioned_name if isinstance(value.name, FiletrackerFilename)
                                else value.name, "rb") as f:
            content = f.read()
        return encode_inline(str(value.name), content)
