"""Uploads through Django's test client, the raw_file view, and the collectgarbage command."""

from __future__ import annotations

import io
import os
import time
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db.migrations.writer import MigrationWriter
from django.test import Client as DjangoClient

from django_bridge.client import get_client
from django_bridge.fields import FileField
from django_bridge.utils import filetracker_to_django_file, stream_file

from .conftest import embedded_store
from .testapp.models import FileTestModel, Problem, Test

pytestmark = pytest.mark.django_db


def test_large_upload_is_stored_once_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = Problem.objects.create(name="p")
    content = os.urandom(3 << 20)  # above FILE_UPLOAD_MAX_MEMORY_SIZE: Django spools it to disk
    uploaded_from: list[str] = []
    client = get_client()
    original = client.put_file

    def recording_put_file(name: str, filename: Any, *args: Any, **kwargs: Any) -> str:
        uploaded_from.append(str(filename))
        return original(name, filename, *args, **kwargs)

    monkeypatch.setattr(client, "put_file", recording_put_file)
    browser = DjangoClient()
    for upload_name in ("first.in", "second.in"):
        response = browser.post("/upload/", {"problem": problem.pk,
                                             "input_file": SimpleUploadedFile(upload_name, content)})
        assert response.status_code == 200, response.content
    names = sorted(str(t.input_file.name) for t in Test.objects.all())
    assert names == [f"problems/{problem.pk}/first.in", f"problems/{problem.pk}/second.in"]
    for test in Test.objects.all():
        assert test.input_file.read() == content
    temporary = settings.FILE_UPLOAD_TEMP_DIR
    assert len(uploaded_from) == 2 and all(p.startswith(temporary) and ".upload" in p for p in uploaded_from)
    usage = embedded_store().usage()
    assert usage.files == 2 and usage.blobs == 1 and usage.stored_bytes < 1.01 * len(content)


def test_raw_file_view_is_for_superusers() -> None:
    name = default_storage.save("tests/test_raw_file_view.txt", ContentFile(b"foo"))
    url = default_storage.url(name)
    browser = DjangoClient()
    assert browser.get(url).status_code == 403
    User.objects.create_user("test_user", password="x")
    browser.login(username="test_user", password="x")
    assert browser.get(url).status_code == 403
    User.objects.create_superuser("test_admin", password="x")
    browser.login(username="test_admin", password="x")
    response = browser.get(url)
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == b"foo"
    assert response["Content-Length"] == "3"
    assert response["Content-Disposition"] == 'inline; filename="test_raw_file_view.txt"'
    assert browser.get("/file/tests/nothing.txt/").status_code == 404
    assert browser.get("/file/tests/../etc/passwd/").status_code == 404


def test_stream_file_of_a_field_file() -> None:
    m = FileTestModel.objects.create(file_field=ContentFile(b"%PDF-1.4 ...", name="statement.pdf"))
    response = stream_file(FileTestModel.objects.get(pk=m.pk).file_field)
    assert response["Content-Type"] == "application/pdf" and response["Content-Length"] == "12"
    assert response["Content-Disposition"].startswith("inline;")
    assert b"".join(response.streaming_content) == b"%PDF-1.4 ..."
    response = stream_file(m.file_field, name="zadanie ź.zip")
    assert "filename*=utf-8''zadanie%20%C5%BA.zip" in response["Content-Disposition"]
    assert response["Content-Disposition"].startswith("attachment;")


def _age(path: str, days: float) -> None:
    """Re-store ``path`` with a version ``days`` old (versions are Unix times)."""
    store = embedded_store()
    content = store.read_bytes(path)
    store.delete(path)
    store.put(path, content, version=int(time.time() - days * 86400))


def test_collectgarbage_deletes_old_unreferenced_files_only() -> None:
    kept = FileTestModel.objects.create(file_field=ContentFile(b"referenced", name="kept.txt"))
    default_storage.save("tests/orphan-old.txt", ContentFile(b"old"))
    default_storage.save("tests/orphan-new.txt", ContentFile(b"new"))
    default_storage.save("sandboxes/compiler.tar.gz", ContentFile(b"not django's"))
    for path in ("/tests/kept.txt", "/tests/orphan-old.txt", "/sandboxes/compiler.tar.gz"):
        _age(path, 40)
    FileTestModel.objects.filter(pk=kept.pk).update(file_field=embedded_store().stat("/tests/kept.txt").name[1:])
    out = io.StringIO()
    call_command("collectgarbage", "--dry-run", "--days", "30", "-v", "2", stdout=out)
    assert "Would delete 1 file(s)." in out.getvalue() and "/tests/orphan-old.txt@" in out.getvalue()
    assert default_storage.exists("tests/orphan-old.txt")
    call_command("collectgarbage", "--days", "30", stdout=io.StringIO())
    assert not default_storage.exists("tests/orphan-old.txt")
    for survivor in ("tests/kept.txt", "tests/orphan-new.txt", "sandboxes/compiler.tar.gz"):
        assert default_storage.exists(survivor), survivor
    out = io.StringIO()
    call_command("collectgarbage", "--days", "30", "--all-folders", stdout=out)
    assert not default_storage.exists("sandboxes/compiler.tar.gz")
    assert default_storage.exists("tests/kept.txt")
    call_command("collectgarbage", stdout=(out := io.StringIO()))
    assert "No files to delete." in out.getvalue()


def test_assigned_store_files_count_as_referenced() -> None:
    default_storage.save("outputs/1.out", ContentFile(b"out"))
    _age("/outputs/1.out", 40)
    FileTestModel.objects.create(file_field=filetracker_to_django_file("/outputs/1.out"))
    call_command("collectgarbage", "--days", "1", "--all-folders", stdout=io.StringIO())
    assert default_storage.exists("outputs/1.out")


def test_field_deconstructs_for_migrations() -> None:
    from .testapp.models import make_test_filename

    field = FileField(upload_to=make_test_filename, null=True)
    _name, path, args, kwargs = field.deconstruct()
    assert path == "django_bridge.fields.FileField"
    assert kwargs == {"upload_to": make_test_filename, "null": True, "max_length": 255}
    rebuilt = FileField(*args, **kwargs)
    assert rebuilt.deconstruct()[1:] == (path, args, kwargs)
    code, _imports = MigrationWriter.serialize(field)
    assert code.startswith("django_bridge.fields.FileField(") and "make_test_filename" in code
    assert FileField().max_length == 255
