"""``manage.py collectgarbage --dry-run`` names the files it would delete, without -v 2 (issue #21)."""

from __future__ import annotations

import io
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from .conftest import embedded_store
from .testapp.models import FileTestModel

pytestmark = pytest.mark.django_db


def test_dry_run_names_every_file_it_would_delete_and_deletes_none() -> None:
    FileTestModel.objects.create(file_field=ContentFile(b"referenced", name="kept.txt"))
    store = embedded_store()
    old = int(time.time() - 40 * 86400)
    for name in ("old-1.txt", "old-2.txt"):
        default_storage.save(f"tests/{name}", ContentFile(b"orphan"))
        store.delete(f"/tests/{name}")
        store.put(f"/tests/{name}", b"orphan", version=old)
    out = io.StringIO()
    call_command("collectgarbage", "--dry-run", "--days", "30", stdout=out)
    assert out.getvalue().splitlines() == [
        "Would delete 2 file(s).", f"  /tests/old-1.txt@{old}", f"  /tests/old-2.txt@{old}"]
    assert default_storage.exists("tests/old-1.txt") and default_storage.exists("tests/old-2.txt")
    quiet = io.StringIO()
    call_command("collectgarbage", "--dry-run", "--days", "30", "-v", "0", stdout=quiet)
    assert quiet.getvalue() == ""
