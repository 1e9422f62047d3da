"""castore check: counts on a healthy store, damage found, repaired where it can be, never data dropped."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from castore.cli import cli
from castore.keys import BlobKey
from castore.maintenance import MAX_LISTED, check
from castore.metadata.repo import MetadataRepo
from castore.store import METADATA_FILE, DigestReport, Store

pytestmark = pytest.mark.backends("sqlite+file")  # drives castore check --root on the folder layout

OLD = 10 * 24 * 3600  # seconds: far older than any grace period used here


def _run(root: Path, *args: str, code: int | None = None) -> Any:
    result = CliRunner().invoke(cli, ["--root", str(root), "check", *args])
    if code is not None:
        assert result.exit_code == code, (result.output, result.exception)
    return result


def _report(root: Path, *args: str, code: int) -> dict[str, Any]:
    return json.loads(_run(root, "--json", *args, code=code).output)  # type: ignore[no-any-return]


def _sql(root: Path, statement: str, *params: object) -> None:
    """Damage the metadata behind the store's back (plain sqlite3: no foreign keys enforced)."""
    with sqlite3.connect(root / METADATA_FILE) as db:
        db.execute(statement, params)


def _file(store: Store, key: str) -> Path:
    return store.blobs.path_of(BlobKey(key))  # type: ignore[attr-defined, no-any-return]


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def filled(store: Store, store_root: Path) -> Store:
    """3 paths, 5 versions, 4 blobs (one shared by two paths, two in files)."""
    store.put("/a", b"small", version=1)
    store.put("/a", b"small, again", version=2)
    store.put("/b", os.urandom(300_000), version=1)
    store.put("/b", os.urandom(300_000), version=2)
    store.put("/c", b"small", version=7)
    return store


def test_healthy_store_is_clean_and_counted(filled: Store, store_root: Path) -> None:
    report = _report(store_root, "--verify-content", code=0)
    assert (report["paths"], report["versions"], report["blobs"]) == (3, 5, 4)
    assert report["problem_count"] == report["lost_count"] == report["orphan_files"] == 0
    stored = sum(filled.stat(f"/b@{v}").stored_size for v in (1, 2)) + len(b"small") + len(b"small, again")
    assert report["stored_bytes_checked"] == stored
    assert report["verified_bytes"] == 600_000 + len(b"small") + len(b"small, again")
    text = _run(store_root, code=0).output
    assert "paths:          3" in text and "status:         clean (exit 0)" in text
    text = _run(store_root, "--verify-content", code=0).output
    assert re.search(r"bytes checked: .* verified in [0-9.]+ s \([0-9.]+ MB/s\)", text), text  # the rate shown


def test_json_shape(filled: Store, store_root: Path) -> None:
    report = _report(store_root, "--repair", code=0)
    assert set(report) == {
        "repair", "verify_content", "paths", "versions", "blobs", "unreferenced_blobs", "stored_bytes_checked",
        "verified_bytes", "seconds", "blob_seconds", "verify_bytes_per_second", "problem_count", "repaired_count", "problems",
        "lost_count", "lost", "orphan_files", "orphan_files_removed", "staging_files_removed", "digests_added",
        "exit_code",
    }
    assert report["repair"] is True and report["staging_files_removed"] == 0 and report["exit_code"] == 0
    # the global --json works as well
    result = CliRunner().invoke(cli, ["--root", str(store_root), "--json", "check"])
    assert json.loads(result.output)["paths"] == 3


def test_wrong_refcounts_are_repaired(filled: Store, store_root: Path) -> None:
    shared = filled.stat("/a@1").key
    lone = filled.stat("/b@2").key
    _sql(store_root, "UPDATE blobs SET refcount = 7 WHERE key = ?", shared)
    _sql(store_root, "UPDATE blobs SET refcount = 0 WHERE key = ?", lone)  # gc would collect it!
    found = _report(store_root, code=2)
    assert {(p["kind"], p["subject"], p["repaired"]) for p in found["problems"]} == {
        ("refcount", shared, False), ("refcount", lone, False)
    }
    assert filled.metadata.refcount(shared) == 7  # a check without --repair changes nothing
    repaired = _report(store_root, "--repair", code=1)
    assert repaired["problem_count"] == repaired["repaired_count"] == 2
    assert filled.metadata.refcount(shared) == 2 and filled.metadata.refcount(lone) == 1
    assert filled.metadata.recount() == {}
    _report(store_root, code=0)
    assert filled.collect_garbage().blobs == 0
    assert len(filled.read_bytes("/b@2")) == 300_000


def test_nversions_is_repaired(filled: Store, store_root: Path) -> None:
    _sql(store_root, "UPDATE paths SET nversions = 9 WHERE path = '/a'")
    assert _report(store_root, code=2)["problems"][0]["kind"] == "path"
    assert _report(store_root, "--repair", code=1)["repaired_count"] == 1
    _report(store_root, code=0)


def test_orphan_files_older_than_the_grace_are_removed(filled: Store, store_root: Path) -> None:
    old, young = BlobKey("0" * 32), BlobKey("f" * 32)
    filled.blobs.put_bytes(old, b"left by a killed put")
    filled.blobs.put_bytes(young, b"a put may be about to record this")
    _age(_file(filled, old), OLD)
    inline_key = filled.stat("/a@1").key  # a file beside an inline row: no row uses it
    filled.blobs.put_bytes(inline_key, b"small")
    _age(_file(filled, inline_key), OLD)
    report = _report(store_root, code=0)  # garbage, not damage
    assert report["orphan_files"] == 3 and report["orphan_files_removed"] == 0
    report = _report(store_root, "--repair", "--grace", "3600", code=0)
    assert report["orphan_files"] == 3 and report["orphan_files_removed"] == 2
    assert old not in filled.blobs and inline_key not in filled.blobs and young in filled.blobs
    assert filled.read_bytes("/a@1") == b"small"
    assert _report(store_root, "--repair", "--grace", "0", code=0)["orphan_files_removed"] == 1
    assert young not in filled.blobs
    assert _report(store_root, "--verify-content", code=0)["blobs"] == 4


def test_old_staging_files_are_removed(filled: Store, store_root: Path) -> None:
    staging = store_root / "blobs" / ".staging"
    (staging / "tmp-old").write_bytes(b"x")
    (staging / "tmp-young").write_bytes(b"y")
    _age(staging / "tmp-old", OLD)
    assert _report(store_root, "--repair", code=0)["staging_files_removed"] == 1
    assert [p.name for p in staging.iterdir()] == ["tmp-young"]


def test_lost_blob_is_listed_and_never_dropped(store: Store, store_root: Path) -> None:
    content = os.urandom(300_000)
    store.put("/x", content, version=1)
    store.put("/y", content, version=3)
    store.put("/z", b"fine", version=1)
    _file(store, store.stat("/x").key).unlink()
    for args in ((), ("--repair",), ("--repair", "--verify-content")):
        report = _report(store_root, *args, code=2)
        assert [p["kind"] for p in report["problems"]] == ["missing"]
        assert report["lost"] == ["/x@1", "/y@3"] and report["lost_count"] == 2
        assert store.exists("/x") and store.exists("/y@3")
    text = _run(store_root, "--repair", code=2).output
    assert "/x@1" in text and "DAMAGE REMAINS (exit 2)" in text
    assert store.collect_garbage().blobs == 0 and store.exists("/x")


def test_corrupt_content_is_found_with_verify_content(make_store: Any, tmp_path: Path) -> None:
    store = make_store(name="s", inline_max=1000)
    root = tmp_path / "s"
    store.put("/file", os.urandom(5000), version=1)
    store.put("/inline", b"abc" * 200, version=1)  # compresses: an inline zstd blob
    store.put("/ok", os.urandom(3000), version=1)
    path = _file(store, store.stat("/file").key)
    path.chmod(0o644)
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 1
    path.write_bytes(damaged)
    inline = store.stat("/inline")
    assert inline.codec == "zstd"
    _sql(root, "UPDATE blobs SET data = zeroblob(length(data)) WHERE key = ?", inline.key)
    assert _report(root, code=0)["problem_count"] == 0  # sizes are right; only the content is wrong
    report = _report(root, "--verify-content", "--repair", code=2)
    assert sorted(p["kind"] for p in report["problems"]) == ["corrupt", "corrupt"]
    assert report["lost"] == ["/file@1", "/inline@1"]
    assert report["verified_bytes"] == 3000
    assert store.exists("/file") and store.exists("/inline")


def test_dangling_version_is_listed(filled: Store, store_root: Path) -> None:
    _sql(store_root, "INSERT INTO paths VALUES ('/ghost', 4, ?, 1)", "e" * 32)
    _sql(store_root, "INSERT INTO versions VALUES ('/ghost', 4, ?)", "e" * 32)
    report = _report(store_root, "--repair", code=2)
    assert [p["kind"] for p in report["problems"]] == ["dangling"]
    assert report["lost"] == ["/ghost@4"]


def test_paging(filled: Store, store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With pages of two rows, every page of every scan is visited."""
    for i in range(7):
        filled.put(f"/many/{i}", os.urandom(200_000 if i % 2 else 100), version=1)
    keys = [filled.stat(f"/many/{i}").key for i in range(7)]
    for key in keys[:5]:
        _sql(store_root, "UPDATE blobs SET refcount = 3 WHERE key = ?", key)
    orphans = [BlobKey(f"{i:032x}") for i in range(5)]
    for key in orphans:
        filled.blobs.put_bytes(key, b"orphan")
        _age(_file(filled, key), OLD)
    _file(filled, keys[1]).unlink()
    _file(filled, keys[3]).unlink()
    filled.put("/many/again", os.urandom(10), version=1)
    pages: list[int] = []
    original = MetadataRepo.blob_page

    def spy(self: MetadataRepo, *args: Any, **kwargs: Any) -> Any:
        page = original(self, *args, **kwargs)
        pages.append(len(page))
        return page

    monkeypatch.setattr(MetadataRepo, "SCAN_PAGE", 2)
    monkeypatch.setattr(MetadataRepo, "SCAN_DATA_PAGE", 2)
    monkeypatch.setattr(MetadataRepo, "blob_page", spy)
    report = check(filled, repair=True, verify_content=True, grace=60)
    assert max(pages) == 2 and sum(pages) == report.blobs == 4 + 7 + 1
    assert (report.paths, report.versions) == (3 + 8, 5 + 8)
    assert report.problem_count == 5 + 2 and report.repaired_count == 5
    assert sorted(report.lost) == ["/many/1@1", "/many/3@1"]
    assert report.orphan_files == report.orphan_files_removed == 5
    assert filled.metadata.recount() == {}


def test_memory_does_not_grow_with_the_rows(make_store: Any) -> None:
    """300 inline blobs of 100 KiB (30 MiB in the database): the check holds a few pages at a time."""
    store = make_store(name="big")
    for i in range(300):
        store.put(f"/f/{i}", os.urandom(100 * 1024), version=1)
    tracemalloc.start()
    try:
        report = check(store, verify_content=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.blobs == 300 and report.verified_bytes == 300 * 100 * 1024
    assert peak < 16 << 20, f"check peaked at {peak / 2**20:.1f} MiB"


def test_a_metadata_read_error_deletes_nothing(filled: Store, store_root: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    orphan = BlobKey("1" * 32)
    filled.blobs.put_bytes(orphan, b"orphan")
    _age(_file(filled, orphan), OLD)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("disk I/O error"))

    files = sorted(filled.blobs)
    monkeypatch.setattr(MetadataRepo, "file_blobs", broken)
    with pytest.raises(OperationalError):
        check(filled, repair=True, grace=0)
    result = _run(store_root, "--repair", "--grace", "0", code=6)
    assert "check could not finish" in result.output and "disk I/O error" in result.output
    assert orphan in filled.blobs and sorted(filled.blobs) == files


def test_gc_deletes_no_file_when_the_metadata_fails(filled: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    filled.delete("/b")
    files = sorted(filled.blobs)
    assert len(files) == 2

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("DELETE", {}, Exception("database disk image is malformed"))

    from castore.metadata.txn import WriteTxn

    monkeypatch.setattr(WriteTxn, "forget_blob", broken)
    with pytest.raises(OperationalError):
        filled.collect_garbage()
    assert sorted(filled.blobs) == files
    monkeypatch.undo()
    assert filled.collect_garbage().blobs == 2 and sorted(filled.blobs) == []


def test_repair_reports_blobs_the_digest_step_finds_damaged(filled: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """--repair calls Store.add_missing_digests; a blob it finds damaged is a lost blob (end to end on a
    pre-0002 store: tests/metadata/test_migration_0002.py)."""
    assert check(filled, repair=True).digests_added == 0
    damaged = DigestReport(4, [f"blob {'d' * 32}: does not match its key"])
    monkeypatch.setattr(Store, "add_missing_digests", lambda self: damaged)
    report = check(filled, repair=True)
    assert report.digests_added == 4 and report.exit_code == 2
    assert [(p.kind, p.subject) for p in report.problems] == [("corrupt", "d" * 32)]
    assert check(filled).digests_added is None


def test_reports_keep_at_most_max_listed_items() -> None:
    from castore.maintenance import CheckProblem, CheckReport

    report = CheckReport(repair=False, verify_content=False)
    for i in range(MAX_LISTED + 5):
        report.add(CheckProblem("refcount", str(i), "x"))
    assert report.problem_count == MAX_LISTED + 5 and len(report.problems) == MAX_LISTED
    assert report.exit_code == 2


def test_help_documents_the_exit_statuses(tmp_path: Path) -> None:
    text = CliRunner().invoke(cli, ["check", "--help"]).output
    for line in ("0  clean", "1  problems were found and all repaired", "2  damage remains"):
        assert line in text
    assert "--verify-content" in text and "--repair" in text and "--grace" in text


def _stderr_on_a_terminal(*args: str) -> tuple[int, bytes]:
    """Run the CLI with stderr on a pseudo-terminal (100 columns); return its exit code and what it wrote there."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    written = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO once the process and our copy of the follower are gone
                return
            if not data:
                return
            written.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = subprocess.run([sys.executable, "-m", "castore", *args], stdout=subprocess.DEVNULL, stderr=follower,
                              timeout=120, check=False)
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    return done.returncode, bytes(written)


@pytest.mark.parametrize(("flags", "bar"), [((), b"check:"), (("--verify-content",), b"verify:")])
def test_a_progress_bar_on_a_terminal_only(filled: Store, store_root: Path, flags: tuple[str, ...],
                                           bar: bytes) -> None:
    code, shown = _stderr_on_a_terminal("--root", str(store_root), "check", *flags)
    assert code == 0 and bar in shown and b"%|" in shown, shown
    result = _run(store_root, *flags, code=0)  # stderr not a terminal: no bar
    assert bar.decode() not in result.output
