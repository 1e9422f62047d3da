"""castore's client (cached and not) and Filetracker's, mixed, against a dict model over real HTTP.

Hypothesis drives puts, deletes and reads through three clients of one ``castore serve``;
the server must behave as Filetracker's rules say (newest version wins, an equal version
replaces, a delete with an older version is ignored), whichever client wrote last.
A versioned read (``path@version``) by castore's clients gets any retained version (issue #21:
the model keeps every version since the path's last delete; the default retention of 10 is
never reached here), and a clear error naming the retained ones otherwise; through the cached
client it may be answered from its cache: it must then return a content that was stored under
that exact version at some point. Filetracker's client, as its protocol, reads only the current one.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filetracker.client import Client as FiletrackerClient
from filetracker.client import FiletrackerError as FiletrackerClientError
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from castore.client import Client
from castore.errors import FileNotAvailable, FiletrackerError

from ..server_process import castore_server

NAMES = st.sampled_from(["a", "b", "d", "d/c", "d/e/f"])  # "d" is a file or a folder, as they come
VERSIONS = st.integers(min_value=1, max_value=6)
CONTENTS = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"shared", b"1 2 3\n" * 40_000, bytes(range(256)) * 800]),  # > 128 KiB: blob files
)
CLIENTS = st.sampled_from(["cached", "remote", "filetracker"])

_server: dict[str, str] = {}
_examples = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with castore_server(tmp_path_factory.mktemp("model") / "store") as url:
        _server["url"] = url
        yield
    _server.clear()


class ClientsModel(RuleBasedStateMachine):
    """Model: path -> (current version, content); its retained versions; every content ever stored per version."""

    def __init__(self) -> None:
        super().__init__()
        url = _server["url"]
        self.work = Path(tempfile.mkdtemp(prefix="castore-clients-"))
        self.prefix = f"/model{next(_examples)}"
        self.clients: dict[str, Any] = {
            "cached": Client(cache_dir=self.work / "cache", remote_url=url),
            "remote": Client(local_store=None, remote_url=url),
            "filetracker": FiletrackerClient(local_store=None, remote_url=url),
        }
        self.model: dict[str, tuple[int, bytes]] = {}
        self.retained: dict[str, dict[int, bytes]] = {}
        self.ever: dict[tuple[str, int], set[bytes]] = {}
        self.sources = itertools.count()

    def teardown(self) -> None:
        shutil.rmtree(self.work)

    def call(self, client: str, method: str, *args: Any, **kwargs: Any) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # Filetracker's client prints on first use
            return getattr(self.clients[client], method)(*args, **kwargs)

    @rule(client=CLIENTS, name=NAMES, version=VERSIONS, content=CONTENTS)
    def put(self, client: str, name: str, version: int, content: bytes) -> None:
        path = f"{self.prefix}/{name}"
        source = self.work / f"source{next(self.sources)}"
        source.write_bytes(content)
        current = self.model.get(path)
        if current is None and any(p.startswith(path + "/") or path.startswith(p + "/") for p in self.model):
            # a name is a file or a folder, never both: refused (409), nothing stored
            refusal = FiletrackerClientError if client == "filetracker" else FiletrackerError
            with pytest.raises(refusal, match="409"):
                self.call(client, "put_file", f"{path}@{version}", str(source))
            return
        stored = self.call(client, "put_file", f"{path}@{version}", str(source))
        if current is not None and current[0] > version:
            assert stored == f"{path}@{current[0]}"
            return
        assert stored == f"{path}@{version}"
        self.model[path] = (version, content)
        self.retained.setdefault(path, {})[version] = content  # an equal version replaces the content
        self.ever.setdefault((path, version), set()).add(content)

    @rule(client=st.sampled_from(["cached", "remote"]), name=NAMES, version=st.one_of(st.none(), VERSIONS))
    def delete(self, client: str, name: str, version: int | None) -> None:
        path = f"{self.prefix}/{name}"
        target = path if version is None else f"{path}@{version}"
        current = self.model.get(path)
        if current is None:
            with pytest.raises(FileNotAvailable):
                self.call(client, "delete_file", target)
            return
        self.call(client, "delete_file", target)
        if version is None or version >= current[0]:  # unversioned: "now", newer than all
            del self.model[path]
            del self.retained[path]  # with its history

    @rule(client=CLIENTS, name=NAMES)
    def read_current(self, client: str, name: str) -> None:
        path = f"{self.prefix}/{name}"
        current = self.model.get(path)
        if current is None:
            # castore's clients: FileNotAvailable; Filetracker's: its own error
            refusal = FiletrackerClientError if client == "filetracker" else FileNotAvailable
            with pytest.raises(refusal, match="404|not available"):
                self.call(client, "get_stream", path)
            return
        stream, versioned = self.call(client, "get_stream", path)
        assert stream.read() == current[1] and versioned == f"{path}@{current[0]}"
        assert self.call(client, "file_size", path) == len(current[1])

    @rule(client=CLIENTS, name=NAMES, version=VERSIONS, stream=st.booleans())
    def read_a_version(self, client: str, name: str, version: int, stream: bool) -> None:
        path = f"{self.prefix}/{name}"
        retained = self.retained.get(path, {})
        current = self.model.get(path)
        if client == "filetracker":  # Filetracker's protocol: the current version only
            readable = current[1] if current is not None and current[0] == version else None
        else:
            readable = retained.get(version)
        out = self.work / "out"
        try:
            if stream:
                reader, got = self.call(client, "get_stream", f"{path}@{version}")
                content = reader.read()
            else:
                got = self.call(client, "get_file", f"{path}@{version}", str(out))
                content = out.read_bytes()
        except FiletrackerClientError:
            assert client == "filetracker" and readable is None
            return
        except FileNotAvailable as e:
            assert readable is None, f"{path}@{version} is retained: must be read"
            if retained:
                listed = ", ".join(str(v) for v in sorted(retained, reverse=True))
                assert e.detail == f"version {version} of {path} is not retained; retained versions: {listed}"
            else:
                assert e.detail is None and e.status == 404
            return
        assert got == f"{path}@{version}"
        if client == "cached":  # perhaps from its cache: a content stored under that version at some time
            assert content in self.ever[(path, version)]
        else:
            assert readable is not None and content == readable

    @invariant()
    def listing_matches(self) -> None:
        if not self.model:  # no file below the prefix: not a folder on the server
            with pytest.raises(FiletrackerError):
                self.call("remote", "list_remote_files", subpath=self.prefix)
            return
        listed = self.call("remote", "list_remote_files", subpath=self.prefix)
        assert sorted(listed) == sorted(p[len(self.prefix) + 1:] for p in self.model)


TestClientsModel = ClientsModel.TestCase
TestClientsModel.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
