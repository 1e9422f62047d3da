"""Filetracker's list of a folder (``Store.list_folder``/``iter_folder``), and what it reads.

The list names the current files below a folder, relative to it, filtered by
``max_version``; a name that holds no file is not a folder (NotFound) whatever the
filter leaves. It reads the ``paths`` table alone (issue #22): the rows below a folder lie
side by side in its primary key, while a join would read a ``blobs`` row per file, rows
that lie anywhere in a large store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from castore.errors import NotFound
from castore.metadata.repo import MetadataRepo
from castore.opening import open_store
from castore.store import Store


def test_names_are_relative_current_and_filtered_by_version(store: Store) -> None:
    store.put("/p/1/a.in", b"a", version=10)
    store.put("/p/1/sub/b.in", b"b", version=30)
    store.put("/p/1/a.in", b"a2", version=20)
    store.put("/p/10/c.in", b"c", version=10)  # a sibling whose name starts like the folder's
    store.put("/p/1x", b"x", version=10)
    assert store.list_folder("/p/1") == ["a.in", "sub/b.in"]
    assert store.list_folder("/p/1/") == ["a.in", "sub/b.in"]
    assert store.list_folder("/p/1", max_version=20) == ["a.in"]
    assert store.list_folder("/p/1", max_version=19) == []  # a folder still, whatever the filter leaves
    assert store.list_folder("/", max_version=10) == ["p/10/c.in", "p/1x"]


def test_a_name_holding_no_file_is_not_a_folder(store: Store) -> None:
    store.put("/p/1/a.in", b"a", version=10)
    for name in ("/p/2", "/p/1/a.in", "/q"):
        with pytest.raises(NotFound):
            store.list_folder(name)
    assert store.list_folder("/") == ["p/1/a.in"]
    store.delete("/p/1/a.in")
    with pytest.raises(NotFound):
        store.list_folder("/p/1")
    assert store.list_folder("/") == []


def test_a_malformed_version_bound_is_refused(store: Store) -> None:
    store.put("/p/a", b"a", version=10)
    with pytest.raises(ValueError):
        store.list_folder("/p", max_version=-1)


def test_a_folder_longer_than_a_page_is_listed_whole(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MetadataRepo, "LIST_PAGE", 3)
    names = [f"f{i:02d}" for i in range(10)]
    for i, name in enumerate(names):
        store.put(f"/d/{name}", b"%d" % i, version=10 + i)
    store.put("/e/after", b"e", version=10)
    assert store.list_folder("/d") == names
    assert store.list_folder("/d", max_version=14) == names[:5]


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    """The statements the store's reader runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = store.metadata._reader
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_listing_reads_no_row_of_the_contents(store: Store) -> None:
    for i in range(20):
        store.put(f"/t/{i:02d}.in", b"test %d" % i, version=10)
    with _statements(store) as seen:
        assert len(store.list_folder("/t")) == 20
    assert seen, "the listing ran no statement on the reader"
    assert not [s for s in seen if "blobs" in s], seen


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["/a/x", "/a/y/z", "/ab", "/a/y/w", "/b/q"]),
                          st.integers(1, 5), st.booleans()), max_size=12),
       st.sampled_from(["/", "/a", "/a/y", "/b", "/c"]), st.one_of(st.none(), st.integers(1, 5)))
def test_the_listing_matches_a_model(tmp_path_factory: pytest.TempPathFactory,
                                     steps: list[tuple[str, int, bool]], folder: str, bound: int | None) -> None:
    model: dict[str, int] = {}
    with open_store(tmp_path_factory.mktemp("st"), create=True) as store:
        for path, version, delete in steps:
            if delete:
                if path in model:
                    store.delete(path)
                    del model[path]
            else:
                store.put(path, b"%d" % version, version=version)
                model[path] = max(model.get(path, 0), version)
        directory = "/" if folder == "/" else folder + "/"
        below = sorted(p for p in model if p.startswith(directory))
        if not below and folder != "/":
            with pytest.raises(NotFound):
                store.list_folder(folder, max_version=bound)
            return
        expected = [p[len(directory):] for p in below if bound is None or model[p] <= bound]
        assert store.list_folder(folder, max_version=bound) == expected
