"""castore migrate-store: a whole store copied to another setup, resumably, and verified."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from castore.errors import SettingsMismatch
from castore.moving import copy_store, verify_copy
from castore.opening import Location, open_store
from castore.store import Store


def _fill(store: Store) -> None:
    big = os.urandom(300_000)
    for version in range(1, 5):
        store.put("/p/a", b"small %d" % version, version)
        store.put("/p/big", big + bytes([version]), version)
    store.put("/p/same", big + b"\x01", 1)  # shares a blob with /p/big@1
    store.put("/q/x", b"", 7)


@pytest.mark.backends("sqlite+file", "postgresql+s3")
def test_copy_is_complete_resumable_and_verified(tmp_path: Path, new_location: Callable[[str], Location]) -> None:
    with open_store(tmp_path / "source", create=True, retention=3) as source:
        _fill(source)
        target = new_location("copy")
        stop_after = [5]

        def interrupt(_size: int) -> None:
            stop_after[0] -= 1
            if stop_after[0] == 0:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            copy_store(source, target, on_version=interrupt)
        report = copy_store(source, target)
        # the interruption came after the fifth version was stored: three were left to copy
        assert report.versions == 3 + 3 + 1 + 1 and report.skipped == 5 and report.copied == 3
        assert verify_copy(source, target) == []
        with open_store(metadata=target.metadata, blobs=target.blobs) as copy:
            assert copy.seed == source.seed and copy.settings() == source.settings()
            assert copy.read_bytes("/p/a@2") == b"small 2"
            assert copy.stat("/p/same").key == source.stat("/p/same").key
            assert copy.usage().blobs == source.usage().blobs  # deduplicated the same way
        source.put("/p/a", b"changed", 9)
        assert any("/p/a" in p for p in verify_copy(source, target))


def test_copying_into_another_store_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path / "a", create=True) as a, open_store(tmp_path / "b", create=True) as b:
        a.put("/f", b"x", 1)
        b.put("/g", b"y", 1)
        where_b = Location(b.metadata.url, (tmp_path / "b" / "blobs").as_uri())
        with pytest.raises(SettingsMismatch, match="seed"):
            copy_store(a, where_b)
        assert not b.exists("/f")


def test_command_line(tmp_path: Path) -> None:
    with open_store(tmp_path / "source", create=True) as source:
        _fill(source)
    target = ["--to-metadata", f"sqlite:///{tmp_path / 'copy' / 'm.sqlite3'}", "--to-blobs",
              (tmp_path / "copy" / "blobs").as_uri()]
    done = subprocess.run([sys.executable, "-m", "castore", "--root", str(tmp_path / "source"), "migrate-store",
                           *target], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "verified: ok" in done.stdout
