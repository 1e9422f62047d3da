"""Access tokens: off until the first exists, then required by role — with castore's and Filetracker's clients."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import filetracker.client
import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from castore.cli import cli
from castore.client import Client
from castore.client.remote import Remote
from castore.errors import FiletrackerError
from castore.server.auth import TokenAuth, _refuse, _Refused, token_from_header
from castore.server.tokens import (
    TOKEN_PREFIX,
    Role,
    TokenCache,
    create_token,
    digest,
    new_token,
    revoke_token,
)
from castore.store import METADATA_FILE, Store

from ..server_process import castore_server


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


V1 = "?last_modified=Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A real server whose store has a read, a write and an admin token; it rereads them on every request."""
    root = tmp_path_factory.mktemp("tokens") / "store"
    with Store.open(root, create=True) as store:
        tokens = {role: create_token(store.metadata, role, role)[1] for role in ("read", "write", "admin")}
    os.environ["CASTORE_TOKEN_CACHE_SECONDS"] = "0"
    try:
        with castore_server(root) as url:
            yield url, root, tokens
    finally:
        del os.environ["CASTORE_TOKEN_CACHE_SECONDS"]


def test_open_until_the_first_token_and_closed_on_doubt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    monkeypatch.setenv("CASTORE_TOKEN_CACHE_SECONDS", "0")
    with castore_server(root, "--prefix", "/ft") as url, httpx.Client(base_url=url) as http:
        assert http.put("/files/open" + V1, content=b"x").status_code == 200
        assert http.get("/files/open").content == b"x"
        assert http.get("/metrics").status_code == 200
        assert http.delete("/files/open" + V1).status_code == 200
        with Store.open(root) as store:
            _, token = create_token(store.metadata, "read")
        assert http.get("/files/open").status_code == 401
        assert http.get("/version").status_code == 401
        assert http.get("/version", headers=_bearer(token)).status_code == 200
        assert http.get("/health").json() == {"status": "ok"}  # /ft/health
        assert httpx.get(url.replace("/ft", "") + "/health").status_code == 401  # not the open endpoint
        with sqlite3.connect(root / METADATA_FILE) as db:
            db.execute("ALTER TABLE tokens RENAME TO tokens_lost")  # the tokens cannot be read
        refused = http.get("/files/open", headers=_bearer(token))
        assert refused.status_code == 503 and "cannot read the access tokens" in refused.headers["X-Exception"]
        assert http.get("/files/open").status_code == 503
        assert http.get("/health").status_code == 200


def test_roles(server: tuple[str, Path, dict[str, str]]) -> None:
    url, _, tokens = server
    read, write, admin = tokens["read"], tokens["write"], tokens["admin"]
    with httpx.Client(base_url=url) as http:
        assert http.put("/files/r" + V1, content=b"before", headers=_bearer(write)).status_code == 200
        missing = http.get("/files/r")
        assert missing.status_code == 401 and missing.headers["X-Exception"] == "an access token is required"
        assert missing.headers["WWW-Authenticate"].startswith("Basic")
        wrong = http.get("/files/r", headers=_bearer(TOKEN_PREFIX + "guessed"))
        assert wrong.status_code == 401 and wrong.headers["X-Exception"] == "the access token is not valid"
        assert http.get("/files/r", headers=_bearer(read[:-1])).status_code == 401
        assert http.get("/files/r", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert http.get("/files/r", headers={"Authorization": "Digest x"}).status_code == 401
        head = http.head("/files/r")
        assert head.status_code == 401 and head.content == b""
        assert http.put("/files/r" + V1, content=b"sneaky").status_code == 401
        assert http.delete("/files/r" + V1).status_code == 401
        assert http.get("/list/").status_code == 401

        for headers in (_bearer(read), _basic("any", read), _basic(read, "")):
            assert http.get("/files/r", headers=headers).content == b"before"
            assert http.head("/files/r", headers=headers).status_code == 200
            assert "r\n" in http.get("/list/", headers=headers).text
            refused = http.put("/files/r" + V1, content=b"by a reader", headers=headers)
            assert refused.status_code == 403 and refused.headers["X-Exception"] == "a read token may not PUT"
            assert http.delete("/files/r" + V1, headers=headers).status_code == 403
        assert http.get("/files/r", headers=_bearer(read)).content == b"before"

        assert http.put("/files/r" + V1, content=b"by a writer", headers=_basic("x", write)).status_code == 200
        assert http.get("/files/r", headers=_bearer(admin)).content == b"by a writer"
        assert http.delete("/files/r" + V1, headers=_bearer(write)).status_code == 200
        assert http.put("/files/r" + V1, content=b"by the admin", headers=_bearer(admin)).status_code == 200
        assert http.get("/ui/").status_code == 401  # the web page is behind the tokens too
        assert http.get("/ui/", headers=_basic("browser", read)).status_code == 200
        assert http.request("PATCH", "/files/r", headers=_bearer(write)).status_code == 403
        assert http.request("PATCH", "/files/r", headers=_bearer(admin)).status_code == 405


def test_cache_delay_for_new_and_revoked_tokens(store: Store) -> None:
    now = [0.0]
    cache = TokenCache(store.metadata.token_access, seconds=5, clock=lambda: now[0])
    assert not cache.access().closed
    _, token = create_token(store.metadata, "write", "w")
    assert not cache.access().closed  # still open, for at most 5 seconds
    now[0] = 5.0
    assert cache.role_of(token) is Role.WRITE
    revoke_token(store.metadata, "w")
    now[0] = 9.9
    assert cache.role_of(token) is Role.WRITE
    now[0] = 10.0
    assert cache.role_of(token) is None and cache.access().closed  # the last token revoked: still closed


@pytest.mark.backends("sqlite+file")  # reads the SQLite file at store_root
def test_tokens_are_stored_hashed(store: Store, store_root: Path) -> None:
    name, token = create_token(store.metadata, "read")
    assert name.startswith("read-") and token.startswith(TOKEN_PREFIX) and len(token) >= 40
    [row] = store.metadata.tokens()
    assert row.digest == digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token.encode() not in (store_root / METADATA_FILE).read_bytes()
    assert create_token(store.metadata, "read")[1] != token
    with pytest.raises(ValueError, match="exists already"):
        create_token(store.metadata, "admin", name)
    for bad in ("", "a b", "x" * 65, "-x", "é"):
        with pytest.raises(ValueError, match="invalid token name"):
            create_token(store.metadata, "read", bad)
    with pytest.raises(ValueError):
        create_token(store.metadata, "superuser")
    assert len(store.metadata.tokens()) == 2
    assert revoke_token(store.metadata, name) and not revoke_token(store.metadata, name)


def test_remote_takes_the_token_from_the_url_and_never_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASTORE_TOKEN", raising=False)
    remote = Remote("http://any:s3cret@127.0.0.1:9/ft")
    assert remote.base_url == "http://127.0.0.1:9/ft" and "s3cret" not in repr(remote)
    assert remote._auth == _bearer("s3cret")
    assert Remote("http://s3cret@127.0.0.1:9")._auth == _bearer("s3cret")
    assert Remote("http://any:s3cret@127.0.0.1:9", token="explicit")._auth == _bearer("explicit")
    monkeypatch.setenv("CASTORE_TOKEN", "from-env")
    assert Remote("http://127.0.0.1:9")._auth == _bearer("from-env")
    assert Remote("http://u:from-url@127.0.0.1:9")._auth == _bearer("from-url")
    with pytest.raises(ValueError) as error:
        Remote("ftp://any:s3cret@127.0.0.1:9")
    assert "s3cret" not in str(error.value)
    with pytest.raises(ValueError, match="printable"):
        Remote("http://127.0.0.1:9", token="bad\r\nX-Injected: 1")
    with pytest.raises(FiletrackerError) as failed:
        Remote("http://any:s3cret@127.0.0.1:9").stat("/x")  # nothing listens on port 9
    assert "s3cret" not in str(failed.value)


def _with_token(url: str, token: str) -> str:
    return url.replace("http://", f"http://any:{token}@")


def test_castore_client(server: tuple[str, Path, dict[str, str]], tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, tokens = server
    monkeypatch.delenv("CASTORE_TOKEN", raising=False)
    local = tmp_path / "in"
    local.write_bytes(b"castore " * 1000)
    writer = Client(local_store=None, remote_url=url, token=tokens["write"])
    assert writer.put_file("/c/a@10", str(local)) == "/c/a@10"
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 << 20))  # a chunked upload
    writer.put_file("/c/big@1", str(big))
    reader = Client(local_store=None, remote_url=_with_token(url, tokens["read"]))
    out = tmp_path / "out"
    assert reader.get_file("/c/a", str(out)) == "/c/a@10" and out.read_bytes() == local.read_bytes()
    assert reader.file_size("/c/big") == 3 << 20
    assert reader.list_remote_files(None, "/c") == ["a", "big"]
    with pytest.raises(FiletrackerError) as refused:
        reader.put_file("/c/b@1", str(local))
    assert refused.value.status == 403 and "read token may not PUT" in str(refused.value)
    with pytest.raises(FiletrackerError) as refused_big:
        reader.put_file("/c/big2@1", str(big))  # refused before its 3 MiB body is read: still a clean 403
    assert refused_big.value.status == 403
    with pytest.raises(FiletrackerError) as anonymous:
        Client(local_store=None, remote_url=url).file_version("/c/a")
    assert anonymous.value.status == 401
    monkeypatch.setenv("CASTORE_TOKEN", tokens["admin"])
    admin = Client(local_store=None, remote_url=url)
    admin.delete_file("/c/a")
    with pytest.raises(FileNotFoundError):
        admin.file_version("/c/a")


def test_unmodified_filetracker_client(server: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    url, root, tokens = server
    local = tmp_path / "in"
    local.write_bytes(b"filetracker " * 1000)
    writer = filetracker.client.Client(local_store=None, remote_url=_with_token(url, tokens["write"]))
    assert writer.put_file("/ft/a@20", str(local)) == "/ft/a@20"
    reader = filetracker.client.Client(local_store=None, remote_url=_with_token(url, tokens["read"]))
    out = tmp_path / "out"
    reader.get_file("/ft/a", str(out))
    assert out.read_bytes() == local.read_bytes() and reader.file_version("/ft/a") == 20
    assert reader.list_remote_files(None, "/ft") == ["a"]
    with pytest.raises(filetracker.client.FiletrackerError, match="403"):
        reader.put_file("/ft/b@1", str(local))
    with pytest.raises(filetracker.client.FiletrackerError, match="401"):
        filetracker.client.Client(local_store=None, remote_url=url).get_stream("/ft/a")
    with Store.open(root) as store:
        _, spare = create_token(store.metadata, "write", "spare")
        spare_client = filetracker.client.Client(local_store=None, remote_url=_with_token(url, spare))
        spare_client.put_file("/ft/spare@1", str(local))
        revoke_token(store.metadata, "spare")
    with pytest.raises(filetracker.client.FiletrackerError, match="401"):
        spare_client.put_file("/ft/spare@2", str(local))


def test_health_open_metrics_protected(server: tuple[str, Path, dict[str, str]]) -> None:
    url, _, tokens = server
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/metrics", headers=_bearer(tokens["read"])).status_code == 200
    big = httpx.put(url + "/files/x?last_modified=Mon, 01 Jan 2024 00:00:00 GMT", content=b"x" * (2 << 20))
    assert big.status_code == 401


def test_only_get_and_head_of_health_are_open(server: tuple[str, Path, dict[str, str]]) -> None:
    """Other methods on /health go through authentication like any path: 401 without a token, not 405."""
    url, _, tokens = server
    got = httpx.get(url + "/health")
    head = httpx.head(url + "/health")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        refused = httpx.request(method, url + "/health")
        assert refused.status_code == 401, method
        assert refused.headers["X-Exception"] == "an access token is required"
        assert httpx.request(method, url + "/health", headers=_bearer(tokens["admin"])).status_code == 405, method


def test_cli_url_mode_uses_the_token(server: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    url, _, tokens = server
    runner = CliRunner()
    local = tmp_path / "f"
    local.write_bytes(b"via the cli")
    refused = runner.invoke(cli, ["--url", url, "put", str(local), "/cli/f@1"], env={"CASTORE_TOKEN": ""})
    assert refused.exit_code != 0 and "401" in refused.output
    done = runner.invoke(cli, ["--url", url, "put", str(local), "/cli/f@1"], env={"CASTORE_TOKEN": tokens["write"]})
    assert done.exit_code == 0, done.output
    cat = runner.invoke(cli, ["--url", _with_token(url, tokens["read"]), "cat", "/cli/f"], env={"CASTORE_TOKEN": ""})
    assert cat.stdout_bytes == b"via the cli"


def test_cli_token_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "store"

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, ["--root", str(root), *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    run("init")
    created = run("token", "create", "--role", "read", "--name", "grader")
    token = created.stdout.splitlines()[0]
    assert token.startswith(TOKEN_PREFIX) and "cannot be shown again" in created.stderr
    made = json.loads(run("--json", "token", "create", "--role", "admin").output)
    assert made["role"] == "admin" and made["name"].startswith("admin-")
    listed = [json.loads(line) for line in run("--json", "token", "list").output.splitlines()]
    assert listed[0] == {"access": "closed"}
    assert sorted(i["name"] for i in listed[1:]) == sorted(["grader", made["name"]])
    text = run("token", "list").output
    assert "grader\tread" in text and token not in text and made["token"] not in text
    assert "exists already" in run("token", "create", "--role", "write", "--name", "grader", code=11).output
    assert "invalid token name" in run("token", "create", "--role", "write", "--name", "a b", code=4).output
    run("token", "create", "--role", "root", code=2)
    assert run("token", "revoke", "grader").output.strip() == "revoked grader"
    assert "no token named" in run("token", "revoke", "grader", code=3).output
    with Store.open(root) as store:
        assert [row.name for row in store.metadata.tokens()] == [made["name"]]
    assert "needs a local store" in runner.invoke(
        cli, ["--url", "http://u:s3cret@127.0.0.1:9", "token", "list"]).output
    assert "s3cret" not in runner.invoke(cli, ["--url", "http://u:s3cret@127.0.0.1:9", "token", "list"]).output


def test_middleware_covers_websockets_and_passes_lifespan(store: Store) -> None:
    _, token = create_token(store.metadata, "read")
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    auth = TokenAuth(inner, TokenCache(store.metadata.token_access, seconds=0))

    async def call(scope: dict[str, Any]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await auth(scope, receive, send)
        return sent

    closed = anyio.run(call, {"type": "websocket", "path": "/ui/live", "headers": []})
    assert closed == [{"type": "websocket.close", "code": 1008, "reason": "an access token is required"}]
    assert reached == []
    headers = [(b"authorization", f"Bearer {token}".encode())]
    assert anyio.run(call, {"type": "websocket", "path": "/ui/live", "headers": headers}) == []
    assert anyio.run(call, {"type": "lifespan"}) == []
    assert reached == ["websocket", "lifespan"]


# -- in-process: every answer of the middleware, every role, every header form -----------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.READ, {"GET", "HEAD"}),
        (Role.WRITE, {"GET", "HEAD", "PUT", "DELETE"}),
        (Role.ADMIN, {"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS", "get", "put"}),
    ],
)
def test_each_role_allows_exactly_its_methods(role: Role, allowed: set[str]) -> None:
    methods = {"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS", "get", "put"}  # methods are upper case
    assert {m for m in methods if role.allows(m)} == allowed


def _refusal_of_header(value: str) -> tuple[int, str]:
    with pytest.raises(_Refused) as refused:
        token_from_header(value)
    return refused.value.status, str(refused.value)


def test_token_from_each_header_form() -> None:
    def basic(credentials: bytes) -> str:
        return "Basic " + base64.b64encode(credentials).decode()

    assert token_from_header(None) is None
    assert token_from_header("Bearer cst_x") == "cst_x"
    assert token_from_header("  bEaReR   cst_x  ") == "cst_x"
    assert token_from_header(basic(b"any:cst_p")) == "cst_p"  # the password
    assert token_from_header(basic(b"any:cst_p:q")) == "cst_p:q"  # all of it, after the user name
    assert token_from_header(basic(b"cst_u:")) == "cst_u"  # or the user name when there is no password
    unsupported = (401, "unsupported Authorization header: send Bearer TOKEN, or Basic with the token as password")
    for value in ("Bearer ", "Bearer", "Token cst_x", basic(b":"), basic(b"")):
        assert _refusal_of_header(value) == unsupported, value
    for value in ("Basic !!!", basic(b"\xff:\xfe")):
        assert _refusal_of_header(value) == (401, "malformed Basic credentials"), value


def test_tokens_are_random_urlsafe_and_hashed_as_given() -> None:
    token = new_token()
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43 and token != new_token()
    assert digest("cst_x") == hashlib.sha256(b"cst_x").hexdigest()
    assert digest("cst_\udcff") == hashlib.sha256(b"cst_\xff").hexdigest()  # a header's stray byte, as is


def test_a_made_up_token_name_is_the_role_and_8_hex_digits(store_root: Path) -> None:
    with Store.open(store_root, create=True) as store:
        name, _ = create_token(store.metadata, "write")
    role, _, suffix = name.partition("-")
    assert role == "write" and len(suffix) == 8 and int(suffix, 16) >= 0


def _guarded(roles: dict[str, str] | Exception) -> TestClient:
    """The middleware around a two-route app, with tokens from ``roles`` (or failing with it); closed when any."""

    def load() -> tuple[bool, dict[str, str]]:
        if isinstance(roles, Exception):
            raise roles
        return bool(roles), roles

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok" + (await request.body()).decode())  # the body reaches the app

    app = Starlette(routes=[Route("/files/x", ok, methods=["GET", "HEAD", "PUT", "DELETE", "POST"]),
                            Route("/health", ok)])
    return TestClient(TokenAuth(app, TokenCache(load, seconds=0), open_paths=frozenset({"/health"})))


def test_every_answer_of_the_middleware() -> None:
    with _guarded({}) as http:
        assert http.put("/files/x").text == "ok"  # no token exists: open
    tokens = {role: f"cst_{role}" for role in ("read", "write")}
    with _guarded({digest(t): role for role, t in tokens.items()}) as http:
        assert http.get("/health").text == "ok"  # an open path
        for headers, status, message in [
            ({}, 401, "an access token is required"),
            (_bearer("cst_wrong"), 401, "the access token is not valid"),
            (_basic("any", "cst_wrong"), 401, "the access token is not valid"),
            (_bearer(tokens["read"]), 403, "a read token may not PUT"),
        ]:
            response = http.put("/files/x", headers=headers)
            assert (response.status_code, response.headers["x-exception"], response.text) == \
                (status, message, message + "\n"), headers
            assert response.headers["content-length"] == str(len(message) + 1)
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert response.headers.get("www-authenticate") == \
                ('Basic realm="castore", charset="UTF-8"' if status == 401 else None)
        assert http.put("/files/x", headers=_bearer(tokens["write"]), content=b" body").text == "ok body"
        assert http.get("/files/x", headers=_basic("any", tokens["read"])).text == "ok"
        assert http.post("/files/x", headers=_bearer(tokens["write"])).status_code == 403
        assert http.get("/files/x", headers=_bearer(tokens["read"])).headers.get("www-authenticate") is None
    with _guarded(OSError("disk gone")) as http:
        response = http.get("/files/x")
        assert (response.status_code, response.headers["x-exception"]) == (503, "cannot read the access tokens: OSError")
        assert http.get("/health").text == "ok"


def test_a_refusal_is_a_well_formed_asgi_answer() -> None:
    """Header names in lower case as ASGI requires; a message Latin-1 cannot carry is replaced in the
    header (a ``?`` per character) and whole in the UTF-8 body, never a crash in the middleware."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    message = "no entry for Łódź"
    anyio.run(_refuse, send, 401, message)
    start, body = sent
    assert start["status"] == 401
    assert start["headers"] == [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len((message + "\n").encode())).encode()),
        (b"x-exception", "no entry for ?ód?".encode("latin-1")),
        (b"www-authenticate", b'Basic realm="castore", charset="UTF-8"'),
    ]
    assert body == {"type": "http.response.body", "body": (message + "\n").encode()}


def test_the_token_cache_reloads_only_when_due() -> None:
    now = [0.0]
    loads: list[int] = []

    def load() -> tuple[bool, dict[str, str]]:
        loads.append(1)
        return True, {digest("cst_r"): "read"}

    cache = TokenCache(load, seconds=5, clock=lambda: now[0])
    assert cache.role_of("cst_r") is Role.READ and cache.role_of("cst_x") is None
    now[0] = 4.9
    assert cache.access().roles and len(loads) == 1
    now[0] = 5.0
    assert cache.access().roles and len(loads) == 2
