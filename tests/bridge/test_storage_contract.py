"""The storage contract, with each client a project may configure: embedded, in memory, remote."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.db.migrations.writer import MigrationWriter
from django.test import override_settings
from django.utils import timezone
from filetracker.client import FiletrackerError as FiletrackerClientError

from django_bridge.filename import FiletrackerFilename
from django_bridge.storage import VERSION_SUFFIX_MAX, FiletrackerStorage, UnsafeName, is_missing

from ..server_process import castore_server


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("django-remote") / "store") as url:
        yield url


def _storage_of(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FiletrackerStorage]:
    """The default storage, with FILETRACKER_CLIENT_FACTORY set for one kind of client."""
    factories: dict[str, dict[str, Any]] = {
        "memory": {"FILETRACKER_CLIENT_FACTORY": "django_bridge.client.memory_store_factory"},
        "embedded": {"FILETRACKER_CLIENT_FACTORY": "django_bridge.client.local_store_factory",
                     "CASTORE_ROOT": str(tmp_path / "root")},
        "filetracker-dummy": {"FILETRACKER_CLIENT_FACTORY": "filetracker.client.dummy.DummyClient"},
    }
    if kind == "remote":
        url = request.getfixturevalue("server_url")
        factories["remote"] = {"FILETRACKER_CLIENT_FACTORY": "django_bridge.client.remote_storage_factory",
                               "FILETRACKER_URL": url, "FILETRACKER_CACHE_ROOT": str(tmp_path / "cache")}
    with override_settings(**factories[kind]):
        yield FiletrackerStorage(prefix=f"/contract{tmp_path.name}")


@pytest.fixture(params=["memory", "embedded", "remote", "filetracker-dummy"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FiletrackerStorage]:
    """Each client a project may configure, Filetracker's in-memory DummyClient included."""
    yield from _storage_of(request.param, request, tmp_path)


@pytest.fixture(params=["memory", "embedded", "remote"])
def castore_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FiletrackerStorage]:
    """castore's own clients (Filetracker's dummy client cannot list, and has its own errors)."""
    yield from _storage_of(request.param, request, tmp_path)


def test_save_open_exists_size_delete(storage: FiletrackerStorage) -> None:
    name = storage.save("my/path", ContentFile(b"eloziom"))
    assert isinstance(name, FiletrackerFilename) and name == "my/path" and name.version is not None
    assert storage.exists("my/path") and storage.exists(name.versioned_name)
    assert not storage.exists("my/other")
    with storage.open("my/path", "rb") as f:
        assert f.read() == b"eloziom"
    assert storage.open("my/path").size == 7
    assert storage.size("my/path") == 7
    storage.delete("my/path")
    assert not storage.exists("my/path")
    # castore's clients: FileNotFoundError; Filetracker's: its own error, naming the path
    with pytest.raises((FileNotFoundError, FiletrackerClientError), match="my/path"):
        storage.open("my/path", "rb").read()
    storage.delete("my/path")  # deleting a missing file is a no-op, as in Django's storages


def test_missing_file_is_file_not_found_with_castore_clients(castore_storage: FiletrackerStorage) -> None:
    with pytest.raises(FileNotFoundError):
        castore_storage.open("nothing/here")


def test_times_are_aware(storage: FiletrackerStorage) -> None:
    storage.save("t", ContentFile(b"x"))
    for method in (storage.get_modified_time, storage.get_created_time, storage.get_accessed_time):
        when = method("t")
        assert timezone.is_aware(when) and abs((timezone.now() - when).total_seconds()) < 30


def test_taken_names_get_a_suffix_and_reuploads_are_deduplicated(storage: FiletrackerStorage) -> None:
    first = storage.save("dir/a.tar.gz", ContentFile(b"same"))
    second = storage.save("dir/a.tar.gz", ContentFile(b"same"))
    assert first == "dir/a.tar.gz" and second != first and second.startswith("dir/a_")
    assert second.endswith(".tar.gz")
    assert storage.open(second).read() == b"same"


def test_listdir(castore_storage: FiletrackerStorage) -> None:
    storage = castore_storage
    for name in ("l/a.txt", "l/b.txt", "l/sub/c.txt", "l/sub/deeper/d.txt"):
        storage.save(name, ContentFile(name.encode()))
    assert storage.listdir("l") == (["sub"], ["a.txt", "b.txt"])
    assert storage.listdir("l/sub") == (["deeper"], ["c.txt"])
    assert storage.listdir("") == (["l"], [])
    with pytest.raises(FileNotFoundError):
        storage.listdir("nowhere")


@pytest.mark.parametrize("name", ["/absolute/path", "../x", "a/../../x", "a/../b", "a\0b", "", ".", "./", "a@1/b"])
def test_unsafe_names_never_reach_the_store(storage: FiletrackerStorage, name: str) -> None:
    with pytest.raises((ValueError, SuspiciousFileOperation)):
        storage.save(name, ContentFile(b"evil"))
    with pytest.raises((ValueError, SuspiciousFileOperation)):
        storage.open(name)
    with pytest.raises((ValueError, SuspiciousFileOperation)):
        storage.exists(name)


@pytest.mark.parametrize(("given", "stored"), [("d/./e.txt", "d/e.txt"), ("f//g.txt", "f/g.txt"),
                                               ("./h", "h"), ("i/", "i"), ("j\\.\\k", "j/k")])
def test_dot_and_empty_segments_are_dropped_as_oioioi_s_normpath_does(
    storage: FiletrackerStorage, given: str, stored: str
) -> None:
    """OIOIOI's storage passes names through ``os.path.normpath``: so does this one, for ``.``
    and empty segments (``..`` stays refused, above)."""
    name = storage.save(given, ContentFile(b"n"))
    assert name == stored and storage.exists(stored) and storage.exists(given)
    with storage.open(given) as f:
        assert f.read() == b"n"
    assert storage.url(given) == f"/file/{stored}/"


def test_unsafe_name_is_both_kinds_of_error() -> None:
    assert issubclass(UnsafeName, ValueError) and issubclass(UnsafeName, SuspiciousFileOperation)


def test_writing_modes_and_local_paths_are_refused(storage: FiletrackerStorage) -> None:
    storage.save("w", ContentFile(b"x"))
    for mode in ("w", "wb", "r+b", "a", "x"):
        with pytest.raises(ValueError):
            storage.open("w", mode)
    with pytest.raises(NotImplementedError):
        storage.path("w")


def test_url_points_at_the_raw_file_view(storage: FiletrackerStorage) -> None:
    name = storage.save("u/report.txt", ContentFile(b"x"))
    assert storage.url(name) == f"/file/{name.versioned_name}/"
    assert storage.url("u/report.txt") == "/file/u/report.txt/"


def test_prefix_must_be_absolute() -> None:
    with pytest.raises(ValueError):
        FiletrackerStorage(prefix="relative")


def test_storage_deconstructs_for_migrations() -> None:
    storage = FiletrackerStorage(prefix="/ft")
    path, _args, kwargs = storage.deconstruct()
    assert path == "django_bridge.storage.FiletrackerStorage" and kwargs == {"prefix": "/ft"}
    code, imports = MigrationWriter.serialize(storage)
    assert code == "django_bridge.storage.FiletrackerStorage(prefix='/ft')"
    assert "import django_bridge.storage" in imports


@pytest.mark.django_db
def test_storages_options_configure_the_default_storage() -> None:
    from django.core.files.storage import default_storage

    from .conftest import embedded_store

    storages = {"default": {"BACKEND": "django_bridge.storage.FiletrackerStorage", "OPTIONS": {"prefix": "/ft"}}}
    with override_settings(STORAGES=storages):
        assert default_storage.prefix == "/ft"
        name = default_storage.save("a/b.txt", ContentFile(b"x"))
        assert embedded_store().read_bytes(f"/ft/{name.versioned_name}") == b"x"


def test_read_using_cache(castore_storage: FiletrackerStorage) -> None:
    name = castore_storage.save("cached/statement.pdf", ContentFile(b"%PDF"))
    with castore_storage.read_using_cache(name) as f:
        assert f.read() == b"%PDF" and f.size == 4


def test_storage_names_map_to_store_paths_below_the_prefix() -> None:
    """Relative names go below the prefix (with or without its trailing ``/``); ``\\`` is a
    folder separator; a version, in the name or a FiletrackerFilename, is kept."""
    for prefix in ("/p", "/p/"):
        storage = FiletrackerStorage(prefix=prefix)
        assert storage._make_filetracker_path("a/b") == "/p/a/b"
        assert storage._make_filetracker_path("a\\b") == "/p/a/b"
        assert storage._make_filetracker_path("a..b/c.") == "/p/a..b/c."
        assert storage._make_filetracker_path("a/b@123") == "/p/a/b@123"
        assert storage._make_filetracker_path("a/./b@123") == "/p/a/b@123"
        assert storage._make_filetracker_path("a//b/") == "/p/a/b"
        assert storage._make_filetracker_path(FiletrackerFilename("a/b@123")) == "/p/a/b@123"
        assert storage._cut_prefix("/p/a/b") == "a/b"
    assert FiletrackerStorage(prefix="/")._make_filetracker_path("a") == "/a"
    with pytest.raises(ValueError, match="outside of storage prefix"):
        FiletrackerStorage(prefix="/p")._cut_prefix("/pq/a")


@pytest.mark.parametrize(("name", "why"), [
    ("/a", "does not support absolute paths"), ("\\a", "does not support absolute paths"),
    ("/a@12", "does not support absolute paths"), ("..", "path traversal"), ("a/..", "path traversal"),
    ("a\\..\\b", "path traversal"), ("a/../b@5", "path traversal"), (".", "not a valid file name"),
    ("./", "not a valid file name"), ("a\0b", "not a valid file name"), ("", "not a valid file name"),
    ("a@1/b", "not a valid file name"),
])
def test_each_unsafe_name_is_refused_for_its_reason(name: str, why: str) -> None:
    """The refusal says which rule the name broke, and names it."""
    with pytest.raises(UnsafeName, match=why) as refused:
        FiletrackerStorage(prefix="/p")._make_filetracker_path(name)
    assert repr(name.replace("\\", "/")) in str(refused.value) or repr(name) in str(refused.value)
    if why.startswith("does not"):
        with pytest.raises(UnsafeName, match="^FiletrackerStorage does not support absolute paths: "):
            FiletrackerStorage(prefix="/p")._make_filetracker_path(name)
    with pytest.raises(UnsafeName, match=why):  # by save too, before Django's own name checks
        FiletrackerStorage(prefix="/p", client=object()).save(name, ContentFile(b"x"))


def test_which_client_errors_mean_a_missing_file() -> None:
    """Not found, from castore's clients or Filetracker's; any other error (a server down) is not."""
    from castore.errors import FiletrackerError

    assert is_missing(FileNotFoundError("/a")) and is_missing(KeyError("/a"))
    for text in ("HTTP 404: Not Found", "File /a not available"):
        assert is_missing(FiletrackerClientError(text)) and is_missing(FiletrackerError(text))
    for error in (FiletrackerClientError("HTTP 500"), FiletrackerError("connection refused"),
                  ValueError("404 not available"), OSError("404")):
        assert not is_missing(error), error


def test_a_server_that_is_down_is_not_a_free_name(tmp_path: Path) -> None:
    """exists and delete let a connection error through: a down server never looks like a missing file."""
    from castore.errors import FiletrackerError

    from ..server_process import free_port

    down = {"FILETRACKER_CLIENT_FACTORY": "django_bridge.client.remote_storage_factory",
            "FILETRACKER_URL": f"http://127.0.0.1:{free_port()}", "FILETRACKER_CACHE_ROOT": str(tmp_path)}
    with override_settings(**down):
        storage = FiletrackerStorage(prefix="/p")
        with pytest.raises(FiletrackerError, match="Connection refused"):
            storage.exists("a")
        with pytest.raises(FiletrackerError, match="Connection refused"):
            storage.delete("a")


def test_exists_with_a_version_is_that_version_only(castore_storage: FiletrackerStorage) -> None:
    name = castore_storage.save("v/a", ContentFile(b"x"))
    assert name.version is not None
    assert castore_storage.exists(f"v/a@{name.version}")
    assert not castore_storage.exists(f"v/a@{name.version + 1}") and not castore_storage.exists(f"v/a@{name.version - 1}")


def test_times_are_the_stored_version(castore_storage: FiletrackerStorage) -> None:
    name = castore_storage.save("t/a", ContentFile(b"x"))
    assert name.version is not None
    when = datetime.datetime.fromtimestamp(name.version, tz=timezone.get_current_timezone())
    for method in (castore_storage.get_modified_time, castore_storage.get_created_time,
                   castore_storage.get_accessed_time):
        assert method("t/a") == when and method("t/a").tzinfo == when.tzinfo


def test_max_length_keeps_room_for_the_version(storage: FiletrackerStorage) -> None:
    """A name is cut to leave room for ``@version`` in the column; a bound with no room is refused."""
    for too_small in (VERSION_SUFFIX_MAX, VERSION_SUFFIX_MAX - 1, 0):
        with pytest.raises(SuspiciousFileOperation, match=f"^max_length {too_small} leaves no room"):
            storage.save("m/a", ContentFile(b"x"), max_length=too_small)
    assert storage.save("b", ContentFile(b"x"), max_length=VERSION_SUFFIX_MAX + 1) == "b"  # room for one
    bound = VERSION_SUFFIX_MAX + 20
    first = storage.save("m/abcdefghijkl.txt", ContentFile(b"x"), max_length=bound)  # 18 characters
    assert first == "m/abcdefghijkl.txt"
    second = storage.save(first, ContentFile(b"y"), max_length=bound)  # taken: a suffix, cut to fit
    assert second != first and len(second) == 20 and second.endswith(".txt")
    assert len(second.versioned_name) <= bound


def test_save_replacing_keeps_the_name_unless_the_store_has_a_newer_version(
        castore_storage: FiletrackerStorage) -> None:
    storage = castore_storage
    first = storage.save_replacing("r/a", ContentFile(b"one"))
    again = storage.save_replacing("r/a", ContentFile(b"two"))
    assert first == again == "r/a" and storage.open("r/a").read() == b"two"
    with pytest.raises(ValueError, match="unversioned name"):
        storage.save_replacing("r/a@5", ContentFile(b"x"))
    future = int(time.time()) + 3600
    storage.client.put_file(storage._make_filetracker_path(f"r/b@{future}"), _file(storage, b"newer"),
                            to_local_store=False)
    kept = storage.save_replacing("r/b", ContentFile(b"older"))
    assert kept != "r/b" and kept.startswith("r/b_") and storage.open(kept).read() == b"older"
    assert storage.open("r/b").read() == b"newer"


def _file(storage: FiletrackerStorage, data: bytes) -> str:
    """A local file holding ``data`` (for a client's put_file)."""
    import tempfile

    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    return f.name


def test_urls_reprs_and_names_with_no_url(storage: FiletrackerStorage) -> None:
    with pytest.raises(ValueError, match="^a file without a name has no URL$"):
        storage.url(None)
    with pytest.raises(UnsafeName):
        storage.url("../x")
    assert repr(FiletrackerStorage(prefix="/ft")) == "FiletrackerStorage(prefix='/ft')"
    with pytest.raises(ValueError, match="^FiletrackerStorage prefix must start with /, not 5$"):
        FiletrackerStorage(prefix=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^FiletrackerStorage\.open does not support writing\. Use save\(\)\.$"):
        storage.open("w", "ab")
    saved = storage.save("w", ContentFile(b"x"))
    with storage.open(saved.versioned_name) as f:
        assert f.name == "w" and f.name.versioned_name == saved.versioned_name and f.read() == b"x"


def test_listdir_of_the_root_prefix(tmp_path: Path) -> None:
    with override_settings(FILETRACKER_CLIENT_FACTORY="django_bridge.client.local_store_factory",
                           CASTORE_ROOT=str(tmp_path / "root")):
        storage = FiletrackerStorage(prefix="/")
        storage.save("top/a", ContentFile(b"a"))
        storage.save("b", ContentFile(b"b"))
        assert storage.listdir("") == (["top"], ["b"]) == storage.listdir("/")
        assert storage.listdir("top") == ([], ["a"])


def test_read_using_cache_downloads_into_the_client_cache(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """With a remote server, the file is read from the client's cache folder (put there first)."""
    for storage in _storage_of("remote", request, tmp_path):
        name = storage.save("cached/a.pdf", ContentFile(b"%PDF cached"))
        cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.read_bytes() == b"%PDF cached"]
        assert cached == []  # a save does not fill the cache (to_local_store=False)
        with storage.read_using_cache(name.versioned_name) as f:
            assert f.read() == b"%PDF cached"
            assert f.name == "cached/a.pdf" and f.name.versioned_name == name.versioned_name
        cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.read_bytes() == b"%PDF cached"]
        assert len(cached) == 1


def test_listdir_of_odd_folder_names_and_its_refusal(tmp_path: Path) -> None:
    """A folder named X, a path given with slashes around it, a prefix with a trailing slash."""
    with override_settings(FILETRACKER_CLIENT_FACTORY="django_bridge.client.local_store_factory",
                           CASTORE_ROOT=str(tmp_path / "root")):
        storage = FiletrackerStorage(prefix="/boX/")
        for name in ("X/a", "X/Y/b", "c"):
            storage.save(name, ContentFile(b"x"))
        assert storage.listdir("") == (["X"], ["c"])
        assert storage.listdir("X") == storage.listdir("/X/") == (["Y"], ["a"])
        with pytest.raises(FileNotFoundError, match=r"^no folder 'nowhere' in FiletrackerStorage\(prefix='/boX/'\): "):
            storage.listdir("nowhere")
        with pytest.raises(NotImplementedError, match="^File is in castore, cannot get its local path$"):
            storage.path("c")
        spaced = FiletrackerStorage(prefix="/sp ")  # a folder name may end in a space
        spaced.save("d", ContentFile(b"x"))
        assert spaced.listdir("") == ([], ["d"])


def test_a_storage_given_a_client_uses_that_client() -> None:
    """``client=``: that client's store, not the settings' default one."""
    from django_bridge.client import get_client, memory_store_factory

    from .conftest import embedded_store

    own = memory_store_factory()
    storage = FiletrackerStorage(prefix="/own", client=own)
    assert storage.client is own
    name = storage.save("a", ContentFile(b"mine"))
    assert embedded_store(own).read_bytes(f"/own/{name.versioned_name}") == b"mine"
    assert not embedded_store(get_client()).exists("/own/a")


def test_saving_a_file_already_stored_names_it_and_uploads_nothing(castore_storage: FiletrackerStorage) -> None:
    """A FileInFiletracker is saved as its own name (its version kept), whatever name it is given,
    also when its ``name`` was set to a plain string afterwards."""
    from django_bridge.utils import filetracker_to_django_file

    storage = castore_storage
    stored = storage.save("s/a", ContentFile(b"x"))
    already = filetracker_to_django_file(f"{storage.prefix}/{stored.versioned_name}", storage)
    saved = storage.save("other/name", already)
    assert saved == "s/a" and saved.versioned_name == stored.versioned_name
    already.name = "s/a"  # a plain str
    assert storage.save(None, already).versioned_name == "s/a"
    assert storage.listdir("s") == ([], ["a"])  # nothing uploaded


def test_save_takes_the_content_name_and_plain_file_objects(storage: FiletrackerStorage) -> None:
    """No name: the content's own; a plain file object (no ``chunks``) is read as a File."""
    import io

    assert storage.save(None, ContentFile(b"named", name="n/a.txt")) == "n/a.txt"
    assert storage.open("n/a.txt").read() == b"named"
    assert storage.save("n/raw", io.BytesIO(b"raw bytes")) == "n/raw"
    assert storage.open("n/raw").read() == b"raw bytes"
