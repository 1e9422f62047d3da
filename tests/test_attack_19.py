"""Attacks on issue #19's new pieces that found bugs: each test failed before its fix.

A hostile old server of ``serve --migrate-from`` (scripted with the hostile-migration
tests' :class:`OldServer`) must get castore to answer a clean 502 naming it, never a 500
"internal error" with a traceback in the log.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from castore.server import create_app
from castore.store import Store
from tests.test_live_migration_hostile import OldServer, _Handler, not_found

pytestmark = pytest.mark.backends("sqlite+file")


def _answer(handler: _Handler, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def test_an_old_servers_listing_that_is_not_utf8_is_a_502(store: Store) -> None:
    """Filetracker 2.3.3 encodes every listed name as UTF-8; other bytes are a malformed answer.

    Before: 500 ``internal error: UnicodeDecodeError`` (a traceback in the log)."""
    body = b"ok\nbad\xff\xfename\n"

    def answer(handler: _Handler) -> None:
        if handler.path.startswith("/list/"):
            _answer(handler, 200, {"Content-Length": str(len(body))}, body)
        else:
            not_found(handler)

    with OldServer(answer) as old, \
            TestClient(create_app(store, migrate_from=old.url), raise_server_exceptions=False) as http:
        response = http.get("/list/")
    assert response.status_code == 502
    assert old.url in response.headers["x-exception"] and "UTF-8" in response.headers["x-exception"]
