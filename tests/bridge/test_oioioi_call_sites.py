"""OIOIOI's own call sites, run as OIOIOI writes them, with each store and client a site may configure.

``zipfile.ZipFile(field.read_using_cache())`` (``problems/utils.py``),
``is_zipfile(field.read_using_cache())`` (``testrun/controllers.py``, ``testrun/views.py``),
``stream_file`` and ``dumpdata`` with Filetracker 2.3.3's own client, and names passed
through ``os.path.normpath`` as OIOIOI's storage does.
"""

from __future__ import annotations

import io
import json
import os
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import Client as DjangoClient
from django.test import override_settings

from django_bridge.storage import FiletrackerStorage
from django_bridge.utils import stream_file

from ..server_process import castore_server
from .testapp.models import FileTestModel

LARGE = 12 << 20
"""A "large" file: several chunks of castore's 1 MiB, far above what a read may hold in memory."""


def filetracker_client_factory() -> Any:
    """Filetracker 2.3.3's own client, as OIOIOI's ``remote_storage_factory`` builds it."""
    from filetracker.client import Client as FiletrackerClient

    return FiletrackerClient(remote_url=settings.FILETRACKER_URL, cache_dir=settings.FILETRACKER_CACHE_ROOT)


def uncached_client_factory() -> Any:
    """castore's client of the server without a cache: each read is a download."""
    from castore.client import Client

    return Client(local_store=None, remote_url=settings.FILETRACKER_URL)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("oioioi-call-sites") / "store") as url:
        yield url


def _settings_of(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if kind == "memory":
        return {"FILETRACKER_CLIENT_FACTORY": "django_bridge.client.memory_store_factory"}
    if kind == "embedded":
        return {"FILETRACKER_CLIENT_FACTORY": "django_bridge.client.local_store_factory",
                "CASTORE_ROOT": str(tmp_path / "root")}
    factory = {"remote": "django_bridge.client.remote_storage_factory",
               "remote-uncached": f"{__name__}.uncached_client_factory",
               "filetracker": f"{__name__}.filetracker_client_factory"}[kind]
    return {"FILETRACKER_CLIENT_FACTORY": factory, "FILETRACKER_URL": request.getfixturevalue("server_url"),
            "FILETRACKER_CACHE_ROOT": str(tmp_path / "cache")}


CLIENTS = ["memory", "embedded", "remote", "remote-uncached", "filetracker"]


@pytest.fixture(params=CLIENTS)
def client_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store and client: in memory, embedded, castore's remote client (with its cache and
    without), Filetracker 2.3.3's client."""
    with override_settings(**_settings_of(request.param, request, tmp_path)):
        yield request.param


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def saved_field(content: bytes, name: str = "statement.zip") -> Any:
    instance = FileTestModel()
    instance.file_field.save(name, ContentFile(content))
    return FileTestModel.objects.get(pk=instance.pk).file_field


# -- read_using_cache() is seekable ------------------------------------------------------------


@pytest.mark.django_db
def test_read_using_cache_opens_a_zip_as_oioioi_does(client_kind: str) -> None:
    members = {"index.html": b"<p>statement</p>", "img/a.png": os.urandom(3000)}
    field = saved_field(zip_bytes(members))
    with zipfile.ZipFile(field.read_using_cache()) as archive:  # problems/utils.py
        assert {n: archive.read(n) for n in archive.namelist()} == members
    assert zipfile.is_zipfile(field.read_using_cache())  # testrun/controllers.py, testrun/views.py
    assert not zipfile.is_zipfile(saved_field(b"1 2\n", "input.txt").read_using_cache())


@pytest.mark.django_db
@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED],
                         ids=["stored-raw", "stored-compressed"])
def test_a_large_zip_is_not_read_into_memory(client_kind: str, compression: int) -> None:
    """12 MiB: random data deflated (castore keeps it raw), or repeated text not deflated
    (castore compresses it): either way the reading holds a bounded part in memory."""
    if compression == zipfile.ZIP_DEFLATED:
        members = {"big.bin": os.urandom(LARGE), "last.txt": b"the end"}
    else:
        members = {"big.txt": b"0123456789abcdef\n" * (LARGE // 17), "last.txt": b"the end"}
    field = saved_field(zip_bytes(members, compression))
    tracemalloc.start()
    try:
        with field.read_using_cache() as opened, zipfile.ZipFile(opened) as archive:
            assert archive.read("last.txt") == b"the end"
            big = next(iter(members))
            assert archive.getinfo(big).file_size == len(members[big])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < LARGE // 3, f"reading the zip allocated {peak} bytes at its peak"


@pytest.mark.django_db
def test_read_using_cache_reads_and_seeks_like_a_file(client_kind: str) -> None:
    content = os.urandom(3 << 20) + b"tail"
    field = saved_field(content, "data.bin")
    with field.read_using_cache() as f:
        assert f.seekable()
        f.seek(-4, os.SEEK_END)
        assert f.read() == b"tail"
        f.seek((1 << 20) - 10)
        assert f.read(20) == content[(1 << 20) - 10:(1 << 20) + 10] and f.tell() == (1 << 20) + 10
        f.seek(5)
        assert f.read(7) == content[5:12]
        f.seek(0)
        assert b"".join(f.chunks()) == content
        assert f.size == len(content)


# -- Django's file protocol, whatever the client -----------------------------------------------


@pytest.mark.django_db
def test_stream_file_and_dumpdata_with_each_client(client_kind: str) -> None:
    field = saved_field(b"whatever\x01\xff", f"report-{client_kind}.bin")  # the server is shared
    response = stream_file(field.storage.open(field.name.versioned_name, "rb"))  # as OIOIOI's views call it
    assert b"".join(response.streaming_content) == b"whatever\x01\xff"
    response.close()
    browser = DjangoClient()
    browser.force_login(User.objects.create_superuser("admin", password="-"))
    viewed = browser.get(field.url)  # the raw_file view
    assert viewed.status_code == 200 and b"".join(viewed.streaming_content) == b"whatever\x01\xff"
    out = io.StringIO()
    call_command("dumpdata", "testapp.filetestmodel", stdout=out)  # FileField.value_to_string
    assert json.loads(out.getvalue())[0]["fields"]["file_field"] == f"data:tests/report-{client_kind}.bin:d2hhdGV2ZXIB/w=="


@pytest.mark.django_db
def test_each_client_s_stream_has_django_s_file_protocol(client_kind: str) -> None:
    storage = FiletrackerStorage()
    name = storage.save(f"protocol/{client_kind}.txt", ContentFile(b"abc" * 40_000))
    with storage.open(name) as f:
        f.read(3)
    if client_kind == "filetracker":  # its _FileLikeFromResponse's download ended: the rest is not read
        download = f.file._inner.iter
        assert next(download, None) is None
    for opening in (storage.open, storage.read_using_cache):
        with opening(name) as f:
            assert f.read(3) == b"abc" and f.read() == b"abc" * 39_999
        assert f.closed
        f.close()  # twice: no error
        with opening(name) as f:
            assert b"".join(f.chunks(chunk_size=1000)) == b"abc" * 40_000


# -- names as OIOIOI normalises them -----------------------------------------------------------


@pytest.mark.parametrize(("given", "stored"), [
    ("d/./e.txt", "d/e.txt"), ("f//g.txt", "f/g.txt"), ("./h.txt", "h.txt"), ("i/j/", "i/j"),
    ("k/.//./l.txt", "k/l.txt"),
])
def test_names_are_normalised_as_oioioi_s_normpath_does(given: str, stored: str) -> None:
    assert os.path.normpath(given) == stored  # OIOIOI's storage: os.path.normcase(os.path.normpath(name))
    storage = FiletrackerStorage(prefix="/p")
    name = storage.save(given, ContentFile(b"x"))
    assert name == stored and name.versioned_name.startswith(stored + "@")
    assert storage.exists(given) and storage.open(given).read() == b"x"
    assert storage._make_filetracker_path(given + "@12") == f"/p/{stored}@12"


# -- the raw_file view: inline or download, as OIOIOI decides --------------------------------


@pytest.mark.parametrize(("name", "disposition"), [
    ("report.pdf", "inline"), ("notes.txt", "inline"), ("a.ps", "inline"), ("archive.zip", "attachment"),
    ("REPORT.PDF", "attachment"), ("Notes.Txt", "attachment"), ("README", "attachment"),
    ("txt", "inline"),  # OIOIOI: name.rsplit(".")[-1] in ["pdf", "ps", "txt"], a name without a dot included
])
def test_stream_file_shows_inline_exactly_what_oioioi_shows_inline(name: str, disposition: str) -> None:
    response = stream_file(ContentFile(b"x", name=f"folder/{name}"))
    assert response["Content-Disposition"] == f'{disposition}; filename="{name}"'
    assert b"".join(response.streaming_content) == b"x"
