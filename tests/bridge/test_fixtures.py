"""dumpdata writes file contents into fixtures; loaddata puts them back into the store."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from django_bridge.fields import decode_inline, encode_inline

from .conftest import embedded_store
from .testapp.models import FileTestModel

pytestmark = pytest.mark.django_db

CONTENTS = {
    "text.txt": b"1 2 3\n" * 100,
    "binary.bin": b"whatever\x01\xff" + bytes(range(256)),
    "big.in": os.urandom(5 << 20),
}


def dump() -> list[dict[str, object]]:
    out = io.StringIO()
    call_command("dumpdata", "testapp.filetestmodel", stdout=out)
    data: list[dict[str, object]] = json.loads(out.getvalue())
    return data


def load(tmp_path: Path, fixture: object, name: str = "fixture.json") -> None:
    path = tmp_path / name
    path.write_text(json.dumps(fixture))
    call_command("loaddata", str(path), verbosity=0)


def test_dump_flush_load_gives_identical_bytes(tmp_path: Path) -> None:
    for name, content in CONTENTS.items():
        FileTestModel.objects.create(file_field=ContentFile(content, name=name))
    FileTestModel.objects.create(file_field=None)
    fixture = dump()
    values = [row["fields"]["file_field"] for row in fixture]  # type: ignore[index]
    assert sorted(v.split(":", 2)[1] for v in values if v != "none") == sorted(f"tests/{n}" for n in CONTENTS)
    assert values.count("none") == 1
    call_command("flush", interactive=False, verbosity=0)
    for name in CONTENTS:
        default_storage.delete(f"tests/{name}")  # the store forgets them too
    assert FileTestModel.objects.count() == 0
    load(tmp_path, fixture)
    loaded = {str(m.file_field.name): m for m in FileTestModel.objects.all() if m.file_field}
    for name, content in CONTENTS.items():
        assert loaded[f"tests/{name}"].file_field.read() == content
    assert any(not m.file_field for m in FileTestModel.objects.all())


def test_loading_twice_replaces_instead_of_copying(tmp_path: Path) -> None:
    fixture = [{"pk": 1, "model": "testapp.filetestmodel",
                "fields": {"file_field": encode_inline("tests/twice.txt", b"first")}}]
    load(tmp_path, fixture)
    fixture[0]["fields"]["file_field"] = encode_inline("tests/twice.txt", b"second")  # type: ignore[index]
    load(tmp_path, fixture)
    assert default_storage.listdir("tests") == ([], ["twice.txt"])  # no twice_abc1234.txt
    assert FileTestModel.objects.get(pk=1).file_field.read() == b"second"


def test_raw_form_and_none(tmp_path: Path) -> None:
    load(tmp_path, [
        {"pk": 1, "model": "testapp.filetestmodel", "fields": {"file_field": "data:problems/1/en.txt:raw:en-txt"}},
        {"pk": 2, "model": "testapp.filetestmodel", "fields": {"file_field": "none"}},
    ])
    assert FileTestModel.objects.get(pk=1).file_field.read() == b"en-txt"
    assert not FileTestModel.objects.get(pk=2).file_field
    assert FileTestModel.objects.filter(pk=2).values_list("file_field", flat=True).get() in (None, "")


def test_identical_contents_in_many_rows_are_stored_once(tmp_path: Path) -> None:
    content = os.urandom(300_000)
    load(tmp_path, [
        {"pk": i, "model": "testapp.filetestmodel",
         "fields": {"file_field": encode_inline(f"tests/copy{i}.in", content)}}
        for i in range(1, 21)
    ])
    assert FileTestModel.objects.count() == 20
    usage = embedded_store().usage()
    assert usage.files == 20 and usage.blobs == 1


def test_inline_values_round_trip_and_bad_ones_are_clear() -> None:
    assert decode_inline(encode_inline("a/b.bin", b"\x00\xff")) == ("a/b.bin", b"\x00\xff")
    assert decode_inline("data:a:d2hh\ndGV2ZXIB/w==") == ("a", b"whatever\x01\xff")  # wrapped base64
    for bad in ("data:a", "data::eA==", "data:a:not base64!", "data:a:raw:zażółć"):
        with pytest.raises(ValueError):
            decode_inline(bad)
    with pytest.raises(ValueError):
        encode_inline("a:b", b"x")


def test_a_corrupt_fixture_stores_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        load(tmp_path, [{"pk": 1, "model": "testapp.filetestmodel",
                         "fields": {"file_field": "data:tests/bad.txt:@@@@"}}])
    assert not default_storage.exists("tests/bad.txt")
