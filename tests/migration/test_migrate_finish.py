"""``castore migrate finish``: the remembered deletions of a finished live migration are dropped (#22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from castore.cli import cli
from castore.store import Store


def _run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    return result.exit_code, result.output


@pytest.mark.backends("sqlite+file")  # castore --root on the folder
def test_finish_forgets_the_deletions_and_asks_first(store: Store, store_root: Path) -> None:
    store.put("/kept", b"x", 1)
    for i in range(3):
        store.metadata.remember_deletion(f"/gone/{i}", 5)
    code, output = _run(store_root, "migrate", "finish")  # no --yes, no terminal: refused, nothing changed
    assert code != 0 and "--yes" in output
    assert len(store.metadata.deletions("/", "0")) == 3
    code, output = _run(store_root, "--json", "migrate", "finish", "--yes")
    assert code == 0, output
    assert json.loads(output) == {"deletions_forgotten": 3}
    assert store.metadata.deletions("/", "0") == {} and store.read_bytes("/kept") == b"x"
    code, output = _run(store_root, "migrate", "finish", "--yes")  # again: nothing left
    assert code == 0 and "0 remembered deletions" in output
