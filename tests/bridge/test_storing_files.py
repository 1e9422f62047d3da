"""Every example of OIOIOI's "Storing files" page, and OIOIOI's own filetracker tests, on castore."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models.fields.files import FieldFile
from django.db.models.fields.files import FileField as DjangoFileField
from django.utils import timezone

from django_bridge.client import memory_store_factory
from django_bridge.filename import FiletrackerFilename
from django_bridge.storage import FiletrackerStorage
from django_bridge.utils import (
    FileInFiletracker,
    django_to_filetracker_path,
    filetracker_to_django_file,
    make_content_disposition_header,
)

from .conftest import embedded_store
from .testapp.models import FileTestModel, Problem, Test, TestFileModel

pytestmark = pytest.mark.django_db


def column(model: type, pk: int, field: str) -> str:
    """What the database row holds, bypassing the field."""
    value: str = model.objects.filter(pk=pk).values_list(field, flat=True).get()  # type: ignore[attr-defined]
    return value


def test_upload_to_folder_and_reading_back_after_a_fresh_query() -> None:
    m = TestFileModel(file_field=ContentFile(b"eloziom", name="foo.txt"))
    m.save()
    assert m.file_field.name == "some/folder/foo.txt"
    assert re.fullmatch(r"some/folder/foo\.txt@\d+", column(TestFileModel, m.pk, "file_field"))
    again = TestFileModel.objects.get(pk=m.pk)
    assert again.file_field.read() == b"eloziom"
    assert again.file_field.name.versioned_name == column(TestFileModel, m.pk, "file_field")
    assert embedded_store().read_bytes("/some/folder/foo.txt") == b"eloziom"


def test_upload_to_callable_and_django_suffix_for_a_taken_name() -> None:
    problem = Problem.objects.create(name="sum")
    first = Test(problem=problem)
    first.input_file.save("abc0a.in", ContentFile(b"1 2\n"))
    assert first.input_file.name == f"problems/{problem.id}/abc0a.in"
    second = Test(problem=problem)
    second.input_file.save("abc0a.in", ContentFile(b"3 4\n"))  # a re-upload: a new name, not an overwrite
    assert re.fullmatch(rf"problems/{problem.id}/abc0a_[A-Za-z0-9]{{7}}\.in", second.input_file.name)
    assert Test.objects.get(pk=first.pk).input_file.read() == b"1 2\n"
    assert Test.objects.get(pk=second.pk).input_file.read() == b"3 4\n"


def test_store_an_existing_file(tmp_path: Path) -> None:
    local = tmp_path / "passwd"
    local.write_bytes(b"root:x:0:0\n" * 1000)
    m = TestFileModel()
    with open(local, "rb") as f:
        m.file_field = File(f, name="myfile.txt")
        m.save()
    assert TestFileModel.objects.get(pk=m.pk).file_field.read() == local.read_bytes()
    other = TestFileModel()
    with open(local, "rb") as f:
        other.file_field.save("myfile.txt", File(f))
    assert other.file_field.name == "some/folder/myfile_" + other.file_field.name.split("_", 1)[1]
    assert TestFileModel.objects.get(pk=other.pk).file_field.read() == local.read_bytes()
    assert embedded_store().usage().blobs == 1  # same content twice: stored once


def test_store_a_string() -> None:
    m = TestFileModel(file_field=ContentFile("content of file", name="myfile.txt"))
    m.save()
    n = TestFileModel()
    n.file_field.save("myfile2.txt", ContentFile("zażółć"))
    assert TestFileModel.objects.get(pk=m.pk).file_field.read() == b"content of file"
    assert TestFileModel.objects.get(pk=n.pk).file_field.read() == "zażółć".encode()


def test_assign_a_file_already_in_the_store() -> None:
    stored = default_storage.save("path/in/store/myfile.txt", ContentFile(b"already there"))
    before = embedded_store().usage()
    m = TestFileModel()
    m.file_field = filetracker_to_django_file("/path/in/store/myfile.txt")
    m.save()
    assert m.file_field.name == "path/in/store/myfile.txt"  # upload_to is ignored
    assert embedded_store().usage() == before  # nothing uploaded
    again = TestFileModel.objects.get(pk=m.pk)
    assert again.file_field.read() == b"already there"
    assert django_to_filetracker_path(again.file_field) == "/path/in/store/myfile.txt"
    pinned = TestFileModel(file_field=filetracker_to_django_file("/" + stored.versioned_name))
    pinned.save()
    assert column(TestFileModel, pinned.pk, "file_field") == stored.versioned_name


# -- OIOIOI's oioioi/filetracker/tests.py, test by test --------------------------------------


def test_file_field() -> None:
    model = FileTestModel(file_field=ContentFile(b"eloziom", name="foo"))
    model.save()
    model = FileTestModel.objects.get(pk=model.pk)
    assert model.file_field.read() == b"eloziom"
    model.file_field.delete()
    assert not default_storage.exists("tests/foo")


def test_filetracker_to_django_field() -> None:
    storage = default_storage
    assert storage.save("my/path", ContentFile(b"eloziom")) == "my/path"
    model = FileTestModel(file_field=filetracker_to_django_file("/my/path", storage))
    model.save()
    assert model.file_field.name == "my/path"
    model = FileTestModel.objects.get(pk=model.pk)
    assert model.file_field.name == "my/path"
    assert django_to_filetracker_path(model.file_field).split("@")[0] == "/my/path"
    assert model.file_field.read() == b"eloziom"
    storage.delete("my/path")


def test_django_to_filetracker_path() -> None:
    storage = FiletrackerStorage(prefix="/foo", client=memory_store_factory())
    field = DjangoFileField(storage=storage)
    assert django_to_filetracker_path(FieldFile(None, field, "bar")) == "/foo/bar"
    with pytest.raises(ValueError):
        django_to_filetracker_path(ContentFile("whatever", name="gizmo"))
    assert django_to_filetracker_path(filetracker_to_django_file("/foo/bar", storage=storage)) == "/foo/bar"
    with pytest.raises(ValueError):
        filetracker_to_django_file("/foobar/x", storage=storage)
    with pytest.raises(ValueError):
        filetracker_to_django_file("my/path")
    assert isinstance(filetracker_to_django_file("/foo/bar", storage=storage), FileInFiletracker)


def test_file_fixture_loads_binary_content(django_db_blocker: object) -> None:
    from django.core.management import call_command

    call_command("loaddata", "test_file_field", verbosity=0)
    model = FileTestModel.objects.get()
    assert model.file_field.name == "tests/test_file_field.txt"
    assert model.file_field.read() == b"whatever\x01\xff"


def test_storage_times_are_aware_and_recent() -> None:
    default_storage.save("my/time", ContentFile(b"x"))
    now = timezone.now()
    created = default_storage.get_created_time("my/time")
    assert timezone.is_aware(created)
    assert now - datetime.timedelta(seconds=30) < created <= now


def test_content_disposition() -> None:
    header = make_content_disposition_header("inline", "EURO rates.txt")
    assert b"inline" in header and b"EURO rates" in header and b"filename*" not in header
    header = make_content_disposition_header("inline", '"EURO" rates.txt')
    assert b'filename="\\"EURO\\" rates.txt"' in header
    header = make_content_disposition_header("attachment", "€ rates.txt")
    assert header.lower() == b"attachment; filename=\"rates.txt\"; filename*=utf-8''%e2%82%ac%20rates.txt"
    with pytest.raises(ValueError):
        make_content_disposition_header("evil", "x")


def test_filename_keeps_the_version() -> None:
    name = FiletrackerFilename("tests/x.txt@1234")
    assert name == "tests/x.txt" and name.versioned_name == "tests/x.txt@1234" and name.version == 1234
    assert FiletrackerFilename(name).versioned_name == "tests/x.txt@1234"
    assert FiletrackerFilename("a/b").version is None
    import pickle

    assert pickle.loads(pickle.dumps(name)).versioned_name == "tests/x.txt@1234"
    with pytest.raises(ValueError):
        FiletrackerFilename("a/b@x1")


def test_rows_copied_by_reference_share_the_stored_file() -> None:
    problem = Problem.objects.create(name="p")
    original = Test(problem=problem)
    original.input_file.save("0a.in", ContentFile(b"5 6\n"))
    original.save()
    before = embedded_store().usage()
    copy = Test.objects.get(pk=original.pk)
    copy.pk = None  # how OIOIOI copies tests between problem instances
    copy.save()
    assert column(Test, copy.pk, "input_file") == column(Test, original.pk, "input_file")
    assert embedded_store().usage() == before  # no upload
    assert Test.objects.get(pk=copy.pk).input_file.read_using_cache().read() == b"5 6\n"
