"""The store against a plain dict model of Filetracker semantics (hypothesis state machine)."""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from castore.errors import NotFound, VersionNotFound
from castore.opening import open_store

from ..conftest import Locations

PATHS = st.sampled_from(["/a", "/b", "/d/c", "/d/e/f", "/dd"])
VERSIONS = st.integers(min_value=0, max_value=6)
CONTENTS = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"shared", b"x" * 3000]),  # 3000 > inline_max below: backend blobs
)
RETENTION = 3
_examples = itertools.count()


class StoreModel(RuleBasedStateMachine):
    """Model: path -> {version: content}, the current version being the largest."""

    new_location: Locations
    """Set by the test below: where each example's new store goes (this run's backend)."""

    def __init__(self) -> None:
        super().__init__()
        self.where = self.new_location(f"model-{next(_examples)}")
        self.store = open_store(metadata=self.where.metadata, blobs=self.where.blobs, create=True,
                                retention=RETENTION, inline_max=1000)
        self.model: dict[str, dict[int, bytes]] = {}

    def teardown(self) -> None:
        self.store.close()
        self.new_location.release(self.where)  # the next example reuses its database

    def current(self, path: str) -> int | None:
        versions = self.model.get(path)
        return max(versions) if versions else None

    @rule(path=PATHS, version=VERSIONS, content=CONTENTS)
    def put(self, path: str, version: int, content: bytes) -> None:
        result = self.store.put(path, content, version=version)
        current = self.current(path)
        if current is not None and current > version:
            assert result == f"{path}@{current}"
            return
        assert result == f"{path}@{version}"
        history = self.model.setdefault(path, {})
        history[version] = content
        for old in sorted(history)[:-RETENTION]:
            del history[old]

    @rule(path=PATHS, version=st.one_of(st.none(), VERSIONS))
    def delete(self, path: str, version: int | None) -> None:
        current = self.current(path)
        if current is None:
            try:
                self.store.delete(path, version)
            except NotFound:
                return
            raise AssertionError("deleting a missing path did not raise NotFound")
        removed = self.store.delete(path, version)
        expect = version is None or version >= current
        assert removed == expect
        if expect:
            del self.model[path]

    @rule(path=PATHS, version=VERSIONS)
    def read_version(self, path: str, version: int) -> None:
        history = self.model.get(path, {})
        if version in history:
            assert self.store.read_bytes(f"{path}@{version}") == history[version]
        else:
            try:
                self.store.read_bytes(f"{path}@{version}")
            except VersionNotFound as e:
                assert history, "VersionNotFound for a path that does not exist"
                assert e.retained == sorted(history, reverse=True)  # it names the versions that are retained
            except NotFound:
                assert not history
            else:
                raise AssertionError(f"{path}@{version} read but not in the model")

    @precondition(lambda self: self.model)
    @rule()
    def collect_garbage(self) -> None:
        self.store.collect_garbage()

    @invariant()
    def current_contents_match(self) -> None:
        listed = {info.path: info for info in self.store.list("/")}
        assert set(listed) == set(self.model)
        for path, history in self.model.items():
            current = max(history)
            assert listed[path].version == current
            assert self.store.read_bytes(path) == history[current]
            assert [i.version for i in self.store.versions(path)] == sorted(history, reverse=True)

    @invariant()
    def refcounts_match(self) -> None:
        assert self.store.metadata.recount() == {}

    @invariant()
    def totals_match_a_recount(self) -> None:
        # usage() reads the totals the write transactions keep (#22); a full recount agrees
        assert self.store.usage() == self.store.metadata.recount_usage()


def test_store_follows_the_model(store_backend: str, new_location: Locations) -> None:
    StoreModel.new_location = new_location
    # Fewer examples on the remote backends: each example is a new database (and bucket).
    examples = 60 if store_backend == "sqlite+file" else 20
    run_state_machine_as_test(
        StoreModel, settings=settings(max_examples=examples, stateful_step_count=30, deadline=None)
    )
