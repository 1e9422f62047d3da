"""The bridge keeps the store's rule that a name is a file or a folder, never both (issue #21)."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from castore.errors import FiletrackerError

from .conftest import embedded_store


def test_saving_onto_a_folder_or_below_a_file_raises_and_stores_nothing() -> None:
    default_storage.save("tree/1/a.in", ContentFile(b"a"))
    default_storage.save("tree/2", ContentFile(b"a file"))
    for name, why in (("tree/1", "it is a folder"), ("tree/2/b.in", "/tree/2 is a file")):
        with pytest.raises(FiletrackerError) as refused:
            default_storage.save(name, ContentFile(b"x"))
        assert refused.value.status == 409 and why in str(refused.value)
    assert sorted(info.path for info in embedded_store().list("/tree")) == ["/tree/1/a.in", "/tree/2"]
