"""Conditional GET and HEAD (RFC 9110 §13): a resuming client never splices two versions.

Each file is stored twice (an old content, then a new one); the requests then carry
validators of the old content, of the new one, dates and garbage. Checked on a real
``castore serve`` on loopback (the lean ``/files/`` path) and on the Starlette path
(``create_app(lean=False)``), for a small file read whole and a large one streamed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from castore.server.app import create_app
from castore.store import Store

from ..server_process import castore_server

D1000 = "Thu, 01 Jan 1970 00:16:40 GMT"
D2000 = "Thu, 01 Jan 1970 00:33:20 GMT"
D3000 = "Thu, 01 Jan 1970 00:50:00 GMT"

Answer = tuple[int, httpx.Headers, bytes]
Ask = Callable[..., Answer]

FILES = {
    "/small.txt": (b"old small content\n" * 10, b"new small content!\n" * 10),
    "/large.bin": (os.urandom(2 << 20), os.urandom(2 << 20)),
}


Tags = dict[str, tuple[str, str]]
"""``path`` → (ETag of the old content, ETag of the new one), as the server sent them."""


def _fill(http: httpx.Client | TestClient) -> Tags:
    tags = {}
    for path, (old, new) in FILES.items():
        sent = []
        for version, content in ((D1000, old), (D2000, new)):
            assert http.put(f"/files{path}", params={"last_modified": version}, content=content).status_code == 200
            sent.append(http.head(f"/files{path}").headers["etag"])
        assert sent[0] != sent[1]
        tags[path] = (sent[0], sent[1])
    return tags


def _asker(http: httpx.Client | TestClient) -> Ask:
    def ask(method: str, path: str, **headers: str) -> Answer:
        r = http.request(method, f"/files{path}", headers={k.replace("_", "-"): v for k, v in headers.items()})
        return r.status_code, r.headers, r.content

    return ask


@pytest.fixture(scope="module", params=["lean, real server", "starlette"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ask, Tags]]:
    root = tmp_path_factory.mktemp("conditional") / "store"
    if request.param == "starlette":
        with Store.open(root, create=True) as store, TestClient(create_app(store, lean=False)) as client:
            yield _asker(client), _fill(client)
        return
    with castore_server(root) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield _asker(http), _fill(http)


PATHS = sorted(FILES)


def _whole(answer: Answer, path: str) -> None:
    status, headers, body = answer
    assert (status, body) == (200, FILES[path][1]), (status, len(body))
    assert "content-range" not in headers


def _not_modified(answer: Answer, tag: str) -> None:
    status, headers, body = answer
    assert (status, body) == (304, b"")
    assert headers["etag"] == tag and headers["last-modified"] == "Thu, 01 Jan 1970 00:33:20 -0000"


@pytest.mark.parametrize("path", PATHS)
def test_if_range_gives_a_part_only_of_the_same_content(served: tuple[Ask, Tags], path: str) -> None:
    ask, tags = served
    old_tag, new_tag = tags[path]
    new = FILES[path][1]
    status, headers, body = ask("GET", path, range="bytes=10-19", if_range=new_tag)
    assert (status, body, headers["content-range"]) == (206, new[10:20], f"bytes 10-19/{len(new)}")
    for validator in (old_tag, D1000, "garbage", "W/" + new_tag, D2000, D3000, new_tag.strip('"')):
        # an older ETag, an older date, garbage, a weak tag (never a strong match), and dates
        # (a version is not a strong validator: an equal version may replace the content)
        _whole(ask("GET", path, range="bytes=10-19", if_range=validator), path)
        _whole(ask("GET", path, range="bytes=10-19", if_range=validator, accept_encoding="identity"), path)
    assert ask("GET", path, if_range=old_tag)[0] == 200  # If-Range without Range: ignored


@pytest.mark.parametrize("path", PATHS)
def test_if_match(served: tuple[Ask, Tags], path: str) -> None:
    ask, tags = served
    old_tag, new_tag = tags[path]
    for method in ("GET", "HEAD"):
        for validator in (old_tag, "W/" + new_tag, '"other"', new_tag.strip('"')):
            status, headers, _ = ask(method, path, if_match=validator)
            assert status == 412, (method, validator)
            assert method == "HEAD" or "precondition" in headers["x-exception"]
        for validator in (new_tag, "*", f'"other", {new_tag}', f"{old_tag},{new_tag}"):
            assert ask(method, path, if_match=validator)[0] == 200, (method, validator)
    _whole(ask("GET", path, if_match=new_tag), path)


@pytest.mark.parametrize("path", PATHS)
def test_if_unmodified_since(served: tuple[Ask, Tags], path: str) -> None:
    ask, tags = served
    assert ask("GET", path, if_unmodified_since=D1000)[0] == 412
    _whole(ask("GET", path, if_unmodified_since=D2000), path)
    _whole(ask("GET", path, if_unmodified_since="garbage"), path)
    _whole(ask("GET", path, if_unmodified_since=D1000, if_match=tags[path][1]), path)  # If-Match decides


@pytest.mark.parametrize("path", PATHS)
def test_if_none_match(served: tuple[Ask, Tags], path: str) -> None:
    ask, tags = served
    old_tag, new_tag = tags[path]
    for method in ("GET", "HEAD"):
        for validator in (new_tag, "W/" + new_tag, "*", f'"other", {new_tag}', f"{old_tag}, W/{new_tag}"):
            _not_modified(ask(method, path, if_none_match=validator), new_tag)
            # the ETag names the content: the same whatever coding the answer would have
            _not_modified(ask(method, path, if_none_match=validator, accept_encoding="zstd"), new_tag)
    for validator in (old_tag, "W/" + old_tag, '"other"', "garbage"):
        _whole(ask("GET", path, if_none_match=validator), path)
        assert ask("HEAD", path, if_none_match=validator)[0] == 200
    _not_modified(ask("GET", path, if_none_match=new_tag, range="bytes=0-9"), new_tag)


@pytest.mark.parametrize("path", PATHS)
def test_if_modified_since(served: tuple[Ask, Tags], path: str) -> None:
    ask, tags = served
    old_tag, new_tag = tags[path]
    for method in ("GET", "HEAD"):
        _not_modified(ask(method, path, if_modified_since=D2000), new_tag)
        _not_modified(ask(method, path, if_modified_since=D3000), new_tag)
    _whole(ask("GET", path, if_modified_since=D1000), path)
    _whole(ask("GET", path, if_modified_since="garbage"), path)
    # ignored when If-None-Match is present: the ETag is the better validator
    _whole(ask("GET", path, if_modified_since=D3000, if_none_match=old_tag), path)


@pytest.mark.parametrize("path", PATHS)
def test_order_of_evaluation(served: tuple[Ask, Tags], path: str) -> None:
    """RFC 9110 §13.2.2: If-Match (or If-Unmodified-Since), then If-None-Match (or
    If-Modified-Since), then If-Range."""
    ask, tags = served
    old_tag, new_tag = tags[path]
    assert ask("GET", path, if_match=old_tag, if_none_match=new_tag)[0] == 412
    _not_modified(ask("GET", path, if_match=new_tag, if_none_match=new_tag), new_tag)
    assert ask("GET", path, if_unmodified_since=D1000, if_modified_since=D3000)[0] == 412
    _whole(ask("GET", path, if_match=new_tag, if_none_match=old_tag, range="bytes=0-9", if_range=old_tag), path)
    assert ask("GET", "/missing", if_none_match="*")[0] == 404
    assert ask("GET", "/missing", if_match="*")[0] == 404


@pytest.mark.parametrize("path", PATHS)
def test_every_answer_says_it_varies_with_accept_encoding(served: tuple[Ask, Tags], path: str) -> None:
    """One URL answers zstd, gzip or identity by ``Accept-Encoding``: a cache must key on it."""
    ask, tags = served
    for method in ("GET", "HEAD"):
        for encoding in ("zstd", "gzip", "identity"):
            status, headers, _ = ask(method, path, accept_encoding=encoding)
            assert status == 200 and headers["vary"] == "Accept-Encoding", (method, encoding, status)
    status, headers, _ = ask("GET", path, if_none_match=tags[path][1])
    assert status == 304 and headers["vary"] == "Accept-Encoding"
