"""Start-up cost: a judging machine that only uses the client must not load the store's stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "alembic", "starlette", "uvicorn", "anyio")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {line.split(".")[0] for line in done.stdout.splitlines()}


def test_importing_the_client_loads_no_server_or_database_library() -> None:
    loaded = _modules_after("import castore.client; castore.client.Client(remote_url='http://127.0.0.1:9', local_store=None)")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_package_loads_the_store_on_first_use() -> None:
    assert not _modules_after("import castore; castore.NotFound") & {"sqlalchemy"}
    assert "sqlalchemy" in _modules_after("import castore; castore.Store")
