"""A drop-in for ``filetracker.client.Client`` 2.3.3, faster, on castore or Filetracker servers.

A client has an *origin* that holds the files and, optionally, a local *cache*:

* origin: a server (:class:`~castore.client.remote.Remote`, from ``remote_url``) or an embedded
  :class:`~castore.store.Store` (no server at all, for development and tests);
* cache: a :class:`~castore.client.cache.LocalCache` folder (``cache_dir``) shared by every
  process on the machine.

The cache-then-origin rule lives in one method, :meth:`Client._from_cache`, and is
Filetracker's: a *versioned* name is served from the cache when the cache has exactly
that version; an unversioned name always asks the origin (when there is one) for its
current version. Differences from Filetracker's client, all invisible to its callers:
files come out of the cache as hard links instead of copies, uploads to castore are
zstd-compressed (not gzip -9) and not hashed with SHA-256 on the client (the server
hashes what it receives), connections are kept alive, and a cache hit returns
``path@version`` (Filetracker returns ``path@version@version``). One extension: ``path@version``
reads any version a castore origin retains (Filetracker's client: only the current one); one not
retained raises FileNotAvailable whose ``detail`` names the retained ones.

Errors are :class:`~castore.errors.FiletrackerError` (``HTTP/404: ...`` and so on);
a missing file raises its subclass :class:`~castore.errors.FileNotAvailable`, which
is also a ``FileNotFoundError``. Invalid names raise ``ValueError``, as Filetracker's.
"""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypeVar, cast

from ..errors import FileNotAvailable, FiletrackerError, SourceError
from ..lazy import lazy_members
from ..names import parse_name, versioned_name
from ..sizes import IO_BUFFER, WHOLE_IN_MEMORY
from .origins import EmbeddedOrigin, Origin, is_store
from .remote import DEFAULT_TIMEOUT, ProgressReader, Remote, RemoteFile

if TYPE_CHECKING:  # castore.store pulls in SQLAlchemy, logging and the cache cost start-up: imported on use
    import logging

    from ..store import Store
    from .cache import CacheEntry, LocalCache

__all__ = [
    "AUTO", "CacheEntry", "Client", "FileNotAvailable", "FiletrackerError", "LocalCache", "Origin", "ProgressReader",
    "PutResult", "Remote", "default_cache_dir",
]

_LAZY = {"CacheEntry": "cache", "LocalCache": "cache"}
"""Members imported on first use (PEP 562): the cache (with shutil and tempfile) is not needed by a
client without one, such as ``castore --url URL cat NAME`` (issue #10: its start-up)."""


__getattr__, __dir__ = lazy_members(globals(), _LAZY)


def _log() -> logging.Logger:
    """This module's logger: ``logging`` (~5 ms) is imported by the first message, which only a cache
    that fails or a refused batch writes, not at start-up."""
    import logging

    return logging.getLogger(__name__)

T = TypeVar("T")

BATCH_FILES = 256
"""Files per ``PUT /batch/`` of :meth:`Client.put_files`, at most (several batches go at once, over ``jobs``
connections: the client prepares one while the server stores another)."""
BATCH_BYTES = WHOLE_IN_MEMORY
"""Bytes of a batch's body, about: a server keeps a body this small in memory (a larger one is spooled to
its disk), and 300 files of 64 KiB make 20 batches, enough for ``jobs`` requests to overlap (measured:
1 MiB batches were as fast as 2-8 MiB ones with 4 jobs, the machine's noise aside)."""
MANIFEST_ENTRY = 160
"""Bytes of a file's manifest entry besides its name (``"size":…,"digest":…``)."""
_BATCH_REFUSED = {400, 404, 405, 408, 409, 411, 413, 415}
"""Answers to a batch after which its files are put one by one (each then gets its own answer)."""


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final = _Auto()
"""Default for ``local_store``/``remote_store``: build one from the other arguments.

The string ``"auto"`` (Filetracker's spelling) means the same.
"""


def default_cache_dir() -> str:
    """Filetracker's default cache folder: ``$FILETRACKER_DIR``, else ``~/.filetracker-store``."""
    return os.environ.get("FILETRACKER_DIR") or os.path.expanduser("~/.filetracker-store")


@dataclass(frozen=True)
class PutResult:
    """What :meth:`Client.put_files` did with one file: stored (``stored``) or not (``error``)."""

    name: str
    """The name as given."""
    source: str
    """The local file."""
    wanted: str
    """The versioned name asked for (the batch's version when ``name`` had none)."""
    stored: str | None = None
    """The versioned name now stored: ``wanted``, or a newer version already there (kept)."""
    error: Exception | None = None
    """Why the file was not stored: a :class:`FiletrackerError`, ``ValueError`` (invalid name), ..."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def kept_newer(self) -> bool:
        """True when a newer version was already stored, so this one was not (Filetracker's rule)."""
        return self.stored is not None and self.stored != self.wanted


@dataclass(frozen=True)
class _Group:
    """Files :meth:`Client.put_files` puts together (one ``PUT /batch/``) or one alone, numbered."""

    batched: bool
    pairs: list[tuple[int, tuple[str, str | os.PathLike[str]]]]


class Client:
    """Filetracker's client API over a castore (or Filetracker) server and a local cache.

    Arguments are Filetracker's, with the same defaults: ``cache_dir`` is
    ``$FILETRACKER_DIR`` or ``~/.filetracker-store``, ``remote_url`` is
    ``$FILETRACKER_URL``; ``local_store=None`` turns the cache off, ``remote_store=None``
    makes a local-only client. ``remote_store`` may also be a :class:`Store` (an
    embedded store, no server) or a :class:`Remote`. ``lock_manager`` is accepted for
    compatibility: the cache always locks.

    Keyword-only: ``link_files`` (hand out cached files as hard links; False copies),
    ``timeout`` (seconds per socket operation), ``token`` (the server's access token;
    else the one in ``remote_url``'s userinfo, else ``$CASTORE_TOKEN``), ``ca_bundle``
    (an ``https://`` server's certificate is verified against the CAs in this PEM file,
    else in ``$CASTORE_CA_BUNDLE``'s, else the system's; verification cannot be turned off).
    """

    def __init__(
        self,
        local_store: LocalCache | _Auto | str | None = AUTO,
        remote_store: Origin | Store | _Auto | str | None = AUTO,
        lock_manager: Any = AUTO,
        cache_dir: str | os.PathLike[str] | None = None,
        remote_url: str | None = None,
        locks_dir: str | os.PathLike[str] | None = None,
        *,
        link_files: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
    ) -> None:
        if _is_auto(local_store):
            from .cache import LocalCache

            local_store = LocalCache(cache_dir or default_cache_dir(), locks_dir)
        if _is_auto(remote_store):
            url = remote_url or os.environ.get("FILETRACKER_URL")
            remote_store = Remote(url, timeout=timeout, token=token, ca_bundle=ca_bundle) if url else None
        elif is_store(remote_store):
            remote_store = EmbeddedOrigin(remote_store)
        if local_store is None and remote_store is None:
            raise ValueError("a Client needs a local cache, an origin (remote_url or a store), or both")
        assert not isinstance(local_store, (_Auto, str)) and not isinstance(remote_store, (_Auto, str))
        self.local_store: LocalCache | None = local_store
        self.remote_store: Origin | None = remote_store
        self.link_files = link_files

    def __repr__(self) -> str:
        return f"Client(local_store={self.local_store!r}, remote_store={self.remote_store!r})"

    def close(self) -> None:
        """Close idle connections (they are also closed when the client is collected)."""
        close = getattr(self.remote_store, "close", None)
        if close is not None:
            close()

    # -- the cache-then-origin rule, written once -------------------------------------

    @contextmanager
    def _cache_locked(self, path: str, *, exclusive: bool) -> Iterator[LocalCache | None]:
        """The cache, with ``path``'s lock held; None when there is no cache or it cannot hold ``path``.

        A path the cache folder cannot hold (``/a/b`` is cached as a file and ``/a/b/c``
        is asked for) is served as if there were no cache, not as an error: the cache is
        an optimisation, unless it is the only store (then its error is the call's).
        """
        cache, stack = self.local_store, ExitStack()
        if cache is not None:
            try:
                stack.enter_context(cache.locked(path, exclusive=exclusive))
            except OSError as e:
                if self.remote_store is None:
                    raise
                _log().warning("castore: the cache cannot hold %s (%s); going around it", path, e)
                cache = None
        with stack:
            yield cache

    def _from_cache(
        self, cache: LocalCache | None, path: str, version: int | None, force_refresh: bool = False
    ) -> Path | None:
        """The cached file that may serve ``path@version``, or None (lock held by the caller).

        Unversioned names are served from the cache only by a client with no origin.
        """
        if cache is None or force_refresh:
            return None
        if version is None and self.remote_store is not None:
            return None
        return cache.lookup(path, version)

    def _origin(self, path: str) -> Origin:
        if self.remote_store is None:
            raise FileNotAvailable(path)
        return self.remote_store

    def _download(self, path: str, version: int | None) -> tuple[RemoteFile, BinaryIO]:
        """Open ``path`` at the origin, its retained ``version`` when one is asked for (a Filetracker
        server keeps no older versions: it answers its current one, and this says so)."""
        info, stream = self._origin(path).open(path, version=version)
        if version is not None and info.version != version:
            stream.close()
            raise FileNotAvailable.other_version(path, version, info.version)
        return info, stream

    def _fetch_into_cache(self, cache: LocalCache, path: str, version: int | None, force_refresh: bool) -> Path:
        """A cache file of ``path@version``, downloaded unless already there (exclusive lock held)."""
        if not force_refresh:
            hit = cache.lookup(path, version) if version is not None else None
            if hit is not None:
                return hit  # another process fetched it while this one waited for the lock
        info, stream = self._download(path, version)
        with stream:
            return cache.add_stream(path, stream, info.version)

    def _via_cache(
        self, path: str, version: int | None, force_refresh: bool, use: Callable[[Path], T], *, fetch: bool
    ) -> tuple[T, int] | None:
        """``use(file)`` on the cache file of ``path@version`` and its version; None when the cache cannot serve it.

        First a hit under the shared lock; then, with ``fetch``, a download from the origin
        into the cache under the exclusive lock (``version=None``: its current version).
        ``use`` runs with the lock held. Written once for :meth:`get_file` and
        :meth:`get_stream`, with one error policy:

        * the origin's errors (:class:`FiletrackerError`: 404, a version it does not
          have, no connection, a download that fails its checks) are the call's: nothing
          of such a download reaches the cache;
        * the cache's errors (``OSError``: a folder that cannot be written, a full disk,
          a file where a folder should be) are logged and None is returned, so that the
          caller downloads directly: the cache is an optimisation, and a broken cache
          must not fail a fetch that the origin can serve (a judging machine keeps
          judging). Only a client with no origin raises them: its cache is its store.
        """
        try:
            with self._cache_locked(path, exclusive=False) as cache:
                hit = self._from_cache(cache, path, version, force_refresh)
                if hit is not None:
                    hit_version = _file_version(hit)
                    return use(hit), hit_version
            if not fetch or self.local_store is None:
                return None
            self._origin(path)
            with self._cache_locked(path, exclusive=True) as cache:
                if cache is None:
                    return None
                cached = self._fetch_into_cache(cache, path, version, force_refresh)
                cached_version = _file_version(cached)
                return use(cached), cached_version
        except FiletrackerError:
            raise  # the origin's answer (404, version mismatch, no connection, a corrupt download)
        except (OSError, SourceError) as e:
            if self.remote_store is None:
                raise  # the cache is the only store: its failure is the call's
            _log().warning("castore: the cache cannot serve %s (%s); downloading it directly", path, e)
            return None

    # -- Filetracker's API ---------------------------------------------------------------

    def get_file(
        self, name: str, save_to: str | os.PathLike[str], add_to_cache: bool = True, force_refresh: bool = False
    ) -> str:
        """Save the content of ``name`` at the local path ``save_to``; return its versioned name.

        A broken cache (unwritable, full, damaged) does not fail the call when the
        origin can serve it: the file is then downloaded directly, with a logged warning.
        """
        path, version = _split(name)

        def link(file: Path) -> None:
            assert self.local_store is not None
            self.local_store.link_to(file, save_to, link=self.link_files)

        got = self._via_cache(path, version, force_refresh, link, fetch=add_to_cache)
        if got is not None:
            return versioned_name(path, got[1])
        info, stream = self._download(path, version)
        with stream:
            _write_whole(stream, Path(save_to))
        return versioned_name(path, info.version)

    def get_stream(
        self, name: str, force_refresh: bool = False, serve_from_cache: bool = False
    ) -> tuple[BinaryIO, str]:
        """A readable binary stream of ``name`` and its versioned name.

        With ``serve_from_cache`` the file is downloaded into the cache first (an
        unversioned name costs a HEAD for its current version) and read from there; a
        broken cache does not fail the call, as in :meth:`get_file`.
        """
        path, version = _split(name)
        got = self._via_cache(path, version, force_refresh, _open_binary, fetch=False)
        if got is None and serve_from_cache and self.local_store is not None:
            wanted = version if version is not None else self._origin(path).stat(path).version
            got = self._via_cache(path, wanted, force_refresh, _open_binary, fetch=True)
        if got is not None:
            return got[0], versioned_name(path, got[1])
        info, stream = self._download(path, version)
        return stream, versioned_name(path, info.version)

    def file_version(self, name: str) -> int:
        """The current version of ``name``'s path (a version in ``name`` is ignored)."""
        path, _ = _split(name)
        if self.remote_store is not None:
            return self.remote_store.stat(path).version
        with self._cache_locked(path, exclusive=False) as cache:
            hit = self._from_cache(cache, path, None)
            if hit is None:
                raise FileNotAvailable(path)
            return _file_version(hit)

    def file_size(self, name: str, force_refresh: bool = False) -> int:
        """The size in bytes of the (uncompressed) content of ``name``."""
        path, version = _split(name)
        with self._cache_locked(path, exclusive=False) as cache:
            hit = self._from_cache(cache, path, version, force_refresh)
            if hit is not None:
                return hit.stat().st_size
        return self._origin(path).stat(path).size

    def put_file(
        self,
        name: str,
        filename: str | os.PathLike[str],
        to_local_store: bool = True,
        to_remote_store: bool = True,
        compress_hint: bool = True,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> str:
        """Store the local file ``filename`` as ``name``; return the versioned name now stored.

        Without a version in ``name`` the version is now (this machine's clock). When
        the origin already has a newer version the put is ignored and that version is
        returned, as by Filetracker. ``progress`` (keyword-only, castore's own) is called
        with each number of bytes of ``filename`` sent to the origin.
        """
        path, version = _split(name)
        local = to_local_store and self.local_store is not None
        remote = to_remote_store and self.remote_store is not None
        if not local and not remote:
            raise ValueError("put_file needs to_local_store or to_remote_store with that store configured")
        if not os.path.isfile(filename):
            raise FiletrackerError(f"{os.fspath(filename)}: no such local file")
        if version is None:
            version = int(time.time())
        stored = version
        if remote:
            assert self.remote_store is not None
            options: dict[str, Any] = {"progress": progress} if progress is not None else {}
            stored = self.remote_store.put(path, filename, version, compress=compress_hint, **options)
        if local and stored == version:
            stored = self._cache_put(path, filename, version, remote=remote)
        return versioned_name(path, stored)

    def _cache_put(self, path: str, filename: str | os.PathLike[str], version: int, *, remote: bool) -> int:
        """Add a file just stored (or to be stored only here) to the cache; the version now current."""
        try:
            with self._cache_locked(path, exclusive=True) as cache:
                if cache is not None:
                    cached = cache.add_file(path, filename, version)
                    if not remote:
                        return _file_version(cached)  # a newer cached version was kept
        except OSError as e:
            if not remote:
                raise  # the cache is the only store: its failure is the put's failure
            _log().warning("castore: stored %s but could not cache it (%s)", path, e)
        return version

    def put_files(
        self,
        pairs: Iterable[tuple[str, str | os.PathLike[str]]],
        *,
        jobs: int = 4,
        to_local_store: bool = True,
        to_remote_store: bool = True,
        compress_hint: bool = True,
        progress: Callable[[int], None] | None = None,
        on_result: Callable[[PutResult], None] | None = None,
    ) -> list[PutResult]:
        """Store many local files, ``(name, filename)`` pairs, ``jobs`` at a time; one result per pair, in order.

        Each :class:`PutResult` holds the versioned name now stored, or the error that
        file met: one bad file (missing, invalid name, refused by the server) does not
        stop the others or lose their results, and a server that goes away mid-batch
        gives each file left its own error (nothing half-sent is recorded by a server:
        a put is stored whole or not at all). Names without a version share one version
        for the batch (now). To a castore server that serves them, runs of small files
        (up to 1 MiB each) go in batched requests (``PUT /batch/``, about
        :data:`BATCH_BYTES` and up to :data:`BATCH_FILES` files each, stored with one commit); larger files, and every
        file to any other server, go one request each. A batch the server refuses as a
        whole (over its limits, not served) is sent again one file at a time, so each
        file gets its own answer. Requests go over at most ``jobs`` kept-alive connections
        (threads: the time is spent waiting for the server); ``jobs=1`` sends them one
        after another in the calling thread, in order. ``progress`` is :meth:`put_file`'s and
        ``on_result`` gets each file's result as soon as it is known, both called from
        those threads. An exception from ``on_result`` (e.g. to stop at a refused token), or
        Ctrl-C, stops the call: no other file is started, those in flight finish (each stored
        whole or not at all), and it propagates. The other options are :meth:`put_file`'s.
        """
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        now = int(time.time())
        reserve = getattr(self.remote_store, "reserve_connections", None)
        if reserve is not None and to_remote_store:
            reserve(jobs)

        def report(result: PutResult) -> PutResult:
            if on_result is not None:
                on_result(result)
            return result

        def put_one(pair: tuple[str, str | os.PathLike[str]]) -> PutResult:
            name, filename = pair
            wanted = name
            try:
                path, version = _split(name)
                wanted = versioned_name(path, version if version is not None else now)
                stored = self.put_file(
                    wanted, filename, to_local_store, to_remote_store, compress_hint, progress=progress
                )
            except Exception as e:  # noqa: BLE001 - every file's own failure is its result
                return report(PutResult(name, os.fspath(filename), wanted, error=e))
            return report(PutResult(name, os.fspath(filename), wanted, stored=stored))

        def put_group(group: _Group) -> list[tuple[int, PutResult]]:
            indexes = [index for index, _ in group.pairs]
            pairs = [pair for _, pair in group.pairs]
            if not group.batched:
                return list(zip(indexes, map(put_one, pairs)))
            done = self._put_batch(pairs, now, to_local_store, compress_hint, progress, report, put_one)
            return list(zip(indexes, done))

        groups = self._groups(pairs) if to_remote_store else (_Group(False, [p]) for p in enumerate(pairs))
        if jobs == 1:
            done = [put_group(group) for group in groups]  # in order, each group done before the next is read
        else:
            from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait  # here: 1.5 ms to load

            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="castore-put") as pool:
                futures = [pool.submit(put_group, group) for group in groups]
                try:
                    wait(futures, return_when=FIRST_EXCEPTION)
                    done = [future.result() for future in futures]
                except BaseException:  # on_result stopped it, or Ctrl-C: start no other file, finish those in flight
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        return [result for _, result in sorted((pair for group in done for pair in group), key=lambda p: p[0])]

    def _groups(self, pairs: Iterable[tuple[str, str | os.PathLike[str]]]) -> Iterator[_Group]:
        """``pairs`` (numbered) grouped for :meth:`put_files`, in order: runs of small files in batches, others alone.

        Batches go to a server that serves ``PUT /batch/`` (castore's own); to any other
        origin every file goes alone, and so does a file that is large, missing or badly
        named (its own put then says why). Read lazily: a group is made when the pairs
        after it are not read yet.
        """
        try:
            limits = getattr(self.remote_store, "batch_limits", lambda: None)()
        except FiletrackerError:
            limits = None  # the server cannot be asked: each file's own put says why
        batch: list[tuple[int, tuple[str, str | os.PathLike[str]]]] = []
        batch_bytes = 0
        if limits is not None:
            most_files = min(limits.max_files, BATCH_FILES)
            most_bytes = min(limits.max_bytes, BATCH_BYTES)
        for numbered in enumerate(pairs):
            name, filename = numbered[1]
            size = None
            if limits is not None:
                try:
                    _split(name)
                    status = os.stat(filename)
                    if stat.S_ISREG(status.st_mode) and status.st_size <= limits.max_file_size:
                        size = status.st_size + MANIFEST_ENTRY + len(name.encode())  # its share of the body
                except (ValueError, OSError):
                    pass
            if size is None:
                if batch:
                    yield _Group(True, batch)
                    batch, batch_bytes = [], 0
                yield _Group(False, [numbered])
                continue
            if batch and (len(batch) >= most_files or batch_bytes + size > most_bytes):
                yield _Group(True, batch)
                batch, batch_bytes = [], 0
            batch.append(numbered)
            batch_bytes += size
        if batch:
            yield _Group(True, batch)

    def _put_batch(
        self,
        pairs: list[tuple[str, str | os.PathLike[str]]],
        now: int,
        to_local_store: bool,
        compress_hint: bool,
        progress: Callable[[int], None] | None,
        report: Callable[[PutResult], PutResult],
        put_one: Callable[[tuple[str, str | os.PathLike[str]]], PutResult],
    ) -> list[PutResult]:
        """One ``PUT /batch/`` of small files; one by one instead when the server refuses the batch."""
        remote = cast(Remote, self.remote_store)
        targets = []
        for name, filename in pairs:
            path, version = _split(name)
            targets.append((path, filename, version if version is not None else now))
        try:
            stored = remote.put_batch(targets, compress=compress_hint, progress=progress)
        except FiletrackerError as e:
            if e.status in _BATCH_REFUSED:  # not served, or over limits this client did not know: one by one
                _log().info("castore: a batch was refused (%s); putting its files one by one", e)
                return [put_one(pair) for pair in pairs]
            return [
                report(PutResult(name, os.fspath(filename), versioned_name(path, version),
                                 error=FiletrackerError(f"{path}: {e}", status=e.status)))
                for (name, filename), (path, _, version) in zip(pairs, targets)
            ]
        results = []
        for (name, filename), (path, _, version), current in zip(pairs, targets, stored):
            if to_local_store and self.local_store is not None and current == version:
                current = self._cache_put(path, filename, version, remote=True)
            results.append(report(PutResult(name, os.fspath(filename), versioned_name(path, version),
                                            stored=versioned_name(path, current))))
        return results

    def delete_file(self, name: str) -> None:
        """Delete ``name`` (only if not newer than its version, when it has one)."""
        path, version = _split(name)
        removed = False
        if self.local_store is not None:
            try:
                removed = self.local_store.delete(path, version)
            except OSError as e:
                if self.remote_store is None:
                    raise
                _log().warning("castore: could not remove %s from the cache (%s)", path, e)
        if self.remote_store is not None:
            self.remote_store.delete(path, version if version is not None else int(time.time()))
        elif not removed:
            raise FileNotAvailable(path)

    def list_local_files(self) -> list[CacheEntry]:
        """Every file in the local cache: ``(versioned name, mtime, size)`` entries."""
        return list(self.local_store.entries()) if self.local_store is not None else []

    def list_remote_files(
        self, version_cutoff_timestamp: int | None = None, subpath: str = "", absolute_paths: bool = False
    ) -> list[str]:
        """Paths of the origin's files below ``subpath`` (no leading ``/``), versions ≤ the cutoff.

        Relative to ``subpath``, or to the root with ``absolute_paths``.
        """
        if self.remote_store is None:
            return []
        return list(_listed(self.remote_store.list, version_cutoff_timestamp, subpath, absolute_paths))

    def iter_remote_files(
        self, version_cutoff_timestamp: int | None = None, subpath: str = "", absolute_paths: bool = False
    ) -> Iterator[str]:
        """:meth:`list_remote_files` read as it arrives, in the origin's order (castore's: path
        order): memory holds a block of the answer, however many names the folder has.

        A folder that is not one raises here, before any name is yielded.
        """
        if self.remote_store is None:
            return iter(())
        return _listed(self.remote_store.iter_list, version_cutoff_timestamp, subpath, absolute_paths)


def _listed(
    lister: Callable[[str, int | None], Iterable[str]], cutoff: int | None, subpath: str, absolute_paths: bool
) -> Iterator[str]:
    """The names ``lister(subpath, cutoff)`` gives, relative to ``subpath`` or (``absolute_paths``) the root."""
    if subpath and not subpath.startswith("/"):
        raise FiletrackerError(f"HTTP/400: subpath must start with '/', not {subpath!r}", status=400)
    paths = iter(lister(subpath, cutoff))
    prefix = subpath.strip("/") + "/" if absolute_paths and subpath.strip("/") else ""
    return (prefix + path for path in paths) if prefix else paths


def _is_auto(value: object) -> bool:
    return value is AUTO or value == "auto"


def _split(name: str) -> tuple[str, int | None]:
    parsed = parse_name(name)
    return parsed.path, parsed.version


def _open_binary(file: Path) -> BinaryIO:
    return open(file, "rb")


def _file_version(file: Path) -> int:
    return int(file.stat().st_mtime)


def _write_whole(stream: BinaryIO, destination: Path) -> None:
    """Write ``stream`` to ``destination``, replacing it only once complete.

    A small download is whole in memory already (``io.BytesIO``): written with one
    system call, without a buffered file object and a copy loop.
    """
    import shutil

    from .cache import replaced_whole

    with replaced_whole(destination) as temporary:
        if isinstance(stream, io.BytesIO):
            with stream.getbuffer() as content:
                _write_bytes(temporary, content)
            return
        with open(temporary, "wb") as out:
            shutil.copyfileobj(stream, out, IO_BUFFER)


def _write_bytes(file: Path, content: memoryview) -> None:
    """Create ``file`` (as ``open(file, "wb")`` would) holding ``content``."""
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        while content:
            content = content[os.write(fd, content):]
    finally:
        os.close(fd)
