"""A put onto a folder, or below a file, over HTTP and through every client (issue #21).

The store refuses it (``tests/store/test_folder_names.py``); here: the server answers
409 with a one-line ``X-Exception`` for a PUT and for a ``PUT /batch/``, castore's
client raises ``FiletrackerError`` with status 409 whether its origin is that server or
an embedded store, ``put_files`` gives the refused file its own error and stores the
others, and Filetracker 2.3.3's own client gets an error too (its own server answers 500).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import filetracker.client
import httpx
import pytest

from castore.client import Client
from castore.errors import FiletrackerError
from castore.store import Store
from tests.server_process import castore_server

V = "?last_modified=Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("conflicts") / "store") as url:
        yield url


def test_http_put_onto_a_folder_or_below_a_file_is_409(server: str) -> None:
    with httpx.Client(base_url=server) as http:
        assert http.put("/files/h/1/a.in" + V, content=b"a").status_code == 200
        onto = http.put("/files/h/1" + V, content=b"x")
        assert onto.status_code == 409
        assert onto.headers["X-Exception"] == "cannot store /h/1: it is a folder (files are stored below it)"
        below = http.put("/files/h/1/a.in/x" + V, content=b"x")
        assert below.status_code == 409
        assert below.headers["X-Exception"] == "cannot store /h/1/a.in/x: /h/1/a.in is a file"
        assert http.get("/list/h/").text == "1/a.in\n"
        assert http.get("/files/h/1").status_code == 404


@pytest.mark.parametrize("origin", ["server", "embedded"])
def test_castore_client_raises_409_for_either_origin(origin: str, server: str, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"content")
    store = Store.open(tmp_path / "store", create=True) if origin == "embedded" else None
    client = Client(local_store=None, remote_store=store) if store is not None else \
        Client(local_store=None, remote_url=server)
    try:
        client.put_file(f"/c-{origin}/1/a.in@5", str(local))
        for name, why in ((f"/c-{origin}/1@6", "it is a folder"), (f"/c-{origin}/1/a.in/x@6", "is a file")):
            with pytest.raises(FiletrackerError) as refused:
                client.put_file(name, str(local))
            assert refused.value.status == 409 and why in str(refused.value)
            assert str(refused.value).startswith("HTTP/409: cannot store ")
        results = client.put_files([(f"/c-{origin}/2/ok@7", str(local)), (f"/c-{origin}/1@7", str(local)),
                                    (f"/c-{origin}/2/ok2@7", str(local))])
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, FiletrackerError) and results[1].error.status == 409
        assert sorted(client.list_remote_files(subpath=f"/c-{origin}")) == ["1/a.in", "2/ok", "2/ok2"]
    finally:
        client.close()
        if store is not None:
            store.close()


def test_filetracker_client_gets_an_error(server: str, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"content")
    client = filetracker.client.Client(local_store=None, remote_url=server)
    client.put_file("/ft/1/a.in@5", str(local))
    with pytest.raises(filetracker.client.FiletrackerError, match="409"):
        client.put_file("/ft/1@6", str(local))
    assert client.list_remote_files(subpath="/ft") == ["1/a.in"]
