"""The dedup report (``Store.dedup_report``, ``castore du PREFIX --by DEPTH``) on corpora
whose sharing is known by construction, and its "freed if deleted" checked by deleting."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castore.cli import cli
from castore.metadata.report import GroupUsage, SharedContent, path_head_of
from castore.store import Store


def content(size: int, seed: int) -> bytes:
    """Incompressible bytes: stored raw, so stored bytes equal logical bytes."""
    return random.Random(seed).randbytes(size)


# Contents by size, so each figure below can be read as a sum of sizes.
U_A, U_B, S_AB, W_A, O_C, N_C, S_OLD, U_B2, E, R, T = (
    content(n, n) for n in (1000, 2000, 3000, 4000, 5000, 6000, 7000, 800, 900, 100, 1500)
)

CORPUS: list[tuple[str, int, bytes]] = [
    # contest a: one unique file, one content shared with b, one content twice within a
    ("/contests/a/p1/1.in", 1, U_A),
    ("/contests/a/p1/2.in", 1, S_AB),
    ("/contests/a/p1/3.in", 1, W_A),
    ("/contests/a/p2/3.in", 1, W_A),
    ("/contests/a/p3/z.in", 1, S_OLD),  # current in a, a retained old version in b
    ("/contests/a/p4/t.in", 1, T),  # in a, b and c
    # contest b
    ("/contests/b/p1/1.in", 1, U_B),
    ("/contests/b/p2/2.in", 1, S_AB),
    ("/contests/b/p3/y.in", 1, S_OLD),
    ("/contests/b/p3/y.in", 2, U_B2),
    ("/contests/b/p4/t.in", 1, T),
    # contest c: two unique versions of one file, a content also outside /contests
    ("/contests/c/p/x.in", 1, O_C),
    ("/contests/c/p/x.in", 2, N_C),
    ("/contests/c/p/e.in", 1, E),
    ("/contests/c/p4/t.in", 1, T),
    # a file right below the prefix is a group of its own
    ("/contests/readme.txt", 1, R),
    # outside the prefix
    ("/archive/e.in", 1, E),
]


def fill(store: Store, corpus: list[tuple[str, int, bytes]] = CORPUS) -> None:
    for path, version, data in corpus:
        store.put(path, data, version)


def usage(group: str, files: int, versions: int, logical: int, retained: int, stored: int, freed: int) -> GroupUsage:
    return GroupUsage(group, files, versions, logical, retained, stored, freed, stored - freed)


EXPECTED_GROUPS = [
    # files, versions, logical (current), retained (all versions), stored, freed if deleted
    usage("/contests/a/", 6, 6, 1000 + 3000 + 4000 + 4000 + 7000 + 1500, 20500,
          1000 + 3000 + 4000 + 7000 + 1500, 1000 + 4000),
    usage("/contests/b/", 4, 5, 2000 + 3000 + 800 + 1500, 2000 + 3000 + 7000 + 800 + 1500,
          2000 + 3000 + 7000 + 800 + 1500, 2000 + 800),
    usage("/contests/c/", 3, 4, 6000 + 900 + 1500, 5000 + 6000 + 900 + 1500,
          5000 + 6000 + 900 + 1500, 5000 + 6000),
    usage("/contests/readme.txt", 1, 1, 100, 100, 100, 100),
]
ALL_STORED = 1000 + 2000 + 3000 + 4000 + 5000 + 6000 + 7000 + 800 + 900 + 100 + 1500
EXPECTED_TOTAL = usage("/contests/", 14, 16, 20500 + 7300 + 8400 + 100, 20500 + 14300 + 13400 + 100,
                       ALL_STORED, ALL_STORED - 900)
EXPECTED_SHARED = [
    # by logical bytes saved: size * (references - 1); ties by first path
    SharedContent("/contests/a/p3/z.in", 7000, 7000, 2, 2, 2, (("/contests/a/", 1), ("/contests/b/", 1))),
    SharedContent("/contests/a/p1/2.in", 3000, 3000, 2, 2, 2, (("/contests/a/", 1), ("/contests/b/", 1))),
    SharedContent("/contests/a/p4/t.in", 1500, 1500, 3, 3, 3,
                  (("/contests/a/", 1), ("/contests/b/", 1), ("/contests/c/", 1))),
    SharedContent("/contests/c/p/e.in", 900, 900, 2, 1, 1, (("/contests/c/", 1),)),
]


@pytest.fixture
def corpus_store(store: Store) -> Store:
    fill(store)
    return store


def test_corpus_is_stored_raw(corpus_store: Store) -> None:
    """The expected numbers assume stored bytes == logical bytes."""
    for path, version, data in CORPUS:
        info = corpus_store.stat(f"{path}@{version}")
        assert (info.size, info.stored_size, info.codec) == (len(data), len(data), "raw")


def test_report_by_contest(corpus_store: Store) -> None:
    report = corpus_store.dedup_report("/contests", depth=1)
    assert report.prefix == "/contests/"
    assert report.depth == 1
    assert report.groups == EXPECTED_GROUPS
    assert report.total == EXPECTED_TOTAL
    assert report.shared == EXPECTED_SHARED
    assert [s.outside_references for s in report.shared] == [0, 0, 0, 1]
    assert [s.saved_bytes for s in report.shared] == [7000, 3000, 3000, 900]
    # the within-a content (W_A) is shared by no two groups: not listed, freed with a
    assert all(s.size != 4000 for s in report.shared)


def test_top_bounds_the_shared_list(corpus_store: Store) -> None:
    assert corpus_store.dedup_report("/contests", depth=1, top=2).shared == EXPECTED_SHARED[:2]
    assert corpus_store.dedup_report("/contests", depth=1, top=0).shared == []


def test_report_of_the_root_by_two_segments(corpus_store: Store) -> None:
    report = corpus_store.dedup_report("/", depth=2)
    names = [g.group for g in report.groups]
    assert names == ["/archive/e.in", "/contests/a/", "/contests/b/", "/contests/c/", "/contests/readme.txt"]
    # E is now shared between two groups of the prefix, nothing is outside it
    archive = report.groups[0]
    assert archive == usage("/archive/e.in", 1, 1, 900, 900, 900, 0)
    assert report.total.freed_bytes == report.total.stored_bytes == ALL_STORED
    e = next(s for s in report.shared if s.size == 900)
    assert (e.outside_references, e.groups) == (0, (("/archive/e.in", 1), ("/contests/c/", 1)))


def test_depth_zero_is_the_prefix_as_one_group(corpus_store: Store) -> None:
    report = corpus_store.dedup_report("/contests/", depth=0)
    assert report.groups == [EXPECTED_TOTAL]
    assert [s.size for s in report.shared] == [900]  # only E is named outside the prefix


def test_deeper_groups_split_contest_a(corpus_store: Store) -> None:
    report = corpus_store.dedup_report("/contests/a", depth=1)
    assert report.groups == [
        usage("/contests/a/p1/", 3, 3, 8000, 8000, 8000, 1000),  # W_A is shared with p2
        usage("/contests/a/p2/", 1, 1, 4000, 4000, 4000, 0),
        usage("/contests/a/p3/", 1, 1, 7000, 7000, 7000, 0),
        usage("/contests/a/p4/", 1, 1, 1500, 1500, 1500, 0),
    ]
    assert report.total == EXPECTED_GROUPS[0]  # the same group, seen as a whole


def test_empty_and_missing_prefixes(corpus_store: Store) -> None:
    report = corpus_store.dedup_report("/nothing/here", depth=1)
    assert (report.groups, report.shared) == ([], [])
    assert report.total == usage("/nothing/here/", 0, 0, 0, 0, 0, 0)
    assert report.total.dedup_ratio == 1.0


@pytest.mark.parametrize("bad", ["relative", "/a//b", "/a/../b", "/x@1/"])
def test_bad_prefix_is_refused(corpus_store: Store, bad: str) -> None:
    with pytest.raises(ValueError):
        corpus_store.dedup_report(bad, depth=1)


@pytest.mark.parametrize("depth, top", [(-1, 10), (1, -1), (True, 10)])
def test_bad_depth_or_top_is_refused(corpus_store: Store, depth: int, top: int) -> None:
    with pytest.raises(ValueError):
        corpus_store.dedup_report("/", depth=depth, top=top)


def test_file_and_folder_of_one_name_are_two_groups(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/c/x`` (a file), ``/c/x-1`` and ``/c/x/y`` sort as x < x-1 < x/y: three groups.

    Only a store written before castore refused a file below a file (issue #21) holds both.
    """
    from castore.metadata.txn import WriteTxn

    store.put("/c/x", content(10, 1), 1)
    store.put("/c/x-1", content(20, 2), 1)
    monkeypatch.setattr(WriteTxn, "in_the_way", lambda self, path: None)  # as an older castore
    store.put("/c/x/y", content(10, 1), 1)
    report = store.dedup_report("/c", depth=1)
    assert [(g.group, g.files, g.freed_bytes) for g in report.groups] == [
        ("/c/x", 1, 0), ("/c/x-1", 1, 20), ("/c/x/", 1, 0)
    ]
    assert report.shared[0].groups == (("/c/x", 1), ("/c/x/", 1))


def test_sorting(corpus_store: Store) -> None:
    report = corpus_store.dedup_report("/contests", depth=1)
    assert [g.group for g in report.sorted_groups("freed")] == [
        "/contests/c/", "/contests/a/", "/contests/b/", "/contests/readme.txt"
    ]
    assert [g.group for g in report.sorted_groups("shared")][:2] == ["/contests/a/", "/contests/b/"]  # a tie: by name
    assert report.sorted_groups("name") == report.groups
    with pytest.raises(ValueError):
        report.sorted_groups("size")


def test_path_head_of() -> None:
    assert path_head_of("/c/a/b/x", 3, 1) == "a/"
    assert path_head_of("/c/a/b/x", 3, 2) == "a/b/"
    assert path_head_of("/c/a/b/x", 3, 3) == "a/b/x"
    assert path_head_of("/c/a/b/x", 3, 9) == "a/b/x"
    assert path_head_of("/c/f", 3, 1) == "f"
    assert path_head_of("/c/f", 3, 0) == ""


@pytest.mark.parametrize("group", [g.group for g in EXPECTED_GROUPS])
def test_freed_if_deleted_is_what_deleting_frees(corpus_store: Store, group: str) -> None:
    expected = next(g for g in corpus_store.dedup_report("/contests", depth=1).groups if g.group == group)
    victims = [info.path for info in corpus_store.list("/")
               if info.path == group or (group.endswith("/") and info.path.startswith(group))]
    for path in victims:
        corpus_store.delete(path)
    assert corpus_store.collect_garbage().stored_bytes == expected.freed_bytes


_names = st.sampled_from(["/g/a/1", "/g/a/2", "/g/a/b/3", "/g/b/1", "/g/b/2", "/g/c", "/h/1", "/h/g/2"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    puts=st.lists(st.tuples(_names, st.integers(1, 4), st.integers(0, 5)), min_size=1, max_size=14),
    depth=st.integers(0, 3),
)
def test_report_agrees_with_a_recount_and_with_deletion(tmp_path: Path, puts: list[tuple[str, int, int]],
                                                        depth: int) -> None:
    """Random corpora: every group's figures match a recount from the versions, and
    deleting the group frees exactly its freed bytes."""
    root = tmp_path / uuid.uuid4().hex
    with Store.open(root, create=True, retention=3) as store:
        for path, version, which in puts:
            store.put(path, content(50 + which * 10, which), version)
        report = store.dedup_report("/g", depth=depth)
        retained = [(info.path, info) for p in {p for p, _, _ in puts} if store.exists(p)
                    for info in store.versions(p)]
        refs: dict[str, int] = {}
        for _, info in retained:
            refs[info.key] = refs.get(info.key, 0) + 1
        for g in report.groups:
            inside = [info for p, info in retained
                      if p.startswith("/g/") and "/g/" + path_head_of(p, 3, depth) == g.group]
            keys = {info.key: info.stored_size for info in inside}
            mine = {k: sum(1 for i in inside if i.key == k) for k in keys}
            assert g.versions == len(inside)
            assert g.files == len({i.path for i in inside})
            assert g.retained_bytes == sum(i.size for i in inside)
            assert g.stored_bytes == sum(keys.values())
            assert g.freed_bytes == sum(size for k, size in keys.items() if mine[k] == refs[k])
        if report.groups:
            store.collect_garbage()  # replaced contents (an equal version put again) are garbage already
            victim = report.groups[0]
            for p in {i.path for _, i in retained if "/g/" + path_head_of(i.path, 3, depth) == victim.group
                      and i.path.startswith("/g/")}:
                store.delete(p)
            assert store.collect_garbage().stored_bytes == victim.freed_bytes


# -- the command ----------------------------------------------------------------------


@pytest.fixture
def cli_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    with Store.open(root, create=True) as store:
        fill(store)
    return root


def invoke(root: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def test_du_json_shape(cli_root: Path) -> None:
    data = json.loads(invoke(cli_root, "du", "/contests", "--by", "1", "--json"))
    assert set(data) == {"prefix", "by", "sort", "total", "groups", "shared"}
    assert (data["prefix"], data["by"], data["sort"]) == ("/contests/", 1, "name")
    group_keys = {"group", "files", "versions", "logical_bytes", "retained_bytes", "stored_bytes", "freed_bytes",
                  "shared_bytes", "dedup_ratio"}
    assert all(set(g) == group_keys for g in [data["total"], *data["groups"]])
    assert [g["group"] for g in data["groups"]] == [g.group for g in EXPECTED_GROUPS]
    assert data["groups"][0] == {**asdict(EXPECTED_GROUPS[0]), "dedup_ratio": round(20500 / 16500, 4)}
    assert data["total"]["freed_bytes"] == ALL_STORED - 900
    assert data["shared"][3] == {
        "example_path": "/contests/c/p/e.in", "size": 900, "stored_size": 900, "references": 2,
        "prefix_references": 1, "outside_references": 1, "saved_bytes": 900, "group_count": 1,
        "groups": [{"group": "/contests/c/", "references": 1}],
    }
    # the global --json flag gives the same document
    assert json.loads(invoke(cli_root, "--json", "du", "/contests", "--by", "1")) == data


def test_du_sort_and_top(cli_root: Path) -> None:
    data = json.loads(invoke(cli_root, "du", "/contests", "--by", "1", "--sort", "freed", "--top", "1", "--json"))
    assert [g["group"] for g in data["groups"]][:2] == ["/contests/c/", "/contests/a/"]
    assert [s["size"] for s in data["shared"]] == [7000]


def test_du_table(cli_root: Path) -> None:
    out = invoke(cli_root, "du", "/contests", "--by", "1")
    lines = out.splitlines()
    assert lines[0].split() == ["GROUP", "FILES", "VERSIONS", "LOGICAL", "RETAINED", "STORED", "FREED", "IF",
                                "DELETED", "SHARED", "DEDUP"]
    assert lines[1].split() == ["/contests/a/", "6", "6", "20.0", "KiB", "20.0", "KiB", "16.1", "KiB",
                                "4.9", "KiB", "11.2", "KiB", "1.24x"]
    assert any(line.startswith("all of /contests/") for line in lines)
    assert "1. 6.8 KiB (stored 6.8 KiB), 2 versions: /contests/a/ (1), /contests/b/ (1)" in out
    assert "1 outside /contests/" in out


def test_plain_du_keeps_the_store_totals(cli_root: Path) -> None:
    out = invoke(cli_root, "du")
    assert out.startswith("files:          15 (17 versions retained)")
    data = json.loads(invoke(cli_root, "--json", "du"))
    assert data["files"] == 15 and "groups" not in data


def test_du_bad_input(cli_root: Path) -> None:
    assert "invalid path" in invoke(cli_root, "du", "/a//b", "--by", "1", code=4)
    invoke(cli_root, "du", "/contests", "--by", "-1", code=2)
    invoke(cli_root, "du", "/contests", "--sort", "size", code=2)


def test_groups_named_per_shared_content_are_bounded(tmp_path: Path) -> None:
    root = tmp_path / "wide"
    with Store.open(root, create=True) as store:
        for i in range(25):
            store.put(f"/w/g{i:02d}/same.in", b"one content everywhere", 1)
        shared = store.dedup_report("/w", depth=1).shared
    assert [(s.group_count, len(s.groups), s.references) for s in shared] == [(25, 20, 25)]
    assert shared[0].groups[0] == ("/w/g00/", 1) and shared[0].groups[-1] == ("/w/g19/", 1)
    data = json.loads(invoke(root, "du", "/w", "--json"))
    assert (data["by"], data["shared"][0]["group_count"], len(data["shared"][0]["groups"])) == (1, 25, 20)
    text = invoke(root, "du", "/w")
    assert "/w/g05/ (1), ... 25 groups in all" in text and "/w/g06/" not in text.split("Most shared")[1]


def test_cli_sort_choices_are_the_reports() -> None:
    from castore.cli.admin import DU_SORT_KEYS
    from castore.metadata.report import SORT_KEYS

    assert DU_SORT_KEYS == SORT_KEYS
