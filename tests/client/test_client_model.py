"""castore's client (cached and not) and Filetracker's, mixed, against a dict model over real HTTP.

Hypothesis drives puts, deletes and reads through three clients of one ``castore serve``;
the server must behave as Filetracker's rules say (newest version wins, an equal version
replaces, a delete with an older version is ignored), whichever client wrote last.
A versioned read through the cached client may be answered from its cache: it must then
return a content that was stored under that exact version at some point.
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
    """Model: path -> (current version, content); plus every content ever stored per version."""

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

    @rule(name=NAMES, version=VERSIONS)
    def read_version_through_the_cache(self, name: str, version: int) -> None:
        path = f"{self.prefix}/{name}"
        out = self.work / "out"
        try:
            got = self.call("cached", "get_file", f"{path}@{version}", str(out))
        except FileNotAvailable:
            current = self.model.get(path)
            assert current is None or current[0] != version  # the server has it: must not fail
            return
        assert got == f"{path}@{version}"
        assert out.read_bytes() in self.ever[(path, version)]

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
