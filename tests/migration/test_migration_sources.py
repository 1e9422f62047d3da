"""Filetracker sources and the importer on hand-made folders (no Filetracker install needed).

tests/compat/test_filetracker_import.py does the same against a real Filetracker 2.3.3.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from castore.migration import FolderV2, Importer, ImportProblem, Item, real_name
from castore.migration.importer import ImportReport, Outcome, _Counted, _reason, undo_if_deleted
from castore.migration.live import MigrationStatus
from castore.sizes import IO_BUFFER
from castore.store import Store


@given(st.text())
def test_real_name_undoes_double_encoding(name: str) -> None:
    try:
        mangled = name.encode("utf-8").decode("latin-1")
    except UnicodeEncodeError:  # lone surrogates: not a name anyone stored
        return
    assert real_name(mangled) == name


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_real_name_keeps_ascii(name: str) -> None:
    assert real_name(name) == name


def test_real_name_keeps_names_that_are_not_double_encoded() -> None:
    assert real_name("/zażółć/jaźń.in") == "/zażółć/jaźń.in"
    assert real_name("/caf\u00e9") == "/caf\u00e9"  # one Latin-1 char alone is not UTF-8


def _ft_put(root: Path, name: str, content: bytes, version: int) -> Path:
    """Store like Filetracker 2.3.3: a gzip blob, a symlink with a double-encoded name, lutime."""
    digest = hashlib.sha256(content).hexdigest()
    blob = root / "blobs" / digest[:2] / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(gzip.compress(content))
    mangled = name.encode("utf-8").decode("latin-1").encode("utf-8")
    link = os.fsencode(root / "links") + mangled
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(blob, os.path.dirname(os.fsdecode(link))), link)
    os.utime(link, (version, version), follow_symlinks=False)
    return Path(os.fsdecode(link))


def test_folder_v2_items_and_problems(tmp_path: Path) -> None:
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/a/zażółć.in", b"z", 1000)
    _ft_put(root, "/a/ą.out", b"a", 1001)
    dangling = _ft_put(root, "/b/gone", b"gone", 1002)
    os.unlink(root / "blobs" / hashlib.sha256(b"gone").hexdigest()[:2] / hashlib.sha256(b"gone").hexdigest())
    (root / "links/b/plain").write_bytes(b"not a link")
    os.symlink("/etc/passwd", root / "links/b/elsewhere")
    found = list(FolderV2(root).items())
    items = {i.path: i for i in found if isinstance(i, Item)}
    problems = {p.where: p.reason for p in found if isinstance(p, ImportProblem)}
    assert set(items) == {"/a/zażółć.in", "/a/ą.out"}
    assert items["/a/ą.out"].version == 1001
    assert items["/a/ą.out"].digest == hashlib.sha256(b"a").hexdigest()
    assert "missing" in problems[str(dangling)]
    assert "not a symlink" in problems[str(root / "links/b/plain")]
    assert "does not name a blob" in problems[str(root / "links/b/elsewhere")]
    assert FolderV2(root).count() == 5


def test_shared_blobs_are_linked_and_a_deletion_is_kept(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    big = os.urandom(200_000)
    first = _ft_put(root, "/same/0", big, 2000)
    for k in range(1, 5):
        os.symlink(os.readlink(first), root / f"links/same/{k}")
        os.utime(root / f"links/same/{k}", (2000 + k, 2000 + k), follow_symlinks=False)
    _ft_put(root, "/deleted", b"old", 10)
    store.metadata.remember_deletion("/deleted", 20)
    report = Importer(store, FolderV2(root), jobs=1).run()  # with more, two may read one blob at once
    assert (report.imported, report.linked, report.deleted_in_castore) == (5, 4, 1)
    assert report.logical_bytes == 5 * len(big) and report.stored_bytes <= len(big) + 1000
    assert not store.exists("/deleted")
    assert all(store.read_bytes(f"/same/{k}@{2000 + k}") == big for k in range(5))


def _two_links_to_one_blob(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    """A Filetracker folder with /same/0@2000 and /same/1@2001 sharing one random blob."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    big = os.urandom(size)
    first = _ft_put(root, "/same/0", big, 2000)
    os.symlink(os.readlink(first), root / "links/same/1")
    os.utime(root / "links/same/1", (2001, 2001), follow_symlinks=False)
    return root, big


def test_a_link_whose_blob_was_collected_meanwhile_imports_the_bytes(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first path of a shared blob deleted in castore and its blob collected between the
    importer's look at it and the link: the second path is imported from its own bytes."""
    root, big = _two_links_to_one_blob(tmp_path, 200_000)
    real_look = store.metadata.version_blobs  # how a batch of links finds the stored contents
    raced: list[object] = []

    def look(names: Any) -> Any:
        found = real_look(names)
        if not raced:
            raced.append(names)  # another client deletes it, and the garbage collector runs
            store.delete("/same/0")
            store.collect_garbage()
        return found

    monkeypatch.setattr(store.metadata, "version_blobs", look)
    report = Importer(store, FolderV2(root), jobs=1).run()
    assert raced == [[("/same/0", 2000)]]
    assert (report.imported, report.linked, report.problems) == (2, 0, [])
    assert store.read_bytes("/same/1@2001") == big and not store.exists("/same/0")


def test_put_existing(store: Store) -> None:
    store.put("/a", b"x" * 300_000, 5)
    key = store.stat("/a").key
    assert store.put_existing("/b", key, 7) == "/b@7"
    assert store.read_bytes("/b") == b"x" * 300_000
    assert store.put_existing("/b", key, 6) == "/b@7"  # older: ignored, like put
    store.delete("/a")
    store.delete("/b")
    store.collect_garbage()
    assert store.put_existing("/c", key, 1) is None and not store.exists("/c")


def test_outcomes_are_reported(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/x", b"x", 100)
    importer = Importer(store, FolderV2(root))
    seen: list[Outcome] = []
    importer.run(lambda outcome, size: seen.append(outcome))
    importer.run(lambda outcome, size: seen.append(outcome))
    assert seen == [Outcome.IMPORTED, Outcome.ALREADY]
    assert importer.verify() == []


def test_verify_reports_a_difference(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    link = _ft_put(root, "/v", b"original", 100)
    _ft_put(root, "/w", b"other", 100)
    importer = Importer(store, FolderV2(root))
    assert importer.run().imported == 2
    (link.parent / os.readlink(link)).write_bytes(gzip.compress(b"changed"))
    seen: list[tuple[Outcome, int]] = []
    problems = importer.verify(lambda outcome, size: seen.append((outcome, size)))
    assert [p.where for p in problems] == [str(link)]
    assert problems[0].reason == "differs from castore's /v@100 (7 vs 8 bytes)"
    assert sorted(seen, key=repr) == sorted([(Outcome.PROBLEM, 0), (Outcome.ALREADY, len(b"other"))], key=repr)


def test_verify_re_reads_a_content_over_one_buffer_whole(tmp_path: Path, store: Store) -> None:
    """A content larger than one read's buffer is compared whole and told with its full size."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    big = os.urandom(2 * IO_BUFFER + 123)
    _ft_put(root, "/big", big, 100)
    importer = Importer(store, FolderV2(root), jobs=1)
    assert importer.run().imported == 1
    seen: list[tuple[Outcome, int]] = []
    assert importer.verify(lambda outcome, size: seen.append((outcome, size))) == []
    assert seen == [(Outcome.ALREADY, len(big))]


def test_migrating_server_answers_502_when_the_old_server_is_down(store: Store) -> None:
    from starlette.testclient import TestClient

    from castore.server.app import create_app
    from castore.server.config import ServerConfig
    from tests.server_process import free_port

    store.put("/here", b"here", 5)
    old = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with TestClient(create_app(store, ServerConfig(migrate_from=old))) as http:
        assert http.get("/files/here").content == b"here"  # what castore has needs no old server
        for response in (http.get("/files/missing"), http.head("/files/missing"), http.get("/list/"),
                         http.delete("/files/missing", params={"last_modified": "Thu, 01 Jan 1970 00:00:09 -0000"})):
            assert response.status_code == 502
            assert response.headers["x-exception"].startswith(f"the old server {old} failed")
        assert "castore_migration_fetched_total 0" in http.get("/metrics").text
    assert not store.exists("/missing") and store.metadata.deletion("/missing") is None  # nothing changed


def test_cli_progress_bar_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar shows files (done/total), bytes, MB/s and an ETA; the text summary every figure."""
    import re

    import tqdm
    from click.testing import CliRunner

    from castore.cli import cli

    class EveryStep(tqdm.tqdm):  # type: ignore[misc]
        """Redraws on every step, however fast the import (tqdm waits 0.1 s between draws)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, mininterval=0, **kwargs)

    monkeypatch.setattr(tqdm, "tqdm", EveryStep)

    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    data = os.urandom(100_000)
    _ft_put(root, "/a/1.in", data, 1000)
    os.symlink(os.readlink(_ft_put(root, "/a/2.in", b"two", 1001)), root / "links/a/3.in")
    (root / "links/a/broken").symlink_to("../../blobs/00/" + "0" * 64)
    store = tmp_path / "castore"
    Store.open(store, create=True).close()
    result = CliRunner().invoke(cli, ["--root", str(store), "import-filetracker", str(root), "--progress", "--jobs", "1"])
    assert result.exit_code == 7, result.output
    bar = result.stderr
    # files done of the total, elapsed<ETA, then bytes and MB/s (tqdm redraws a few times a second)
    assert re.search(r"import: +\d+%.*\| [1-4]/4 \[\d\d:\d\d<\d\d:\d\d, .*file/s, [\d.]+ [KMG]?i?B, [\d.]+ MB/s", bar), bar
    summary = result.stdout
    assert "4 files; imported 3 versions (1 shared a content seen before)" in summary, summary
    assert "logical" in summary and "stored" in summary and "dedup" in summary and "files/s" in summary
    assert "1 problems:" in summary and "broken link" in summary


def test_a_folder_the_walk_cannot_open_is_reported(tmp_path: Path, store: Store) -> None:
    """An unlistable folder under links/ is a problem, not silently skipped (files would be lost).

    Made unlistable by a path longer than PATH_MAX (root ignores permission bits).
    """
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/a/ok.in", b"ok", 1000)
    fd = os.open(root / "links", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # 20 * 250 bytes: os.scandir of the deepest refuses the name
            os.mkdir("d" * 249, dir_fd=fd)
            inner = os.open("d" * 249, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    found = list(FolderV2(root).items())
    problems = [p for p in found if isinstance(p, ImportProblem)]
    assert [i.path for i in found if isinstance(i, Item)] == ["/a/ok.in"]
    assert len(problems) == 1 and "d" * 249 in problems[0].where and "unreadable folder" in problems[0].reason
    report = Importer(store, FolderV2(root)).run()
    assert report.imported == 1 and len(report.problems) == 1


def test_verify_leaves_paths_changed_in_castore_since_the_import(tmp_path: Path, store: Store) -> None:
    """A path deleted or put anew in castore after the import is no difference; the rest is
    re-read and compared, and the progress hook hears each outcome with its size."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/gone", b"gone", 100)
    _ft_put(root, "/newer", b"newer", 100)
    _ft_put(root, "/same", b"same!", 100)
    importer = Importer(store, FolderV2(root), jobs=1)
    assert importer.run().imported == 3
    store.delete("/gone")
    store.put("/newer", b"put by a client", 200)
    seen: dict[Outcome, int] = {}
    assert importer.verify(lambda outcome, size: seen.__setitem__(outcome, seen.get(outcome, 0) + size + 1)) == []
    assert seen == {Outcome.DELETED: 1, Outcome.NEWER: 1, Outcome.ALREADY: len(b"same!") + 1}


def test_a_report_as_json() -> None:
    """``--json`` prints every count, the ratios rounded, and the problems by where and why."""
    report = ImportReport("/ft", files=7, imported=4, linked=1, already=1, newer_in_castore=1, deleted_in_castore=1,
                          logical_bytes=3_000_000, stored_bytes=2_000_000, seconds=2.0, verified=4,
                          problems=[ImportProblem("/ft/links/x", "broken link")])
    assert report.as_dict() == {
        "source": "/ft", "files": 7, "imported": 4, "linked": 1, "already": 1, "newer_in_castore": 1,
        "deleted_in_castore": 1, "logical_bytes": 3_000_000, "stored_bytes": 2_000_000, "dedup_ratio": 1.5,
        "seconds": 2.0, "files_per_second": 2.0, "mb_per_second": 1.5, "verified": 4,
        "problems": [{"where": "/ft/links/x", "reason": "broken link"}],
    }
    assert ImportReport("/ft", seconds=0.0).as_dict()["files_per_second"] is None
    assert ImportReport("/ft", seconds=0.0).as_dict()["mb_per_second"] is None
    assert ImportReport("/ft", logical_bytes=10**12, seconds=1.0).as_dict()["mb_per_second"] == 1_000_000.0  # 1e6
    assert ImportReport("/ft", logical_bytes=5).as_dict()["dedup_ratio"] == 1.0
    assert ImportReport("/ft", imported=4, logical_bytes=3_000_000, stored_bytes=1_300_000, seconds=2.12345).as_dict() == {
        **ImportReport("/ft").as_dict(), "imported": 4, "logical_bytes": 3_000_000, "stored_bytes": 1_300_000,
        "dedup_ratio": 2.308, "seconds": 2.123, "files_per_second": 1.9, "mb_per_second": 1.41}


def test_a_problems_reason_is_one_short_line_naming_the_blob() -> None:
    """Read errors name the blob file (or say content); others their type; a traceback keeps its first line."""
    blob = Item("/x", "/ft/links/x", 1, None, "/ft/blobs/ab")
    plain = Item("/x", "/ft/links/x", 1)
    assert _reason(blob, OSError("boom")) == "unreadable or corrupt blob /ft/blobs/ab: OSError: boom"
    assert _reason(plain, EOFError("cut")) == "unreadable or corrupt content: EOFError: cut"
    assert _reason(blob, zlib.error("bad header")) == "unreadable or corrupt blob /ft/blobs/ab: error: bad header"
    assert _reason(plain, ValueError("first  line\nTraceback ...\n  more")) == "ValueError: first line"
    assert _reason(plain, ValueError()) == "ValueError: ValueError"
    assert _reason(plain, ValueError("y" * 400)) == "ValueError: " + "y" * 300


def test_a_migration_status_as_json() -> None:
    status = MigrationStatus(old_files=5, moved=2, deleted=1, left=["/a", "/b"], problems=["bad name"])
    assert status.as_dict() == {"old_files": 5, "moved": 2, "deleted": 1, "left": 2, "problems": ["bad name"]}


def test_an_import_skips_what_castore_deleted_or_has_already_and_counts_each(tmp_path: Path, store: Store) -> None:
    """Deleted in castore at the source's version or later: not brought back (``<=``); castore's
    same version: already; newer: left alone; older, or deleted before the source's version: imported."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    for name in ("deleted_at", "deleted_after", "deleted_before", "same", "newer", "older", "fresh"):
        _ft_put(root, "/" + name, name.encode(), 100)
    store.metadata.remember_deletion("/deleted_at", 100)
    store.metadata.remember_deletion("/deleted_after", 101)
    store.metadata.remember_deletion("/deleted_before", 99)
    store.put("/same", b"same", 100)
    store.put("/newer", b"castore's", 101)
    store.put("/older", b"castore's", 99)
    seen: list[tuple[Outcome, int]] = []
    report = Importer(store, FolderV2(root), jobs=1).run(lambda outcome, size: seen.append((outcome, size)))
    assert (report.files, report.imported, report.linked, report.already, report.newer_in_castore,
            report.deleted_in_castore, report.problems) == (7, 3, 0, 1, 1, 2, [])
    assert report.logical_bytes == len(b"deleted_before" + b"older" + b"fresh")
    assert sorted(seen, key=str) == sorted([(Outcome.DELETED, 0)] * 2 + [(Outcome.ALREADY, 0), (Outcome.NEWER, 0),
                                            (Outcome.IMPORTED, 14), (Outcome.IMPORTED, 5), (Outcome.IMPORTED, 5)],
                                           key=str)
    assert not store.exists("/deleted_at") and not store.exists("/deleted_after")
    assert store.usage().unreferenced_blobs == 0  # a deleted path is skipped, not stored and deleted again
    assert store.read_bytes("/deleted_before") == b"deleted_before" and store.read_bytes("/older") == b"older"
    assert store.read_bytes("/newer") == b"castore's" and store.read_bytes("/same") == b"same"


def test_an_unreadable_blob_is_one_problem_and_the_import_goes_on(tmp_path: Path, store: Store) -> None:
    """A blob that is not gzip: the link is reported with the blob named; the other file is imported."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    bad = _ft_put(root, "/bad", b"bad", 100)
    _ft_put(root, "/good", b"good", 100)
    blob = bad.parent / os.readlink(bad)
    blob.write_bytes(b"not gzip at all")
    seen: list[Outcome] = []
    report = Importer(store, FolderV2(root), jobs=1).run(lambda outcome, size: seen.append(outcome))
    assert (report.files, report.imported) == (2, 1)
    assert [p.where for p in report.problems] == [str(bad)]
    assert report.problems[0].reason.startswith(f"unreadable or corrupt blob {os.path.realpath(blob)}: ")
    assert sorted(seen, key=str) == sorted([Outcome.PROBLEM, Outcome.IMPORTED], key=str)
    assert not store.exists("/bad") and store.read_bytes("/good") == b"good"


def test_the_counting_stream_is_a_readable_raw_stream() -> None:
    """It counts what is read through it, also when buffered (a BufferedReader asks readable() first)."""
    import io

    counted = _Counted(io.BytesIO(b"x" * 10_000))
    assert counted.readable()
    assert io.BufferedReader(counted, buffer_size=4096).read() == b"x" * 10_000
    assert counted.size == 10_000

    class ReadOnly:  # a stream with read() only (no readinto)
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self.inner.read(size)

    counted = _Counted(ReadOnly(b"y" * 10_000))  # type: ignore[arg-type]
    assert io.BufferedReader(counted, buffer_size=4096).read() == b"y" * 10_000 and counted.size == 10_000


class _ListedLikeAServer(FolderV2):
    """A Filetracker folder listed the way a server is: a problem first, no versions in the
    listing (opening, or ``version_of``, tells them)."""

    def items(self) -> Any:
        yield ImportProblem("first", "a problem before any item")
        for entry in super().items():
            yield dataclasses.replace(entry, version=None) if isinstance(entry, Item) else entry

    def version_of(self, item: Item) -> int:
        return int(os.lstat(item.where).st_mtime)

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []

    def open(self, item: Item) -> Any:
        self.opened.append(item.path)
        return super().open(dataclasses.replace(item, version=self.version_of(item)))


def test_an_import_from_a_source_without_versions_verifies_and_reports_each_item(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Items listed without versions are recorded at the version opening told (verify re-reads
    them from where they are); a problem does not stop the items after it; the report names
    the source, the bytes the store grew by and a time within the run's; the work runs in
    threads named castore-import."""
    store.put("/before", os.urandom(50_000), 1)  # stored bytes before the run are not counted
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    contents = {f"/d/{k}": os.urandom(30_000 + k) for k in range(3)}
    links = {path: _ft_put(root, path, data, 3000 + k) for k, (path, data) in enumerate(contents.items())}
    importer = Importer(store, _ListedLikeAServer(root), jobs=2)
    threads: list[str] = []
    real = importer._import_one

    def watched(item: Item) -> Any:
        threads.append(threading.current_thread().name)
        return real(item)

    monkeypatch.setattr(importer, "_import_one", watched)
    started = time.perf_counter()
    report = importer.run()
    elapsed = time.perf_counter() - started
    assert report.source == str(root) and report.imported == 3
    assert report.problems == [ImportProblem("first", "a problem before any item")]
    assert sum(map(len, contents.values())) <= report.stored_bytes <= sum(map(len, contents.values())) + 3000
    assert 0 < report.seconds <= elapsed
    assert threads and all(name.startswith("castore-import_") for name in threads), threads
    assert importer.verify() == []
    blob = links["/d/1"].parent / os.readlink(links["/d/1"])  # the same version, other bytes
    blob.write_bytes(gzip.compress(b"changed behind castore's back"))
    [problem] = importer.verify()
    assert problem.where == str(links["/d/1"]) and "differs from castore's /d/1@3001" in problem.reason
    again = _ListedLikeAServer(root)
    report = Importer(store, again, jobs=2).run()  # a re-run: versions asked, nothing downloaded
    assert (report.already, report.imported, report.stored_bytes, again.opened) == (3, 0, 0, [])


def test_an_item_without_a_version_deleted_in_castore_is_not_stored(tmp_path: Path, store: Store) -> None:
    """Its version is known once opened: a deletion at or after it skips the put (nothing stored)."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/gone", os.urandom(40_000), 4000)
    store.metadata.remember_deletion("/gone", 4000)
    source = _ListedLikeAServer(root)
    report = Importer(store, source, jobs=1).run()
    assert (report.deleted_in_castore, report.imported, report.stored_bytes) == (1, 0, 0)
    assert source.opened == ["/gone"] and not store.exists("/gone")
    assert store.usage().unreferenced_blobs == 0  # skipped, not stored and deleted again


def test_importer_jobs() -> None:
    with pytest.raises(ValueError, match="^jobs must be at least 1$"):
        Importer(None, None, jobs=0)  # type: ignore[arg-type]
    assert Importer(None, None).jobs == 4  # type: ignore[arg-type]


def test_a_rerun_links_new_paths_to_a_blob_imported_before(tmp_path: Path, store: Store) -> None:
    """A path castore has at the old version (ALREADY) offers its blob to the new paths sharing it;
    paths castore has newer do not (their old version is not there to link to), and each is counted."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    shared = os.urandom(100_000)
    first = _ft_put(root, "/same/0", shared, 2000)
    assert Importer(store, FolderV2(root), jobs=1).run().imported == 1
    for k in (1, 2):
        os.symlink(os.readlink(first), root / f"links/same/{k}")
        os.utime(root / f"links/same/{k}", (2000 + k, 2000 + k), follow_symlinks=False)
    report = Importer(store, FolderV2(root), jobs=1).run()
    assert (report.already, report.imported, report.linked, report.problems) == (1, 2, 2, [])
    assert store.read_bytes("/same/2@2002") == shared

    other = os.urandom(100_000)
    newer = [_ft_put(root, f"/x/{k}", other, 3000 + k) for k in range(2)]
    for k in (2, 3):
        os.symlink(os.readlink(newer[0]), root / f"links/x/{k}")
        os.utime(root / f"links/x/{k}", (3000 + k, 3000 + k), follow_symlinks=False)
    for k in range(2):
        store.put(f"/x/{k}", b"put by a client meanwhile", 9000)
    report = Importer(store, FolderV2(root), jobs=1).run()
    assert (report.newer_in_castore, report.already, report.imported, report.linked) == (2, 3, 2, 1)
    assert store.read_bytes("/x/3@3003") == other


def test_a_newer_version_put_while_importing_wins_and_is_never_linked_to(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client puts /same/0 at a newer version while the importer stores the old one: the newer
    stays, counted newer_in_castore, and /same/1 (the same old blob) gets the old bytes, not a link
    to the client's content."""
    root, big = _two_links_to_one_blob(tmp_path, 100_000)
    real_put = store.put

    def put(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "/same/0":
            real_put("/same/0", b"the client's newer bytes", 9999)
        return real_put(name, *args, **kwargs)

    monkeypatch.setattr(store, "put", put)
    report = Importer(store, FolderV2(root), jobs=1).run()
    assert (report.newer_in_castore, report.imported, report.linked, report.problems) == (1, 1, 0, [])
    assert store.read_bytes("/same/0") == b"the client's newer bytes"
    assert store.read_bytes("/same/1@2001") == big


class _ClaimsMore(_ListedLikeAServer):
    """A source whose stated size is larger than the bytes it sends (a body cut short)."""

    def open(self, item: Item) -> Any:
        return dataclasses.replace(super().open(item), size=10**6)


def test_a_content_shorter_than_its_stated_size_is_not_stored(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/short", os.urandom(20_000), 5000)
    report = Importer(store, _ClaimsMore(root), jobs=1).run()
    assert report.imported == 0 and not store.exists("/short")
    assert [p.reason for p in report.problems if p.where != "first"] == [
        "SourceError: content is 20000 bytes, 1000000 were promised"]


class _ListedAhead(FolderV2):
    """A listing that tells a later version than opening finds (it went stale the other way)."""

    def items(self) -> Any:
        for entry in super().items():
            is_item = isinstance(entry, Item) and entry.version is not None
            yield dataclasses.replace(entry, version=entry.version + 1) if is_item else entry  # type: ignore[union-attr,operator]

    def open(self, item: Item) -> Any:
        return super().open(dataclasses.replace(item, version=int(os.lstat(item.where).st_mtime)))


def test_an_item_castore_has_at_the_version_opening_finds_is_already_there_and_verifies(
        tmp_path: Path, store: Store) -> None:
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    data = os.urandom(30_000)
    _ft_put(root, "/p", data, 4001)
    assert Importer(store, FolderV2(root), jobs=1).run().imported == 1
    importer = Importer(store, _ListedAhead(root), jobs=1)
    report = importer.run()  # listed at 4002, opened at 4001: castore has that one
    assert (report.already, report.imported, report.problems) == (1, 0, [])
    assert importer.verify() == []  # recorded at the version opening told


def test_undoing_a_put_spares_a_newer_version_put_since(store: Store) -> None:
    """A deletion covering version 10 undoes /p@10 only: a client's /p@11 put since stays."""
    store.put("/p", b"imported", 10)
    store.metadata.remember_deletion("/p", 10)
    store.put("/p", b"the client's newer", 11)
    assert undo_if_deleted(store, "/p", 10) is True
    assert store.read_bytes("/p") == b"the client's newer"
    assert undo_if_deleted(store, "/p", 12) is False and store.exists("/p")
