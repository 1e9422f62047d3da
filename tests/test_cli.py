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

ROOT = Path(__file__).resolve().parents[1]


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
    listed = [json.loads(line) for line in run("--json", "ls", "/p").output.splitlines()]
    assert [i["name"] for i in listed][1:] == ["/p/2.in@5", "/p/3.in@6"]
    stat = json.loads(run("--json", "stat", "/p/2.in").output)
    assert stat["size"] == 6 and stat["version"] == 5 and len(stat["key"]) == 32
    run("put", str(local), "/p/2.in@7")
    log = json.loads(run("--json", "log", "/p/2.in").output)
    assert [i["version"] for i in log] == [7, 5]
    du = json.loads(run("--json", "du").output)
    assert du["files"] == 3 and du["blobs"] == 2 and du["dedup_ratio"] > 1
    assert json.loads(run("--json", "rm", "/p/2.in@6").output)["removed"] is False
    assert json.loads(run("--json", "rm", "/p/2.in").output)["removed"] is True
    assert json.loads(run("--json", "gc").output)["blobs"] == 0  # the content is still used by /p/1.in
    assert run("check").output.strip() == "ok"


def test_exit_codes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    assert "not found" in run("cat", "/missing", code=3).output
    run("put", "-", "/f@5", input=b"x")
    assert "version 4" in run("cat", "/f@4", code=3).output
    assert "invalid path" in run("put", "-", "/a/../b", input=b"x", code=4).output
    assert "invalid version" in run("cat", "/f@abc", code=4).output
    assert "No such file" in run("put", str(tmp_path / "nope"), "/x", code=7).output
    run("nosuchcommand", code=2)


def test_ingest_folder(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    folder = tmp_path / "pkg"
    (folder / "tests").mkdir(parents=True)
    (folder / "tests" / "1.in").write_bytes(b"same")
    (folder / "tests" / "2.in").write_bytes(b"same")
    os.utime(folder / "tests" / "1.in", (1000, 1000))
    assert json.loads(run("--json", "ingest", str(folder), "/pkg").output)["files"] == 2
    names = [json.loads(line)["name"] for line in run("--json", "ls", "/pkg").output.splitlines()]
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
