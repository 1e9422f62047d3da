"""Name, path and version rules (castore.names)."""

from __future__ import annotations

import pytest

from castore.errors import InvalidName, InvalidPath, InvalidVersion
from castore.names import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    check_path,
    check_prefix,
    check_version,
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


# -- each refusal names its own rule, and the limits sit exactly where they are said to -----


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (5, "a path must be a str, not int"),
        ("a/b", "a path must start with '/'"),
        ("/a\x00b", "a path must not contain NUL or control characters"),
        ("/a/\ud800", "a path must be valid Unicode"),
        ("/" + "d/" * 2047 + "dd", f"a path must be at most {MAX_PATH_BYTES} bytes"),
        ("/a//b", "a path must not have empty segments or end with '/'"),
        ("/a/../b", "a path must not contain '.' or '..' segments"),
        ("/" + "x" * 256, f"a path segment must be at most {MAX_SEGMENT_BYTES} bytes"),
        ("/a@1/b", "a path must not contain '@' (it separates the version)"),
    ],
)
def test_each_path_rule_says_what_is_wrong(path: object, reason: str) -> None:
    with pytest.raises(InvalidPath) as refused:
        check_path(path)
    assert str(refused.value) == f"invalid path {path!r}: {reason}"


def test_the_length_limits_are_inclusive() -> None:
    folders = "/" + "/".join(["d" * 254] * 16) + "/"
    longest = folders + "e" * (MAX_PATH_BYTES - len(folders))
    assert len(longest.encode()) == MAX_PATH_BYTES and check_path(longest) == longest
    assert not is_valid_path(longest + "e")
    assert check_path("/" + "x" * MAX_SEGMENT_BYTES) == "/" + "x" * MAX_SEGMENT_BYTES


@pytest.mark.parametrize("version", ["5", 5.0, None, True, False])
def test_a_version_must_be_an_int(version: object) -> None:
    with pytest.raises(InvalidVersion) as refused:
        check_version(version)
    assert str(refused.value) == f"invalid version {version!r}: must be an integer"


def test_version_refusals_name_the_problem() -> None:
    with pytest.raises(InvalidVersion) as refused:
        check_version(-1)
    assert str(refused.value) == "invalid version -1: must be in [0, 2**63-1]"
    for text in (17, "x"):
        with pytest.raises(InvalidVersion) as refused:
            parse_version(text)  # type: ignore[arg-type]
        assert str(refused.value) == f"invalid version {text!r}: must be decimal digits"
    for digits, shown in ((20, "9" * 20), (24, "9" * 24), (25, "9" * 24 + "…"), (30, "9" * 24 + "…")):
        with pytest.raises(InvalidVersion) as refused:
            parse_version("9" * digits)
        assert str(refused.value) == f"invalid version {shown}: too large (at most 2**63-1)"


def test_name_refusals_name_the_problem() -> None:
    def refusal(name: object, **options: bool) -> str:
        with pytest.raises(InvalidName) as refused:
            parse_name(name, **options)
        return str(refused.value)

    assert refusal(7) == "invalid name 7: must be a str"
    assert refusal("/a@1", allow_version=False) == "invalid name '/a@1': a version is not allowed here"
    at = "a path must not contain '@' (it separates the version)"
    # an '@' in a directory is the path's fault, not a bad version; the last '@' separates the version
    assert refusal("/a@1/b") == f"invalid path '/a@1/b': {at}"
    assert refusal("/a/b@1@2") == f"invalid path '/a/b@1': {at}"
    with pytest.raises(InvalidPath):
        parse_prefix("/a@1/b")
    with pytest.raises(InvalidPath):
        parse_prefix("/q@1@7")


def test_child_range_is_exactly_the_folder() -> None:
    assert child_range("/a/") == ("/a/", "/a0")
    with pytest.raises(ValueError) as refused:
        child_range("/a")
    assert str(refused.value) == "directory must end with '/'"
