"""Name, path and version rules (castore.names)."""

from __future__ import annotations

import pytest

from castore.errors import InvalidName, InvalidPath, InvalidVersion
from castore.names import (
    MAX_PATH_BYTES,
    check_path,
    check_prefix,
    child_range,
    is_valid_path,
    parse_name,
    parse_prefix,
    parse_version,
    versioned_name,
)

HOSTILE_NAMES = [
    "",
    "relative/path",
    "/",
    "//",
    "/a//b",
    "/a/",
    "/a/./b",
    "/a/../b",
    "/..",
    "/../etc/passwd",
    "/a/..",
    "/.",
    "/a\x00b",
    "/a\nb",
    "/a\rb",
    "/a\tb",
    "/a\x7fb",
    "/a\x85b",
    "/a\x1bb",
    "/a@1/b",
    "/a/b@1@2",
    "/a/b@",
    "/a/b@x",
    "/a/b@-1",
    "/a/b@+1",
    "/a/b@1.5",
    "/a/b@ 1",
    "/a/b@" + "9" * 20,
    "/a/b@9223372036854775808",
    "/" + "x" * 256,
    "/" + "/".join(["d" * 200] * 21),
    "/a/\ud800",
    "\\a\\b",
    "/a/b/",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        parse_name(name)


def test_there_are_at_least_twenty_hostile_names() -> None:
    assert len(HOSTILE_NAMES) >= 20


@pytest.mark.parametrize(
    "name, path, version",
    [
        ("/a", "/a", None),
        ("/problems/12/tests/1a.in", "/problems/12/tests/1a.in", None),
        ("/problems/12/tests/1a.in@1700000000", "/problems/12/tests/1a.in", 1700000000),
        ("/a/b@0", "/a/b", 0),
        ("/a/b@9223372036854775807", "/a/b", 2**63 - 1),
        ("/zażółć/gęślą.txt@7", "/zażółć/gęślą.txt", 7),
        ("/a b/c d.txt", "/a b/c d.txt", None),
        ("/.hidden/..dots../x", "/.hidden/..dots../x", None),
    ],
)
def test_valid_names_parse(name: str, path: str, version: int | None) -> None:
    parsed = parse_name(name)
    assert (parsed.path, parsed.version) == (path, version)
    assert str(parsed) == name


def test_a_version_can_be_forbidden() -> None:
    with pytest.raises(InvalidPath):
        parse_name("/a@1", allow_version=False)
    assert parse_name("/a", allow_version=False).path == "/a"


def test_path_length_limit_is_in_bytes() -> None:
    segment = "ą" * 100  # 200 bytes
    path = "/" + "/".join([segment] * 20)
    assert len(path.encode()) <= MAX_PATH_BYTES
    assert check_path(path) == path
    assert not is_valid_path(path + "/" + segment)


def test_predicate_and_check_agree() -> None:
    for name in HOSTILE_NAMES:
        if "@" not in name:
            assert not is_valid_path(name)
    assert is_valid_path("/ok") and check_path("/ok") == "/ok"


def test_versions() -> None:
    assert parse_version("17") == 17
    for bad in ["", "-1", "1e3", "0x10", "١٢", "12 "]:
        with pytest.raises(InvalidVersion):
            parse_version(bad)
    assert versioned_name("/a", 5) == "/a@5"


def test_prefixes_and_ranges() -> None:
    assert check_prefix("") == "/" and check_prefix("/") == "/"
    assert check_prefix("/a/b") == "/a/b/" == check_prefix("/a/b/")
    with pytest.raises(InvalidPath):
        check_prefix("/a/../b")
    low, high = child_range("/a/")
    assert low <= "/a/x" < high and not ("/ab" >= low and "/ab" < high) and not (low <= "/a" < high)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/", ("/", None)),
        ("", ("/", None)),
        ("/@7", ("/", 7)),
        ("/q/", ("/q/", None)),
        ("/q/@7", ("/q/", 7)),
        ("/q@7", ("/q/", 7)),
        ("/a/b", ("/a/b/", None)),
    ],
)
def test_parse_prefix(name: str, expected: tuple[str, int | None]) -> None:
    assert parse_prefix(name) == expected


@pytest.mark.parametrize("name", ["/a/../b", "/a//b", "/q@", "/q@-1", "/q@1x", "/a\x00b", "/a@1/b"])
def test_parse_prefix_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        parse_prefix(name)
