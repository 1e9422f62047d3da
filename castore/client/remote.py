"""The Filetracker v2 protocol from the client side: one class, :class:`Remote`.

Speaks to ``castore serve`` and to an original Filetracker 2.x server. Against castore
(told apart by the ``castore`` key of ``GET /version``) uploads are zstd-compressed on
the client when a sample shows it pays, large ones streamed with chunked transfer
coding, and downloads accept the stored zstd frame as is. Against Filetracker the
body goes raw with a ``Content-Length``, which every Filetracker server accepts.

Connections are kept alive in a small per-process pool with ``TCP_NODELAY`` (small
requests on loopback make ~2,600 round trips/s with it, ~23 without): the HTTP layer is
:mod:`castore.client.transport`. Standard library ``http.client`` is used rather than
httpx because it made about twice as many small PUTs per second against the same server
(``shared/reference/machine-limits.md``). This module sends the requests (a stale pooled
connection retried once, redirects followed) and reads the answers as Filetracker's.

``https://`` servers are reached over TLS, their certificate and host name always verified
(:func:`~castore.client.transport.tls_context`); ``http://`` requests take no TLS code at all.

Every failure is a :class:`~castore.errors.FiletrackerError` whose message starts
``HTTP/<status>:`` when a server answered, as the Filetracker client's do.
"""

from __future__ import annotations

import http.client
import io
import os
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from ..codec import DEFAULT_LEVEL, SAMPLE_SIZE, pack_for_sending, worth_compressing, zstd_chunks
from ..content_coding import Sized, SizeMismatch, decoded
from ..digests import ChunkDigester, content_digest
from ..errors import FileNotAvailable, FiletrackerError, SourceError, VersionNotFound
from ..names import parse_name
from ..protocol import (
    CONTENT_DIGEST_HEADER,
    RETAINED_HEADER,
    VERSION_PARAMETER,
    format_version,
    parse_content_digest,
    parse_retained,
    parse_size_header,
    parse_version_date,
    quote_path,
)
from ..sizes import IO_BUFFER, WHOLE_IN_MEMORY
from .transport import (
    CA_BUNDLE_VARIABLE,
    POOL_SIZE,
    RETRYABLE,
    SMALL_UPLOAD,
    UNANSWERED,
    Connection,
    Pool,
    Response,
    Watch,
    default_port,
    no_answer,
    redact_url,
    split_location,
    tls_context,
)

if TYPE_CHECKING:  # castore.batch (and json) are imported by the calls that use them: not by cat/get
    from ..batch import BatchLimits

__all__ = ["DEFAULT_TIMEOUT", "ProgressReader", "Remote", "RemoteFile"]

DEFAULT_TIMEOUT = 300.0
"""Seconds a socket may wait for the server (Filetracker's own server allows 300)."""

MAX_REDIRECTS = 3


_ACCEPT_ENCODING = "zstd, gzip"
SMALL_DOWNLOAD = WHOLE_IN_MEMORY
"""Downloads up to this size (sent and decoded) are read, decoded and checked whole in memory."""


@dataclass(frozen=True)
class RemoteFile:
    """What the server says about a file: its current version and logical size."""

    version: int
    size: int


class _DecodedBody(io.RawIOBase):
    """The body of a GET, decoded (:mod:`castore.content_coding`), checked end to end.

    A short or undecodable body raises FiletrackerError instead of looking like a
    smaller file; a body that decodes past its size stops there. zstd bodies carry
    their frame checksum (checked by the decoder), and a castore server's
    ``Castore-Content-Digest`` is compared with the digest of what was decoded when the
    end is read, so the caller's last read raises rather than returning a wrong file
    as complete (the client writes aside and renames only after it).
    """

    def __init__(self, response: Response, name: str, size: int, max_window: int | None = None) -> None:
        super().__init__()
        self._max_window = max_window
        """The largest zstd window a frame may ask for (None: zstd's own limit, 128 MiB)."""
        self._response = response
        self._name = name
        self.size = size
        """The logical size the server announced (for progress bars)."""
        self._digest = parse_content_digest(response.header(CONTENT_DIGEST_HEADER))
        self._digester = ChunkDigester() if self._digest is not None else None
        self._encoding = (response.header("Content-Encoding") or "identity").strip().lower()
        self.replace_raw(cast(BinaryIO, response.raw))

    def replace_raw(self, raw: BinaryIO) -> None:
        """Decode ``raw`` (the response's body, or all of it already read) from the start."""
        try:
            self._content = Sized(decoded(raw, self._encoding, max_window=self._max_window), self.size)
        except SourceError as e:
            self._response.release()
            raise FiletrackerError(f"{self._name}: the server sent an unknown Content-Encoding ({e})") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._content.readinto(buffer)
        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, LineTooLong, ...
            self.close()
            raise FiletrackerError(f"{self._name}: the download was cut short or malformed ({e!r})") from None
        except SizeMismatch as e:
            self.close()
            raise FiletrackerError(
                f"{self._name}: the download has {e.delivered} bytes, the server announced {e.promised}"
            ) from None
        except SourceError as e:
            self.close()
            raise FiletrackerError(f"{self._name}: the download cannot be decoded ({e})") from None
        if n:
            if self._digester is not None:
                self._digester.update(memoryview(buffer)[:n])
            return n
        self._response.release()
        if self._digester is not None and content_digest(self._digester.digests()) != self._digest:
            raise FiletrackerError(f"{self._name}: the download does not match the server's content digest")
        return 0

    def close(self) -> None:
        if not self.closed:
            self._response.release()
        super().close()


def _small_body(response: Response, name: str, size: int, max_window: int | None) -> bytes:
    """A small GET body read whole, decoded and checked at once (as :class:`_DecodedBody` checks a stream).

    One read of the socket and one decode instead of a read, decode and digest update
    per 8 KiB: the client's cost of a 64 KiB download halves. A body sent as it is stored
    (identity) needs no decoder: :func:`_plain_body`.
    """
    if (response.header("Content-Encoding") or "identity").strip().lower() == "identity":
        return _plain_body(response, name, size)
    body = _DecodedBody(response, name, size, max_window)  # releases the response on every error
    raw = response.read_all()
    body.replace_raw(io.BytesIO(raw))
    content = bytearray(size + 1)  # one byte more: a body that decodes longer is seen
    view = memoryview(content)
    filled = 0
    while n := body.readinto(view[filled:]):
        filled += n
    del view
    return bytes(content[:filled])


def _plain_body(response: Response, name: str, size: int) -> bytes:
    """A small identity body: the bytes as they came, with the checks :class:`_DecodedBody`
    makes (its size, then the server's content digest), without a decoder's layers and copies."""
    digest = parse_content_digest(response.header(CONTENT_DIGEST_HEADER))
    content = response.read_all(size)  # FiletrackerError when cut short, malformed or over ``size``
    if len(content) != size:
        raise FiletrackerError(f"{name}: the download has {len(content)} bytes, the server announced {size}")
    if digest is not None:
        digester = ChunkDigester()
        digester.update(content)
        if content_digest(digester.digests()) != digest:
            raise FiletrackerError(f"{name}: the download does not match the server's content digest")
    return content


def _no_progress(_: int) -> None:
    pass


class ProgressReader(io.RawIOBase):
    """A binary file that reports each number of bytes read to a callback (for progress bars).

    Seeking is passed through, so a store that reads a seekable source twice still can.
    """

    def __init__(self, inner: BinaryIO, progress: Callable[[int], None]) -> None:
        super().__init__()
        self._inner = inner
        self._progress = progress
        self._position = self._reported = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self._position += n
        if self._position > self._reported:  # a second pass over the same bytes is not counted again
            self._progress(self._position - self._reported)
            self._reported = self._position
        return n

    def seekable(self) -> bool:
        return self._inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._inner.seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        super().close()


MAX_LISTED_NAME = 64 << 10
"""Longest name :meth:`Remote.iter_list` takes from a listing (castore's paths are far shorter)."""


def _check_status(response: Response, path: str, version: int | None = None) -> None:
    """Raise Filetracker's ``HTTP/<status>: <X-Exception>`` error for a non-2xx answer.

    A 404 to a request for ``version`` that names the retained versions (castore's
    :data:`~castore.protocol.RETAINED_HEADER`) carries :class:`VersionNotFound`'s line as
    its ``detail``, as an embedded store's does.
    """
    if 200 <= response.status < 300:
        return
    body = response.read_all()[:2000].decode("utf-8", "replace")
    message = f"HTTP/{response.status}: {response.header('X-Exception') or ''}\n{body}".rstrip()
    if response.status == 404:
        retained = parse_retained(response.header(RETAINED_HEADER)) if version is not None else None
        detail = str(VersionNotFound(path, version, retained)) if version is not None and retained else None
        raise FileNotAvailable(path, message, detail=detail)
    raise FiletrackerError(message, status=response.status)


def _version_of(response: Response, path: str) -> int:
    try:
        return parse_version_date(response.header("Last-Modified"))
    except ValueError:
        raise FiletrackerError(f"{path}: the server sent no valid Last-Modified") from None


def _batch_limits(advertised: object) -> BatchLimits | None:
    """A server's advertised batch limits, within this client's own (None: no batches)."""
    if not isinstance(advertised, dict):
        return None
    from ..batch import BatchLimits

    try:
        ours = BatchLimits()
        return BatchLimits(
            max_files=min(int(advertised["max_files"]), ours.max_files),
            max_bytes=min(int(advertised["max_bytes"]), ours.max_bytes),
            max_file_size=min(int(advertised["max_file_size"]), ours.max_file_size),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _stored_version(name: str) -> int:
    version = parse_name(name).version
    if version is None:
        raise ValueError(f"{name!r} has no version")
    return version


class _Upload:
    """A request body that can be produced again for a retry."""

    def __init__(self, headers: dict[str, str], make_body: Callable[[], bytes | BinaryIO | Iterable[bytes]]) -> None:
        self.headers = headers
        self.make_body = make_body


def _file_chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(IO_BUFFER):
        yield chunk


class Remote:
    """A Filetracker v2 server at ``base_url`` (a prefix path such as ``/ft`` is kept).

    Thread-safe and fork-safe; one instance reuses its connections for every call.

    Access token (``castore token create``), sent as ``Authorization: Bearer``: ``token``,
    else the one in the URL (``http://any:TOKEN@host:9999``, the password, or the user
    name when there is no password), else ``$CASTORE_TOKEN``. It is never sent to
    another server (a redirect target) and never shown in messages.

    ``https://`` (TLS): the server's certificate is always verified, against the CAs in
    ``ca_bundle`` (a PEM file), else in the file ``$CASTORE_CA_BUNDLE`` names, else the
    system's; an unreadable bundle is a ValueError. There is no option to skip the check.

    ``other_origins``: follow a redirect to another scheme, host or port (False: such a
    redirect is an error; a redirect to the same server is followed either way).
    ``keep_connections``: idle connections kept for reuse (0: each request has its own).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        zstd_level: int = DEFAULT_LEVEL,
        token: str | None = None,
        other_origins: bool = True,
        keep_connections: int = POOL_SIZE,
        ca_bundle: str | os.PathLike[str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"remote_url must be http[s]://host[:port][/prefix], not {redact_url(base_url)!r}")
        if parts.username is not None or parts.password is not None:
            token = token or unquote(parts.password or parts.username or "") or None
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        token = token or os.environ.get("CASTORE_TOKEN") or None
        if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
            raise ValueError("an access token must be printable ASCII without spaces")
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = urlunsplit(parts).rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._ca_bundle = ca_bundle or os.environ.get(CA_BUNDLE_VARIABLE) or None
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._tls = tls_context(self._ca_bundle)
        self._scheme = parts.scheme
        self._pool = Pool(host, parts.port or default_port(parts.scheme), timeout, tls=self._tls)
        self._pool.keep = keep_connections
        self._other_origins = other_origins
        self._timeout = timeout
        self._zstd_level = zstd_level
        self._castore: bool | None = None
        self._batch: BatchLimits | None = None

    def __repr__(self) -> str:
        return f"Remote({self.base_url!r})"

    def close(self) -> None:
        self._pool.close()

    def reserve_connections(self, n: int) -> None:
        """Keep up to ``n`` idle connections from now on (``n`` requests at a time are coming)."""
        self._pool.keep = max(self._pool.keep, n)

    # -- transport ---------------------------------------------------------------------

    def _send(
        self, method: str, url: str, upload: _Upload | None = None, headers: dict[str, str] | None = None,
        watch: Watch | None = None,
    ) -> Response:
        """One request on a pooled connection; a stale reused connection is retried once.

        ``watch`` is told the connection's socket once the request is sent (see :data:`Watch`).
        """
        all_headers = {**self._auth, **(headers or {}), **(upload.headers if upload else {})}
        for attempt in (1, 2):
            connection, reused = self._pool.take()
            body = upload.make_body() if upload else None
            try:
                chunked = body is not None and not isinstance(body, (bytes, io.IOBase))
                connection.request(method, url, body=body, headers=all_headers, encode_chunked=chunked)
                if watch is not None and connection.sock is not None:
                    watch(connection.sock)
                return Response(connection.getresponse(), connection, self._pool)
            except RETRYABLE as e:
                connection.close()
                if reused and attempt == 1:
                    continue
                raise no_answer(method, self.base_url, url, e) from None
            except UNANSWERED as e:
                connection.close()
                raise no_answer(method, self.base_url, url, e) from None
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # the file or generator of an upload: sent, or about to be retried
        raise AssertionError("unreachable")

    def _send_following(
        self, method: str, path: str, headers: dict[str, str] | None = None, watch: Watch | None = None,
        version: int | None = None,
    ) -> Response:
        """GET or HEAD ``/files<path>`` (``?version=``: that retained version), following the 307 a
        migrating server answers with (at most :data:`MAX_REDIRECTS` hops; to another server only
        with ``other_origins``)."""
        url = self._files_url(path) + ("" if version is None else f"?{VERSION_PARAMETER}={version}")
        response = self._send(method, url, headers=headers, watch=watch)
        for _ in range(MAX_REDIRECTS):
            location = response.header("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            response.read_all()
            parts = split_location(location, f"{path}: {self.base_url}")
            same = self._same_origin(parts)
            if same is not None:
                response = self._send(method, same, headers=headers, watch=watch)
            elif self._other_origins:
                response = self._foreign(method, parts, headers)
            else:
                raise FiletrackerError(f"{path}: {self.base_url} redirected to another server ({location[:200]!r}): "
                                       "not followed")
        return response

    def _same_origin(self, parts: SplitResult) -> str | None:
        """The request target of a redirect to this server (same scheme, host and port), else None."""
        elsewhere = (parts.scheme != self._scheme or parts.hostname != self._pool.host
                     or (parts.port or default_port(parts.scheme)) != self._pool.port)
        if ((parts.scheme or parts.netloc) and elsewhere) or not parts.path.startswith("/"):
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _foreign(self, method: str, parts: SplitResult, headers: dict[str, str] | None) -> Response:
        """One request to another server (a redirect target), on a connection of its own."""
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FiletrackerError(f"cannot follow a redirect to {parts.geturl()!r}")
        tls = None
        if parts.scheme == "https":
            try:
                tls = self._tls or tls_context(self._ca_bundle)
            except ValueError as e:
                raise FiletrackerError(str(e)) from None
        connection = Connection(parts.hostname, parts.port or default_port(parts.scheme), tls=tls,
                                timeout=self._timeout, blocksize=IO_BUFFER)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, target, headers=headers or {})
            return Response(connection.getresponse(), connection, None)
        except UNANSWERED as e:
            connection.close()
            raise no_answer(method, f"{parts.scheme}://{parts.netloc}", target, e) from None

    def _files_url(self, path: str, version: int | None = None) -> str:
        url = f"{self._prefix}/files{quote_path(path)}"
        if version is not None:
            url += "?last_modified=" + quote(format_version(version))
        return url

    def is_castore(self) -> bool:
        """Whether the server is castore (and so takes zstd and chunked uploads)."""
        if self._castore is None:
            import json

            response = self._send("GET", f"{self._prefix}/version")
            body = response.read_all()
            if response.status in (401, 403):  # the token was refused, whatever the protocol
                refusal = response.header("X-Exception") or "access denied"
                raise FiletrackerError(f"HTTP/{response.status}: {refusal}", status=response.status)
            if response.status != 200:
                raise FiletrackerError(f"HTTP/{response.status}: {self.base_url} does not speak Filetracker v2")
            try:
                info = json.loads(body)
            except ValueError:
                raise FiletrackerError(f"{self.base_url}/version is not JSON") from None
            if 2 not in info.get("protocol_versions", []):
                raise FiletrackerError(f"{self.base_url} does not speak Filetracker protocol version 2")
            features = info.get("castore")
            self._castore = features is not None
            batch = features.get("batch") if isinstance(features, dict) else None
            self._batch = _batch_limits(batch)
        return self._castore

    def batch_limits(self) -> BatchLimits | None:
        """The limits of the server's ``PUT /batch/``, or None when it has none (Filetracker, older castore)."""
        self.is_castore()
        return self._batch

    def put_batch(
        self,
        files: list[tuple[str, str | os.PathLike[str], int]],
        *,
        compress: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Upload small files, ``(path, source, version)``, in one ``PUT /batch/``; the version now stored of each.

        All or nothing: a refused batch raises FiletrackerError (its ``status`` says
        why; nothing was stored) and the caller may send the files one by one instead.
        Each file must fit the server's :meth:`batch_limits` (its size is checked again
        as it is read). One request per call: the caller splits a long list.
        """
        limits = self.batch_limits()
        if limits is None:
            raise FiletrackerError(f"HTTP/404: {self.base_url} has no batched puts", status=404)
        from ..batch import BATCH_MEDIA_TYPE, batch_body, batch_entry, digest_of, parse_answer

        entries, payloads = [], []
        for path, source, version in files:
            with open(source, "rb") as f:
                content = f.read(limits.max_file_size + 1)
            if len(content) > limits.max_file_size:
                raise FiletrackerError(
                    f"{os.fspath(source)} is over {limits.max_file_size} bytes: too large for a batch", status=413
                )
            (progress or _no_progress)(len(content))
            packed = pack_for_sending(content, self._zstd_level) if compress else None
            sent = content if packed is None else packed
            entries.append(batch_entry(path, version, len(content), digest_of(content),
                                       "identity" if packed is None else "zstd", sent))
            payloads.append(sent)
        body = b"".join(batch_body(entries, payloads))
        upload = _Upload({"Content-Length": str(len(body)), "Content-Type": BATCH_MEDIA_TYPE}, lambda: body)
        response = self._send("PUT", f"{self._prefix}/batch/", upload)
        answer = response.read_all()
        _check_status(response, f"{self.base_url}/batch/")
        try:
            names = parse_answer(answer, len(files))
            return [_stored_version(name) for name in names]
        except (ValueError, KeyError, TypeError) as e:
            raise FiletrackerError(f"{self.base_url}/batch/ answered a malformed list ({e})") from None

    # -- the protocol --------------------------------------------------------------------

    def stat(self, path: str, *, version: int | None = None, watch: Watch | None = None) -> RemoteFile:
        """The current version and logical size of ``path`` (HEAD); ``version``: of that retained version
        (castore's ``?version=``; a Filetracker server answers its current one)."""
        response = self._send_following("HEAD", path, watch=watch, version=version)
        response.read_all()
        _check_status(response, path, version)
        return RemoteFile(_version_of(response, path), self._logical_size(response, path))

    @staticmethod
    def _logical_size(response: Response, path: str) -> int:
        value = response.header("Logical-Size")
        if value is None and (response.header("Content-Encoding") or "identity") == "identity":
            value = response.header("Content-Length")
        try:
            return parse_size_header(value)  # type: ignore[arg-type]
        except (AttributeError, TypeError, ValueError):
            raise FiletrackerError(f"{path}: the server sent no Logical-Size") from None

    def open(
        self, path: str, *, version: int | None = None, max_window: int | None = None, max_size: int | None = None,
        watch: Watch | None = None,
    ) -> tuple[RemoteFile, BinaryIO]:
        """The current version of ``path`` and a stream of its (decoded, checked) content.

        ``version``: that retained version instead (castore's ``?version=``); a Filetracker
        server answers its current one, which the caller tells apart by the version returned.

        ``max_window``: the largest zstd window a frame of the answer may ask for;
        ``max_size``: a file larger than this raises FiletrackerError (status 413) before
        a byte of it is read (None: no limit).
        """
        response = self._send_following("GET", path, headers={"Accept-Encoding": _ACCEPT_ENCODING}, watch=watch,
                                        version=version)
        _check_status(response, path, version)
        try:
            info = RemoteFile(_version_of(response, path), self._logical_size(response, path))
            if max_size is not None and info.size > max_size:
                raise FiletrackerError(f"{path} is {info.size} bytes, over the limit of {max_size} bytes", status=413)
        except FiletrackerError:
            response.release()
            raise
        length = response.header("Content-Length")
        if length is not None and length.isdigit() and int(length) <= SMALL_DOWNLOAD and info.size <= SMALL_DOWNLOAD:
            return info, io.BytesIO(_small_body(response, path, info.size, max_window))
        stream = io.BufferedReader(_DecodedBody(response, path, info.size, max_window), buffer_size=IO_BUFFER)
        return info, stream

    def put(
        self,
        path: str,
        source: str | os.PathLike[str],
        version: int,
        *,
        compress: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Upload the file at ``source`` as ``path@version``; the version the server now has.

        ``progress`` is called with each number of bytes of ``source`` read for sending.
        """
        upload = self._upload_for(source, compress and self.is_castore(), progress or _no_progress)
        response = self._send("PUT", self._files_url(path, version), upload)
        response.read_all()
        _check_status(response, path)
        return _version_of(response, path)

    def _upload_for(self, source: str | os.PathLike[str], compress: bool, progress: Callable[[int], None]) -> _Upload:
        """The request for a file: small ones read once, whole (compressed when a cheap check says it
        pays, see :func:`~castore.codec.pack_for_sending`); large ones streamed from the file."""
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= SMALL_UPLOAD:
                data = f.read(size + 1)
                if len(data) != size:
                    raise FiletrackerError(f"{os.fspath(source)} changed size while being read")
                progress(size)
                headers = {"Logical-Size": str(size)}
                packed = pack_for_sending(data, self._zstd_level) if compress else None
                if packed is not None:
                    data = packed
                    headers["Content-Encoding"] = "zstd"
                headers["Content-Length"] = str(len(data))
                return _Upload(headers, lambda: data)
            sample = f.read(SAMPLE_SIZE) if compress else b""
        headers = {"Logical-Size": str(size)}

        def opened() -> BinaryIO:
            return cast(BinaryIO, ProgressReader(open(source, "rb"), progress))

        if compress and worth_compressing(sample, self._zstd_level):
            def compressed() -> Iterator[bytes]:
                with opened() as f:
                    yield from zstd_chunks(_file_chunks(f), self._zstd_level)

            return _Upload({**headers, "Content-Encoding": "zstd"}, compressed)

        return _Upload({**headers, "Content-Length": str(size)}, opened)

    def delete(self, path: str, version: int) -> None:
        """Delete ``path`` unless the server has a version newer than ``version``."""
        response = self._send("DELETE", self._files_url(path, version))
        response.read_all()
        _check_status(response, path)

    def list(
        self, subpath: str, cutoff: int | None = None, *, watch: Watch | None = None, max_bytes: int | None = None,
        max_names: int | None = None,
    ) -> list[str]:
        """Paths below the folder ``subpath``, relative to it, with versions ≤ ``cutoff``.

        ``max_bytes``, ``max_names``: a listing longer than this, or of more names, raises
        FiletrackerError before it is split into names (None: no limit).
        """
        response = self._send("GET", self._list_url(subpath, cutoff), watch=watch)
        _check_status(response, subpath)
        body = response.read_all(max_bytes)
        if max_names is not None and body.count(b"\n") + (not body.endswith(b"\n")) > max_names:  # lines (the last may lack "\n")
            raise FiletrackerError(f"the listing of {subpath} by {self.base_url} has over {max_names} names: not read")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # Filetracker 2.3.3 encodes every name it lists as UTF-8
            raise FiletrackerError(f"the listing of {subpath} by {self.base_url} is not UTF-8") from None
        # "\n" only: Filetracker 2.3.3's double-encoded names may hold U+0085, which
        # str.splitlines() would also break on
        return [line for line in text.split("\n") if line]

    def iter_list(self, subpath: str, cutoff: int | None = None) -> Iterator[str]:
        """:meth:`list` read as it arrives, :data:`IO_BUFFER` bytes at a time, in the server's
        order; a name over :data:`MAX_LISTED_NAME` bytes raises FiletrackerError."""
        response = self._send("GET", self._list_url(subpath, cutoff))
        _check_status(response, subpath)
        return self._lines(response, subpath)

    def _list_url(self, subpath: str, cutoff: int | None) -> str:
        url = f"{self._prefix}/list{quote_path(subpath)}"
        return url + "?last_modified=" + quote(format_version(int(time.time()) if cutoff is None else cutoff))

    def _lines(self, response: Response, subpath: str) -> Iterator[str]:
        rest = b""
        try:
            while True:
                try:
                    block = response.raw.read(IO_BUFFER)
                except (http.client.HTTPException, OSError) as e:
                    raise FiletrackerError(f"the listing of {subpath} by {self.base_url} was cut short ({e!r})") from None
                *complete, rest = (rest + block).split(b"\n") if block else (rest, b"")
                if len(rest) > MAX_LISTED_NAME:
                    raise FiletrackerError(f"the listing of {subpath} by {self.base_url} has a name over "
                                           f"{MAX_LISTED_NAME} bytes: not read")
                for line in complete:
                    if line:
                        try:
                            yield line.decode("utf-8")
                        except UnicodeDecodeError:  # as list(): Filetracker 2.3.3 lists every name as UTF-8
                            raise FiletrackerError(f"the listing of {subpath} by {self.base_url} is not UTF-8") from None
                if not block:
                    return
        finally:
            response.release()

