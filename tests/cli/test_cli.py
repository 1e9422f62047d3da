"""The castore command: every subcommand, JSON output and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from castore.cli import cli
from castore.client.cache import LocalCache
from castore.sizes import parse_size

from ..server_process import castore_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    root = tmp_path / "data"

    def invoke(*args: str, input: bytes | None = None, code: int = 0):  # type: ignore[no-untyped-def]
        result = runner.invoke(cli, ["--root", str(root), *args], input=input)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return invoke


def test_full_cycle(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("ls", code=5)
    run("init")
    local = tmp_path / "in.txt"
    local.write_bytes(b"1 2 3\n")
    name = run("put", str(local), "/p/1.in").output.strip()
    assert re.fullmatch(r"/p/1\.in@\d+", name)
    assert run("put", str(local), "/p/2.in@5").output.strip() == "/p/2.in@5"
    assert run("put", "-", "/p/3.in@6", input=b"stdin data").output.strip() == "/p/3.in@6"
    assert run("cat", "/p/3.in").stdout_bytes == b"stdin data"
    assert run("get", "/p/2.in@5").stdout_bytes == b"1 2 3\n"
    out = tmp_path / "out.txt"
    run("get", "/p/2.in", str(out))
    assert out.read_bytes() == b"1 2 3\n"
    listed = [json.loads(line) for line in run("--json", "ls", "-l", "/p").output.splitlines()]
    assert [i["name"] for i in listed][1:] == ["/p/2.in@5", "/p/3.in@6"]
    stat = json.loads(run("--json", "stat", "/p/2.in").stdout)
    assert stat["size"] == 6 and stat["version"] == 5 and stat["name"] == "/p/2.in@5"
    run("put", str(local), "/p/2.in@7")
    log = json.loads(run("--json", "log", "/p/2.in").stdout)
    assert [i["version"] for i in log] == [7, 5]
    du = json.loads(run("--json", "du").stdout)
    assert du["files"] == 3 and du["blobs"] == 2 and du["dedup_ratio"] > 1
    assert json.loads(run("--json", "rm", "/p/2.in@6").stdout)["removed"] is False
    assert json.loads(run("--json", "rm", "/p/2.in").stdout)["removed"] is True
    assert json.loads(run("--json", "gc").stdout)["blobs"] == 0  # the content is still used by /p/1.in
    assert run("check").output.strip().endswith("status:         clean (exit 0)")


def test_exit_codes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    assert "not found" in run("cat", "/missing", code=3).output
    run("put", "-", "/f@5", input=b"x")
    assert "version 4 of /f is not retained; retained versions: 5" in run("cat", "/f@4", code=3).output
    assert "invalid path" in run("put", "-", "/a/../b", input=b"x", code=4).output
    assert "invalid version" in run("cat", "/f@abc", code=4).output
    assert "no such local file" in run("put", str(tmp_path / "nope"), "/x", code=7).output
    run("nosuchcommand", code=2)


def test_ingest_folder(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    folder = tmp_path / "pkg"
    (folder / "tests").mkdir(parents=True)
    (folder / "tests" / "1.in").write_bytes(b"same")
    (folder / "tests" / "2.in").write_bytes(b"same")
    os.utime(folder / "tests" / "1.in", (1000, 1000))
    assert json.loads(run("--json", "ingest", str(folder), "/pkg").stdout)["files"] == 2
    names = [json.loads(line)["name"] for line in run("--json", "ls", "-l", "/pkg").output.splitlines()]
    assert names[0] == "/pkg/tests/1.in@1000" and names[1].startswith("/pkg/tests/2.in@")


def test_root_from_environment(tmp_path: Path) -> None:
    env = {**os.environ, "CASTORE_ROOT": str(tmp_path / "envroot")}
    castore = [sys.executable, "-m", "castore"]
    subprocess.run([*castore, "init"], env=env, check=True, capture_output=True)
    done = subprocess.run([*castore, "put", "-", "/e"], env=env, input=b"x", capture_output=True, check=False)
    assert done.returncode == 0 and (tmp_path / "envroot" / "metadata.sqlite3").exists()
    missing = subprocess.run([*castore, "cat", "/nope"], env=env, capture_output=True, check=False)
    assert missing.returncode == 3 and missing.stderr.startswith(b"Error: not found")


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in cli.commands:
        assert f"castore {command}" in readme or f"`{command}`" in readme, f"README does not mention {command}"


# -- against a server (--url) ------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with castore_server(tmp_path_factory.mktemp("cli-remote") / "store") as url:
        yield url


def test_commands_against_a_server(server_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    def remote(*args: str, input: bytes | None = None, code: int = 0):  # type: ignore[no-untyped-def]
        result = runner.invoke(cli, ["--url", server_url, *args], input=input)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    local = tmp_path / "in.txt"
    local.write_bytes(b"1 2 3\n" * 1000)
    assert remote("put", str(local), "/r/a.in@2000").output.strip() == "/r/a.in@2000"
    assert remote("put", "-", "/r/b.in@5", input=b"from stdin").output.strip() == "/r/b.in@5"
    assert remote("cat", "/r/b.in").stdout_bytes == b"from stdin"
    remote("get", "/r/a.in@2000", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == local.read_bytes()
    assert remote("ls", "/r").output.split() == ["/r/a.in", "/r/b.in"]
    assert json.loads(remote("--json", "stat", "/r/a.in").stdout) == {
        "name": "/r/a.in@2000", "path": "/r/a.in", "version": 2000, "size": 6000}
    assert "kept" in remote("rm", "/r/a.in@1000").output  # older than the stored version
    assert "removed" in remote("rm", "/r/a.in@2000").output
    assert "not found: /r/a.in" in remote("cat", "/r/a.in", code=3).output
    remote("stat", "/r/../x", code=4)
    for command in ("log /r/b.in", "du", "gc", "check", "init", "serve"):
        assert "needs a local store" in remote(*command.split(), code=2).output
    folder = tmp_path / "pkg"
    (folder / "t").mkdir(parents=True)
    (folder / "t" / "1.in").write_bytes(b"one")
    os.utime(folder / "t" / "1.in", (1000, 1000))
    remote("ingest", str(folder), "/pkg")
    assert remote("--json", "stat", "/pkg/t/1.in").output.count('"version": 1000') == 1


def test_cat_and_get_read_every_retained_version_locally_and_over_url(tmp_path: Path) -> None:
    """Issue #21: what ``castore log`` lists, ``cat``/``get`` of ``path@version`` read, with --root and --url alike."""
    runner = CliRunner()
    root = tmp_path / "store"
    contents = {10: b"ten\n", 20: b"twenty " * 40_000, 30: b"thirty\n"}  # 20: a blob file, streamed

    def castore(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = runner.invoke(cli, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    castore("--root", str(root), "init")
    for version, content in contents.items():
        source = tmp_path / "in"
        source.write_bytes(content)
        castore("--root", str(root), "put", str(source), f"/p/1.in@{version}")
    logged = [i["version"] for i in json.loads(castore("--root", str(root), "--json", "log", "/p/1.in").stdout)]
    assert logged == [30, 20, 10]
    refusals = []
    with castore_server(root, "--workers", "1") as url:
        for where in (("--root", str(root)), ("--url", url)):
            for version in logged:
                assert castore(*where, "cat", f"/p/1.in@{version}").stdout_bytes == contents[version], where
                out = tmp_path / f"out{version}"
                got = json.loads(castore(*where, "--json", "get", f"/p/1.in@{version}", str(out)).stdout)
                assert got["name"] == f"/p/1.in@{version}" and out.read_bytes() == contents[version]
                stat = json.loads(castore(*where, "--json", "stat", f"/p/1.in@{version}").stdout)
                assert (stat["version"], stat["size"]) == (version, len(contents[version]))
            missing = castore(*where, "cat", "/p/1.in@15", code=3)
            assert missing.stdout_bytes == b""
            as_json = json.loads(castore(*where, "--json", "get", "/p/1.in@15", str(tmp_path / "no"), code=3).stdout)
            refusals.append((missing.stderr, as_json, castore(*where, "stat", "/p/1.in@15", code=3).stderr))
            assert "not found: /p/2.in" in castore(*where, "cat", "/p/2.in@5", code=3).stderr
    assert refusals[0] == refusals[1], "the same words with --root and --url"
    assert refusals[0][0] == "Error: version 15 of /p/1.in is not retained; retained versions: 30, 20, 10\n"
    assert refusals[0][2] == refusals[0][0] and "Server" not in refusals[0][0] and not (tmp_path / "no").exists()


@pytest.mark.parametrize("word", ["versions", "history"])
def test_versions_and_history_suggest_log(word: str) -> None:
    result = CliRunner().invoke(cli, [word, "/p/1.in"])
    assert result.exit_code == 2
    assert f"No such command '{word}'" in result.output and "castore log NAME" in result.output


def test_url_from_environment_and_root_precedence(server_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"FILETRACKER_URL": server_url}
    put = runner.invoke(cli, ["put", "-", "/env/x@7"], input=b"x", env=env)
    assert put.exit_code == 0 and put.output.strip() == "/env/x@7"
    local = runner.invoke(cli, ["--root", str(tmp_path / "local"), "init"], env=env)
    assert local.exit_code == 0  # a --root typed on the command line beats a URL from the environment
    both = runner.invoke(cli, ["--root", str(tmp_path), "--url", server_url, "ls"])
    assert both.exit_code == 2 and "not both" in both.output
    for command in (["cat", "/x"], ["ls"]):  # ls asks for /list?last_modified=...: not shown
        down = runner.invoke(cli, ["--url", "http://any:s3cret@127.0.0.1:1/ft", *command])
        assert down.exit_code == 9, down.output
        assert down.output == "Error: no answer from http://127.0.0.1:1/ft: Connection refused\n"  # no token


# -- cache-clean ----------------------------------------------------------------------------


def test_cache_clean_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    source = tmp_path / "src"
    for i in range(10):
        source.write_bytes(bytes([i]) * 1000)
        file = cache.add_file(f"/c/f{i}", source, 100 + i)
        os.utime(file, (1_000_000 + (i * 7919) % 10, 100 + i))  # access order: a shuffle of 0..9
    by_access = sorted(range(10), key=lambda i: (i * 7919) % 10)
    runner = CliRunner()
    args = ["cache-clean", "--cache-dir", str(tmp_path / "cache")]
    dry = runner.invoke(cli, [*args, "--max-size", "5000", "--keep", "40", "--dry-run"])
    assert dry.exit_code == 0 and "would remove 8 files" in dry.output
    assert len(list(cache.entries())) == 10
    assert runner.invoke(cli, [*args, "--max-size", "20K"]).output.count("removed 0 files") == 1
    done = runner.invoke(cli, ["--json", *args, "--max-size", "5000", "--keep", "40"])
    assert done.exit_code == 0 and json.loads(done.output)["files_removed"] == 8
    left = sorted(entry.name for entry in cache.entries())
    assert left == sorted(f"/c/f{i}@{100 + i}" for i in by_access[8:])  # the two most recently used
    assert runner.invoke(cli, [*args, "--max-size", "lots"]).exit_code == 2


def test_cache_clean_skips_a_file_in_use(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    source = tmp_path / "src"
    source.write_bytes(b"x" * 100)
    cache.add_file("/busy", source, 1)
    cache.add_file("/idle", source, 1)
    with cache.locked("/busy", exclusive=False):
        report = cache.clean(100, keep_fraction=0)
    assert report.files_removed == 1 and [e.name for e in cache.entries()] == ["/busy@1"]


@pytest.mark.parametrize("text, expected", [("8G", 8 << 30), ("512M", 512 << 20), ("1G512M", (1 << 30) + (512 << 20)),
                                            ("1000", 1000), ("2GiB", 2 << 30), ("1.5K", 1536)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "8X", "-1", "1 G 5"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


# -- put -r: a folder over a few connections (issue #10) ----------------------------------------


def write_tree(folder: Path, contents: dict[str, bytes]) -> dict[str, bytes]:
    """Write ``relative path -> bytes`` below ``folder``; return ``contents``."""
    for relative, data in contents.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return contents


def _package(folder: Path) -> dict[str, bytes]:
    contents = {f"tests/{i}.in": b"%d\n" % i * (i + 1) for i in range(12)}
    contents |= {"checker.cpp": b"int main() {}\n", "deep/er/x.out": os.urandom(5000), "empty": b""}
    return write_tree(folder, contents)


@pytest.mark.parametrize("where", ["root", "url"])
def test_put_recursive(where: str, server_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    store = ["--root", str(tmp_path / "data")] if where == "root" else ["--url", server_url]
    prefix = f"/pkg-{where}-{os.getpid()}"

    def invoke(*args: str, code: int = 0, progress: str = "0"):  # type: ignore[no-untyped-def]
        result = runner.invoke(cli, [*store, *args], env={"CASTORE_PROGRESS": progress})
        assert result.exit_code == code, (result.output, result.exception)
        return result

    if where == "root":
        invoke("init")
    contents = _package(tmp_path / "pkg")
    (tmp_path / "pkg" / "link").symlink_to(tmp_path / "pkg" / "checker.cpp")
    done = json.loads(invoke("--json", "put", "-r", "--jobs", "3", str(tmp_path / "pkg"), f"{prefix}@500").stdout)
    assert (done["files"], done["failed"], done["kept_newer"], done["skipped"]) == (len(contents), 0, 0, 1)
    assert sorted(done["names"]) == sorted(f"{prefix}/{relative}@500" for relative in contents)
    for relative, data in contents.items():
        assert invoke("cat", f"{prefix}/{relative}").stdout_bytes == data
    again = invoke("put", "-r", str(tmp_path / "pkg"), f"{prefix}@400")  # older: every file kept
    assert "put 0 files" in again.stdout and f"{len(contents)} kept" in again.stdout
    invoke("put", "-r", "--strict", str(tmp_path / "pkg"), f"{prefix}@400", code=8)
    shown = invoke("put", "-r", "--jobs", "4", str(tmp_path / "pkg"), f"{prefix}@700", progress="1")
    assert f"files={len(contents)}/{len(contents)}" in shown.stderr  # the bar counted every file
    # a file with an invalid name fails alone, with its own line, and the exit code says why
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "good").write_bytes(b"good")
    (bad / "name with \x01 control").write_bytes(b"bad name")
    failed = invoke("put", "-r", str(bad), f"{prefix}/bad@600", code=4)
    assert "failed:" in failed.stderr and "1 of 2 files were not stored" in failed.stderr
    assert invoke("cat", f"{prefix}/bad/good").stdout_bytes == b"good"
    # a newline in a local name cannot forge a line of output: the name is shown escaped
    (bad / "new\nline").write_bytes(b"forged?")
    forged = invoke("put", "-r", str(bad), f"{prefix}/bad@610", code=4)
    assert "\\nline" in forged.stderr
    assert not any(line.startswith("line") for line in forged.stderr.splitlines())
    # a prefix with a trailing slash, and the root itself, are prefixes like any other
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / f"top-{where}").write_bytes(b"top")
    invoke("put", "-r", str(tmp_path / "one"), f"{prefix}/slash/@620")
    assert invoke("cat", f"{prefix}/slash/top-{where}").stdout_bytes == b"top"
    invoke("put", "-r", str(tmp_path / "one"), "/@630")
    assert invoke("cat", f"/top-{where}").stdout_bytes == b"top"


def test_put_recursive_usage_errors(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    assert "use castore put -r" in run("put", str(tmp_path / "d"), "/x", code=2).output
    assert "--jobs is for put -r" in run("put", "--jobs", "2", str(tmp_path / "f"), "/x", code=2).output
    assert "no such local folder" in run("put", "-r", str(tmp_path / "f"), "/x", code=7).output
    run("put", "-r", "--jobs", "0", str(tmp_path / "d"), "/x", code=2)
