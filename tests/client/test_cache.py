"""castore.client.cache: a destination is replaced whole and atomically (replaced_whole), and
LocalCache on a real folder: Filetracker's layout, writes, deletes under the lock, listing, eviction."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from castore.client import cache as cache_module
from castore.client.cache import STALE_TEMP_SECONDS, CacheEntry, CleanReport, LocalCache, replaced_whole


def test_replacing_a_file_never_leaves_its_name_missing(tmp_path: Path) -> None:
    """A reader polling the destination while it is replaced 300 times always finds a whole file."""
    import threading

    from castore.client.cache import replaced_whole

    destination = tmp_path / "input.txt"
    destination.write_bytes(b"0" * 1000)
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                data = destination.read_bytes()
            except FileNotFoundError:
                seen.append("missing")
                continue
            if len(data) != 1000 or len(set(data)) != 1:
                seen.append("torn")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            with replaced_whole(destination) as temporary:
                temporary.write_bytes(str(i % 10).encode() * 1000)
    finally:
        stop.set()
        thread.join()
    assert seen == []
    assert destination.read_bytes() == b"9" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]  # nothing left aside


def test_replacing_keeps_a_folder_or_link_at_the_destination_as_os_replace_would(tmp_path: Path) -> None:
    from castore.client.cache import replaced_whole

    target = tmp_path / "real.txt"
    target.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with replaced_whole(link) as temporary:
        temporary.write_bytes(b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert target.read_bytes() == b"old"  # the link is replaced, its target untouched
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(OSError), replaced_whole(folder) as temporary:
        temporary.write_bytes(b"x")
    assert folder.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.txt", "real.txt"]


# -- LocalCache on a real folder: Filetracker's layout, the writes, deletes, listing and eviction ---


def _add(cache: LocalCache, path: str, content: bytes, version: int) -> Path:
    """Cache ``content`` as ``path@version`` the way a download does (exclusive lock held)."""
    with cache.locked(path, exclusive=True):
        return cache.add_stream(path, io.BytesIO(content), version)


def test_files_locks_and_temporaries_go_where_filetracker_puts_them(tmp_path: Path) -> None:
    """files/<path>, locks/<path>; a folder of other paths is not a cached file; names start with any letter."""
    root = tmp_path / "cache"
    cache = LocalCache(root)
    assert repr(cache) == f"LocalCache({str(root)!r})"
    assert _add(cache, "/Xa/b", b"content", 7) == root / "files" / "Xa" / "b" == cache.file_path("/Xa/b")
    assert (root / "files" / "Xa" / "b").read_bytes() == b"content"
    assert (root / "locks" / "Xa" / "b").is_file()  # the lock file, under the cache, not at /Xa/b
    assert sorted(p.name for p in root.iterdir()) == ["files", "locks", "tmp"]
    assert list((root / "tmp").iterdir()) == []
    assert cache.version("/Xa/b") == 7 and cache.version("/Xa") is None and cache.version("/none") is None
    assert cache.lookup("/Xa", None) is None and cache.lookup("/Xa/b", 8) is None
    assert cache.lookup("/Xa/b", 7) == cache.lookup("/Xa/b", None) == root / "files" / "Xa" / "b"
    assert list(cache.entries()) == [CacheEntry("/Xa/b@7", 7.0, 7)]


def test_a_locks_folder_of_its_own_and_a_cache_folder_made_on_first_write(tmp_path: Path) -> None:
    """With ``locks_dir`` the lock files go there; the cache folder itself is made by the first file."""
    root, locks = tmp_path / "new" / "cache", tmp_path / "locks"
    cache = LocalCache(root, locks)
    source = tmp_path / "src"
    source.write_bytes(b"from a file")
    _add(cache, "/a/s", b"from a stream", 4)  # the first write makes the cache folder
    _add(cache, "/a/t", b"another", 5)  # tmp/ exists by now
    with cache.locked("/a/f", exclusive=True):
        cache.add_file("/a/f", source, 3)
    other = LocalCache(tmp_path / "other" / "cache", locks)
    with other.locked("/a/f", exclusive=True):
        other.add_file("/a/f", source, 3)  # add_file's first write makes its cache folder too
    assert (tmp_path / "other" / "cache" / "files" / "a" / "f").read_bytes() == b"from a file"
    with cache.locked("/a/g", exclusive=True):
        cache.add_file("/a/g", source, 6)
    assert (locks / "a" / "f").is_file() and (locks / "a" / "s").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["files", "tmp"]  # no locks/ beside the files
    assert sorted(e.name for e in cache.entries()) == ["/a/f@3", "/a/g@6", "/a/s@4", "/a/t@5"]
    assert (root / "files" / "a" / "s").read_bytes() == b"from a stream"


def test_temporaries_are_written_under_the_cache_not_the_process_temp_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download is written in <cache>/tmp/ and renamed in place, whatever TMPDIR says."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    cache = LocalCache(tmp_path / "cache")
    seen: list[list[str]] = []

    class Watched(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            seen.append(os.listdir(cache.tmp))
            return super().read(size)

    _add(cache, "/w", b"watched", 1)
    with cache.locked("/w", exclusive=True):
        cache.add_stream("/w", Watched(b"watched again"), 2)
    assert seen and all(len(names) == 1 for names in seen)  # the partial file, in tmp/
    source = tmp_path / "src"
    source.write_bytes(b"copied")
    with cache.locked("/c", exclusive=True):
        cache.add_file("/c", source, 1)
    assert os.listdir(cache.tmp) == []
    assert cache.file_path("/c").read_bytes() == b"copied" and cache.file_path("/w").read_bytes() == b"watched again"


def test_a_failed_write_raises_its_own_error_and_leaves_nothing(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")

    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell():
                raise ConnectionResetError("the download broke")
            return super().read(4)

    with pytest.raises(ConnectionResetError), cache.locked("/b", exclusive=True):
        cache.add_stream("/b", Broken(b"partial content"), 1)
    with pytest.raises(FileNotFoundError), cache.locked("/b", exclusive=True):
        cache.add_file("/b", tmp_path / "missing", 1)
    assert os.listdir(cache.tmp) == [] and list(cache.entries()) == []


def test_a_download_whose_temporary_is_removed_meanwhile_fails_as_file_not_found(tmp_path: Path) -> None:
    """Someone empties tmp/ during a download (by hand, or a clean of its own): nothing is cached."""
    cache = LocalCache(tmp_path / "cache")

    class Swept(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            for name in os.listdir(cache.tmp):
                os.unlink(cache.tmp / name)
            return super().read(size)

    with pytest.raises(FileNotFoundError), cache.locked("/s", exclusive=True):
        cache.add_stream("/s", Swept(b"content"), 1)
    assert list(cache.entries()) == []


def test_link_to_hands_out_a_hard_link_and_copies_across_filesystems(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    file = _add(cache, "/l", b"linked", 1)
    cache.link_to(file, tmp_path / "out")
    assert os.path.samefile(file, tmp_path / "out")
    cache.link_to(file, tmp_path / "copy", link=False)
    assert not os.path.samefile(file, tmp_path / "copy") and (tmp_path / "copy").read_bytes() == b"linked"
    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or elsewhere.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to link across")
    target = Path(tempfile.mkdtemp(dir=elsewhere)) / "out"
    try:
        cache.link_to(file, target)  # EXDEV: copied instead
        assert target.read_bytes() == b"linked" and target.stat().st_nlink == 1
    finally:
        shutil.rmtree(target.parent)


def test_delete_removes_only_the_version_asked_for_and_prunes_empty_folders(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = LocalCache(root)
    _add(cache, "/d/e/f", b"x", 5)
    _add(cache, "/keep", b"y", 1)
    assert cache.delete("/d/e/f", 4) is False and cache.version("/d/e/f") == 5
    assert cache.delete("/d/e/f", 5) is True and cache.version("/d/e/f") is None
    assert sorted(p.name for p in (root / "files").iterdir()) == ["keep"]
    assert sorted(p.name for p in (root / "locks").iterdir()) == ["keep"]  # /d/e's lock folders gone too
    assert cache.delete("/d/e/f") is False
    assert cache.delete("/keep") is True and list((root / "files").iterdir()) == []


def _lock_waiters(file: Path) -> int:
    """How many flock requests wait on ``file`` (the kernel's /proc/locks, "->" lines)."""
    inode = f":{os.stat(file).st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and inode in line)


def test_delete_waits_for_a_reader_to_finish(tmp_path: Path) -> None:
    """A delete takes the exclusive lock: a reader holding the shared one keeps its file until it is done."""
    cache = LocalCache(tmp_path / "cache")
    file = _add(cache, "/r", b"being read", 1)
    lock_file = tmp_path / "cache" / "locks" / "r"
    result: list[bool] = []
    with cache.locked("/r", exclusive=False):
        deleting = threading.Thread(target=lambda: result.append(cache.delete("/r")))
        deleting.start()
        while not result and _lock_waiters(lock_file) == 0:
            time.sleep(0.01)  # until the delete finishes or is seen waiting for the lock
        assert result == [] and file.read_bytes() == b"being read"
    deleting.join()
    assert result == [True] and not file.exists()


def test_entries_go_on_past_a_file_that_vanished(tmp_path: Path) -> None:
    """A name listed whose file is gone (a dangling link stands for it) is skipped, not the rest of its folder."""
    root = tmp_path / "cache"
    cache = LocalCache(root)
    folder = root / "files" / "f"
    folder.mkdir(parents=True)
    (folder / "gone").symlink_to(tmp_path / "nothing")
    count = 0
    while count < 3 or os.listdir(folder)[-1] == "gone":  # some file listed after the vanished one
        _add(cache, f"/f/n{count}", b"x" * count, 10 + count)
        count += 1
    assert sorted(cache.entries()) == sorted(
        CacheEntry(f"/f/n{i}@{10 + i}", float(10 + i), i) for i in range(count))
    assert cache.clean(1 << 40).files_before == count


def _aged(cache: LocalCache, path: str, size: int, accessed: float) -> Path:
    file = _add(cache, path, b"x" * size, 1)
    os.utime(file, (accessed, 1))
    return file


def test_clean_evicts_least_recently_used_down_to_the_kept_fraction(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    # access order is not size order nor name order: 1000 + 10 * i bytes, accessed in a shuffle
    order = [(i * 7) % 10 for i in range(10)]
    for i in range(10):
        _aged(cache, f"/c/d{i}/f", 1000 + 10 * i, 1_000_000 + order[i])
    total = sum(1000 + 10 * i for i in range(10))
    by_access = sorted(range(10), key=lambda i: order[i])
    assert cache.clean(total + 1) == CleanReport(10, total, 0, 0)  # below the bound: nothing
    dry = cache.clean(5000, dry_run=True)
    assert len(list(cache.entries())) == 10
    report = cache.clean(5000)  # down to 2500 bytes: the two most recently used are left
    gone = by_access[:8]
    assert report == dry == CleanReport(10, total, 8, sum(1000 + 10 * i for i in gone))
    assert sorted(e.name for e in cache.entries()) == sorted(f"/c/d{i}/f@1" for i in by_access[8:])
    assert sorted(p.name for p in cache.files.joinpath("c").iterdir()) == sorted(f"d{i}" for i in by_access[8:])


def test_clean_at_exactly_the_bound_and_the_kept_fraction(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    for i in range(4):
        _aged(cache, f"/e{i}", 1000, 1_000_000 + i)
    # 4000 bytes held, the bound 4000: clean to 2000 and stop there (two removed, not three)
    assert cache.clean(4000) == CleanReport(4, 4000, 2, 2000)
    assert sorted(e.name for e in cache.entries()) == ["/e2@1", "/e3@1"]
    assert cache.clean(2000, keep_fraction=0.75) == CleanReport(2, 2000, 1, 1000)
    assert [e.name for e in cache.entries()] == ["/e3@1"]


def test_clean_skips_a_file_in_use_and_counts_only_what_it_removed(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    _aged(cache, "/busy", 100, 1)
    _aged(cache, "/idle", 100, 2)
    with cache.locked("/busy", exclusive=False):
        assert cache.clean(100, keep_fraction=0) == CleanReport(2, 200, 1, 100)
    assert [e.name for e in cache.entries()] == ["/busy@1"]


def test_clean_does_not_count_a_file_another_process_removed_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file deleted by another client between clean's walk and its eviction is not counted as removed."""
    cache = LocalCache(tmp_path / "cache")
    _aged(cache, "/gone", 100, 1)
    _aged(cache, "/kept", 100, 2)
    real = cache.locked

    def locked(path: str, **kwargs: Any) -> Any:
        if path == "/gone":
            with suppress(FileNotFoundError):
                os.unlink(cache.files / "gone")  # the other client's delete, just before clean locks it
        return real(path, **kwargs)

    monkeypatch.setattr(cache, "locked", locked)
    assert cache.clean(100, keep_fraction=0) == CleanReport(2, 200, 1, 100)
    assert list(cache.entries()) == []


def test_clean_removes_a_file_that_cannot_have_a_lock(tmp_path: Path) -> None:
    """files/a/b cached while locks/a is a lock file (of /a, left by another client): evicted unlocked."""
    cache = LocalCache(tmp_path / "cache")
    _aged(cache, "/a/b", 100, 1)
    shutil.rmtree(cache.locks / "a")
    (cache.locks / "a").write_bytes(b"")
    assert cache.clean(100, keep_fraction=0) == CleanReport(1, 100, 1, 100)
    assert list(cache.files.iterdir()) == []


def test_clean_removes_stale_temporaries_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporaries older than an hour are leftovers of killed processes; a fresh one is being written."""
    cwd = tmp_path / "cwd"  # nothing outside tmp/ is touched: an old file in the working folder stays
    cwd.mkdir()
    (cwd / "old").write_bytes(b"")
    os.utime(cwd / "old", (1, 1))
    monkeypatch.chdir(cwd)
    cache = LocalCache(tmp_path / "cache")
    assert cache.clean(1) == CleanReport(0, 0, 0, 0)  # no tmp/ yet
    cache.tmp.mkdir(parents=True)
    stale, fresh, folder = cache.tmp / "add-stale", cache.tmp / "add-fresh", cache.tmp / "folder"
    for file in (stale, fresh):
        file.write_bytes(b"partial")
    folder.mkdir()
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(folder, (old, old))  # not a file: left alone, no error
    cache.clean(1)
    assert sorted(p.name for p in cache.tmp.iterdir()) == ["add-fresh", "folder"]
    assert (cwd / "old").exists()


def test_retrying_a_lock_that_cannot_be_made_ends_in_file_not_found(tmp_path: Path) -> None:
    """A lock path that stays impossible (a link into a missing folder) fails as FileNotFoundError after the retries."""
    cache = LocalCache(tmp_path / "cache")
    cache.locks.mkdir(parents=True)
    (cache.locks / "p").symlink_to(tmp_path / "missing" / "p")
    with pytest.raises(FileNotFoundError), cache.locked("/p", exclusive=True):
        pass


def _as_nobody(action: Callable[[], None]) -> None:
    """Run ``action`` in a child process as user nobody (65534); raise if it failed there."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            action()
            code = 0
        except BaseException:  # noqa: BLE001 - any failure is the child's exit code
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the action failed as nobody (traceback above)"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_cache_shared_with_another_user() -> None:
    """Files cached by root, looked up by nobody (no access time of its own to set), and a delete by
    nobody where files/ is shared but the locks folder is not (its lock file stays)."""
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own folders are root's only (0700)
    try:
        _shared_cache(LocalCache(shared / "cache"))
    finally:
        shutil.rmtree(shared)


def _shared_cache(cache: LocalCache) -> None:
    cache.root.parent.chmod(0o755)
    root = cache.root
    file = _add(cache, "/mine", b"root's", 3)
    os.utime(file, (1, 3))
    _add(cache, "/shared", b"anyone's", 4)
    (root / "files").chmod(0o777)
    (root / "locks" / "shared").chmod(0o666)
    # the same calls in this process first (root may set the access time): mutmut learns which
    # tests reach a function in-process only, not in the child below
    assert cache.lookup("/mine", 3) == file and cache.delete("/none") is False
    os.utime(file, (1, 3))

    def as_nobody() -> None:
        assert cache.lookup("/mine", 3) == file  # the access time is root's to set: left as it was
        assert cache.delete("/shared") is True

    _as_nobody(as_nobody)
    assert os.stat(file).st_atime == 1
    assert cache.version("/shared") is None and (root / "locks" / "shared").exists()


@contextmanager
def _after_lstat(destination: Path, change: Callable[[], None]) -> Iterator[None]:
    """Run ``change`` right after the next os.lstat of ``destination``: another process acting
    between replaced_whole's look at the destination and its swap."""
    real = os.lstat
    pending = [change]

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real(path, *args, **kwargs)
        if pending and Path(path) == destination:
            pending.pop()()
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "lstat", lstat)
        yield
    assert not pending, "the destination was never looked at"


def test_a_file_replaced_by_a_folder_meanwhile_stays_a_folder(tmp_path: Path) -> None:
    """As os.replace would: IsADirectoryError, the folder in place, nothing left aside."""
    destination = tmp_path / "out"
    destination.write_bytes(b"old")

    def to_folder() -> None:
        destination.unlink()
        destination.mkdir()
        (destination / "inside").write_bytes(b"kept")

    with pytest.raises(IsADirectoryError), _after_lstat(destination, to_folder), \
            replaced_whole(destination) as temporary:
        temporary.write_bytes(b"new")
    assert (destination / "inside").read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_file_removed_meanwhile_is_put_in_place(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    destination.write_bytes(b"old")
    with _after_lstat(destination, destination.unlink), replaced_whole(destination) as temporary:
        temporary.write_bytes(b"new")
    assert destination.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replacing_without_renameat2_or_by_a_relative_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative destination is found from the working folder; where the C library has no
    renameat2 (another system), os.replace does the job."""
    monkeypatch.chdir(tmp_path)
    Path("rel").write_bytes(b"old")
    with replaced_whole("rel") as temporary:
        temporary.write_bytes(b"relative")
    assert Path("rel").read_bytes() == b"relative"
    monkeypatch.setattr(cache_module, "_renameat2", lambda: None)
    with replaced_whole(tmp_path / "rel") as temporary:
        temporary.write_bytes(b"no renameat2")
    assert (tmp_path / "rel").read_bytes() == b"no renameat2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="needs root and chattr")
def test_replacing_an_immutable_file_raises_its_error_naming_it(tmp_path: Path) -> None:
    """The swap refused for a reason of its own (EPERM: chattr +i): that error, naming the destination."""
    destination = tmp_path / "frozen"
    destination.write_bytes(b"old")
    if subprocess.run(["chattr", "+i", str(destination)], check=False, capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        with pytest.raises(PermissionError) as raised, replaced_whole(destination) as temporary:
            temporary.write_bytes(b"new")
    finally:
        subprocess.run(["chattr", "-i", str(destination)], check=True)
    assert (raised.value.errno, raised.value.strerror) == (errno.EPERM, os.strerror(errno.EPERM))
    assert raised.value.filename == str(destination) and raised.value.filename2 is None
    assert destination.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["frozen"]
