"""Once access tokens were used, a store stays closed until an admin opens it (issue #21, section 3).

Revoking the last token used to open the server to everyone within the token cache's
delay. Now ``token create`` closes the store (a store setting, read from the database by
every worker of every server, as the tokens are) and only ``castore token open-access --yes``
opens it again; ``token list`` and ``serve``'s start line say which it is.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from castore.cli import cli
from castore.cli.common import EXIT_CODES, EXIT_EXISTS
from castore.preflight import preflight
from castore.server.tokens import TokenCache, create_token, open_access, revoke_token
from castore.store import Store

from ..backends import PostgresCluster
from ..server_process import castore_server, free_port, wait_for

V1 = "?last_modified=Mon, 01 Jan 2024 00:00:00 GMT"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _castore(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_revoking_the_last_token_keeps_the_server_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path / "store")
    _castore("--root", root, "init")
    first = _castore("--root", root, "token", "create", "--role", "admin", "--name", "first").stdout.split()[0]
    last = _castore("--root", root, "token", "create", "--role", "write", "--name", "last").stdout.split()[0]
    monkeypatch.setenv("CASTORE_TOKEN_CACHE_SECONDS", "0.2")
    with castore_server(root, "--workers", "1") as url, httpx.Client(base_url=url) as http:
        assert http.put("/files/a" + V1, content=b"x", headers=_bearer(last)).status_code == 200
        assert http.get("/files/a").status_code == 401
        _castore("--root", root, "token", "revoke", "first")
        revoked = _castore("--root", root, "token", "revoke", "last")
        assert "no token left" in revoked.stderr and "open-access --yes" in revoked.stderr
        # the worker has reloaded the tokens once the revoked one is refused
        wait_for(lambda: http.get("/files/a", headers=_bearer(last)).status_code == 401,
                 "the revoked last token still passes: the server opened to everyone")
        for headers in ({}, _bearer(first), _bearer("cst_anything")):
            refused = http.get("/files/a", headers=headers)
            assert refused.status_code == 401, headers
        assert http.put("/files/b" + V1, content=b"anonymous").status_code == 401
        assert http.get("/health").status_code == 200

        listed = _castore("--root", root, "token", "list").stdout
        assert listed.splitlines()[0].startswith("access: closed")
        needs_yes = _castore("--root", root, "token", "open-access", code=2)
        assert "--yes" in needs_yes.output
        opened = _castore("--root", root, "token", "open-access", "--yes")
        assert "open to anyone" in opened.output
        wait_for(lambda: http.get("/files/a").status_code == 200, "the server stays closed after open-access --yes")
        assert http.get("/files/a").content == b"x"
        assert _castore("--root", root, "token", "list").stdout.splitlines()[0].startswith("access: open")


def test_every_worker_reads_the_access_setting_from_the_database(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    monkeypatch.setenv("CASTORE_TOKEN_CACHE_SECONDS", "0")  # each request reads the database
    with castore_server(root, "--workers", "2") as url, httpx.Client(base_url=url) as http:
        assert http.put("/files/a" + V1, content=b"x").status_code == 200
        with Store.open(root) as store:
            create_token(store.metadata, "read", "only")
            revoke_token(store.metadata, "only")
        assert {http.get("/files/a").status_code for _ in range(20)} == {401}
        with Store.open(root) as store:
            open_access(store.metadata)
        assert {http.get("/files/a").status_code for _ in range(20)} == {200}
        with Store.open(root) as store:
            _, token = create_token(store.metadata, "read", "again")
        assert {http.get("/files/a").status_code for _ in range(20)} == {401}
        assert {http.get("/files/a", headers=_bearer(token)).status_code for _ in range(20)} == {200}


def test_two_servers_on_one_postgresql_stay_closed(postgres: PostgresCluster, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    options = ("--metadata", postgres.new_database(), "--blobs", (tmp_path / "blobs").as_uri())
    _castore(*options, "init")
    token = _castore(*options, "token", "create", "--role", "write", "--name", "w").stdout.split()[0]
    monkeypatch.setenv("CASTORE_TOKEN_CACHE_SECONDS", "0")
    with castore_server(tmp_path / "a", store_options=options) as one, \
            castore_server(tmp_path / "b", store_options=options) as two:
        assert httpx.put(one + "/files/p" + V1, content=b"p", headers=_bearer(token)).status_code == 200
        _castore(*options, "token", "revoke", "w")
        for url in (one, two):
            assert httpx.get(url + "/files/p").status_code == 401
            assert httpx.get(url + "/files/p", headers=_bearer(token)).status_code == 401
        _castore(*options, "token", "open-access", "--yes")
        for url in (one, two):
            assert httpx.get(url + "/files/p").content == b"p"


@pytest.mark.backends("sqlite+file", "postgresql+file")
def test_open_access_refuses_while_tokens_exist(store: Store) -> None:
    assert not store.metadata.access_closed()
    create_token(store.metadata, "read", "r")
    assert store.metadata.access_closed()
    with pytest.raises(ValueError, match=r"^1 token exists \(r\): revoke it first \(castore token revoke NAME\)$"):
        open_access(store.metadata)
    create_token(store.metadata, "write", "w")
    with pytest.raises(ValueError, match=r"^2 tokens exist \(r, w\): revoke them first \(castore token revoke NAME\)$"):
        open_access(store.metadata)
    assert store.metadata.access_closed()
    revoke_token(store.metadata, "w")
    revoke_token(store.metadata, "r")
    assert store.metadata.access_closed()
    open_access(store.metadata)
    assert not store.metadata.access_closed()


@pytest.mark.backends("sqlite+file", "postgresql+file")
def test_a_store_with_tokens_from_before_the_setting_is_closed(store: Store) -> None:
    """A store whose tokens were made before the setting existed has no ``access`` row: its tokens close it."""
    create_token(store.metadata, "read", "old")
    store.metadata.set_setting("access", None)  # as such a store was: no row
    assert "access" not in store.metadata.settings()
    assert store.metadata.access_closed()
    cache = TokenCache(store.metadata.token_access, seconds=0)
    assert cache.access().closed


@pytest.mark.backends("sqlite+file", "postgresql+file")
def test_the_token_cache_sees_a_closed_store_without_tokens(store: Store) -> None:
    now = [0.0]
    cache = TokenCache(store.metadata.token_access, seconds=5, clock=lambda: now[0])
    assert not cache.access().closed
    create_token(store.metadata, "read", "r")
    revoke_token(store.metadata, "r")
    now[0] = 5.0
    access = cache.access()
    assert access.closed and access.roles == {}
    open_access(store.metadata)
    now[0] = 10.0
    assert not cache.access().closed


def test_preflight_says_closed_for_a_store_without_tokens(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        ready = preflight(root)
        assert ready is not None and not ready.closed
        create_token(store.metadata, "read", "r")
        revoke_token(store.metadata, "r")
    ready = preflight(root)
    assert ready is not None and ready.closed


def _start_line(root: Path, *store_options: str) -> str:
    """The first line ``castore serve`` prints, the server stopped right after."""
    server = subprocess.Popen([sys.executable, "-m", "castore", "--root", str(root), *store_options, "serve",
                               "--port", str(free_port()), "--workers", "1"], stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        return server.stderr.readline()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_serve_says_whether_tokens_are_required(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    assert re.search(r"\(1 worker, open to anyone: no access token needed\)$", _start_line(root))
    _castore("--root", str(root), "token", "create", "--role", "read", "--name", "r")
    _castore("--root", str(root), "token", "revoke", "r")
    assert re.search(r"\(1 worker, access tokens required\)$", _start_line(root))


def test_token_create_with_a_taken_name_has_its_own_exit_code(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    _castore("--root", root, "init")
    _castore("--root", root, "token", "create", "--role", "read", "--name", "grader")
    taken = _castore("--root", root, "token", "create", "--role", "write", "--name", "grader", code=EXIT_EXISTS)
    assert "a token named 'grader' exists already" in taken.output
    as_json = _castore("--root", root, "--json", "token", "create", "--role", "write", "--name", "grader",
                       code=EXIT_EXISTS)
    assert json.loads(as_json.stdout)["code"] == EXIT_EXISTS
    assert EXIT_EXISTS not in (2, 3, 4, 5) and EXIT_CODES[EXIT_EXISTS].startswith("exists")
    assert "invalid token name" in _castore("--root", root, "token", "create", "--role", "read", "--name", "a b",
                                            code=4).output
    helped = " ".join(_castore("token", "create", "--help").output.split())
    assert f"{EXIT_EXISTS} a token with that name exists" in helped and "4 invalid name" in helped
    listed = [json.loads(line) for line in _castore("--root", root, "--json", "token", "list").stdout.splitlines()]
    assert listed[0] == {"access": "closed"} and [row["name"] for row in listed[1:]] == ["grader"]
