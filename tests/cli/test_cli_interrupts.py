"""Long commands a person can interrupt and read, and names that are folders (issue #21, sections 5 and 6).

* ``put FILE NAME`` onto a folder (or below a file) is refused, exit 12, locally and over ``--url``;
  ``rm FOLDER`` suggests ``rm -r``;
* Ctrl-C during ``put -r`` says what was stored and exits 130, leaving only whole files;
* a refused token stops ``put -r``, ``rm -r`` and ``ingest`` at the first refusal, exit 10;
* ``cache-clean --cache-dir`` on a missing folder is an error, and creates nothing;
* the byte bar stays below 100 % until every file is done.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from castore.cli import cli
from castore.cli.common import EXIT_CODES, progress
from castore.server.tokens import create_token
from castore.store import Store

from ..server_process import castore_server, wait_for
from .test_cli import write_tree

EXIT_DENIED, EXIT_CONFLICT, EXIT_INTERRUPTED = 10, 12, 130


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("cli-ops") / "store") as url:
        yield url


def _invoke(where: list[str], *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, [*where, *args], env={"CASTORE_PROGRESS": "0"})
    assert result.exit_code == code, (result.output, result.exception)
    return result


# -- 5. a file where a folder is; rm of a folder ---------------------------------------------------


@pytest.mark.parametrize("mode", ["root", "url"])
def test_put_onto_a_folder_or_below_a_file_is_refused(mode: str, server: str, tmp_path: Path) -> None:
    where = ["--root", str(tmp_path / "data")] if mode == "root" else ["--url", server]
    if mode == "root":
        _invoke(where, "init")
    local = tmp_path / "f"
    local.write_bytes(b"content")
    base = f"/problems-{mode}"
    _invoke(where, "put", str(local), f"{base}/1/a.in")
    onto = _invoke(where, "put", str(local), f"{base}/1", code=EXIT_CONFLICT)
    assert onto.output == f"Error: cannot store {base}/1: it is a folder (files are stored below it)\n"
    below = _invoke(where, "put", str(local), f"{base}/1/a.in/x", code=EXIT_CONFLICT)
    assert below.output == f"Error: cannot store {base}/1/a.in/x: {base}/1/a.in is a file\n"
    assert _invoke(where, "ls", base).output == f"{base}/1/a.in\n"


@pytest.mark.parametrize("mode", ["root", "url"])
def test_rm_of_a_folder_suggests_rm_r(mode: str, server: str, tmp_path: Path) -> None:
    where = ["--root", str(tmp_path / "data")] if mode == "root" else ["--url", server]
    if mode == "root":
        _invoke(where, "init")
    _invoke(where, "put", "-", f"/rm-{mode}/1/a.in")
    refused = _invoke(where, "rm", f"/rm-{mode}/1", code=2)
    assert refused.output == f"Error: /rm-{mode}/1 is a folder: remove it with castore rm -r /rm-{mode}/1\n"
    assert "not found" in _invoke(where, "rm", f"/rm-{mode}/nothing", code=3).output
    assert _invoke(where, "ls", f"/rm-{mode}").output == f"/rm-{mode}/1/a.in\n"


# -- 6. Ctrl-C during put -r ------------------------------------------------------------------------


def _many_files(folder: Path, count: int, size: int = 256) -> dict[str, bytes]:
    """``count`` files of ``size`` random bytes and a few lines of text, in 7 folders."""
    return write_tree(folder, {f"d{i % 7}/f{i:05d}": os.urandom(size) + b"%d\n" % i * 200 for i in range(count)})


@pytest.mark.parametrize("mode", ["root", "url"])
def test_ctrl_c_during_put_r_says_what_was_stored(mode: str, server: str, tmp_path: Path) -> None:
    count = 2000  # of 24 KiB each: about 40 batches over --url, so that the command is still running when signalled
    contents = _many_files(tmp_path / "pkg", count, 24 << 10)
    prefix = f"/ctrl-c-{mode}"
    root = tmp_path / "data"
    if mode == "root":
        _invoke(["--root", str(root)], "init")
        where = ["--root", str(root)]
    else:
        where = ["--url", server]

    def stored() -> list[str]:
        if mode == "url":
            answer = httpx.get(f"{server}/list{prefix}/", timeout=10)
            return [] if answer.status_code == 400 else [f"{prefix}/{p}" for p in answer.text.split()]
        with Store.open(root, read_only=True) as store:
            return [info.path for info in store.list(prefix)]

    command = [sys.executable, "-m", "castore", *where, "put", "-r", "--jobs", "2", str(tmp_path / "pkg"), prefix]
    env = {**os.environ, "CASTORE_PROGRESS": "0"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_for(lambda: len(stored()) >= 20 or process.poll() is not None, "no file was stored", timeout=60)
        assert process.poll() is None, "put -r finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == EXIT_INTERRUPTED, err
    said = re.fullmatch(rf"Error: interrupted: stored (\d+) of {count} files; running the same command again "
                        r"finishes the rest\n", err.decode())
    assert said, err
    listed = stored()
    assert 20 <= len(listed) < count and int(said.group(1)) == len(listed)
    for path in listed:  # every path the store lists is whole and right
        relative = path[len(prefix) + 1:]
        assert _invoke(where, "cat", path).stdout_bytes == contents[relative]
    again = _invoke(where, "put", "-r", str(tmp_path / "pkg"), prefix)
    assert f"put {count} files" in again.output
    assert len(stored()) == count


def test_the_byte_bar_stays_below_100_percent_until_the_files_are_done(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTORE_PROGRESS", "1")
    with progress("put", 1000, files=2) as bar:
        bar.update(1000)  # every byte sent (read), no answer yet
        assert bar.bar.n < 1000 and bar.bar.format_dict["n"] / 1000 < 0.995
        bar.file_done(nbytes=400)
        bar.update(600)  # a retry sends bytes again: never past the total either
        assert bar.bar.n / 1000 < 0.995
        bar.file_done(nbytes=600)
        assert bar.bar.n == 1000


# -- 6. a refused token stops put -r, rm -r and ingest at once -------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("cli-tokens") / "store"
    with Store.open(root, create=True) as store:
        tokens = {role: create_token(store.metadata, role, role)[1] for role in ("read", "write")}
        store.put("/kept/a", b"a", version=1)
        store.put("/kept/b", b"b", version=1)
    os.environ["CASTORE_TOKEN_CACHE_SECONDS"] = "0"
    try:
        with castore_server(root) as url:
            yield url, tokens
    finally:
        del os.environ["CASTORE_TOKEN_CACHE_SECONDS"]


def test_a_refused_token_stops_at_the_first_refusal(guarded: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, tokens = guarded
    host = url.removeprefix("http://")
    _many_files(tmp_path / "pkg", 40)
    for who, status in ((None, 401), ("nobody-knows-this", 401), (tokens["read"], 403)):
        where = ["--url", url if who is None else f"http://any:{who}@{host}"]
        for args in (["put", "-r", str(tmp_path / "pkg"), "/denied"], ["ingest", str(tmp_path / "pkg"), "/denied"],
                     ["rm", "-r", "--yes", "/kept"]):
            if status == 401 and args[0] == "rm":
                args = ["rm", "/kept/a"]  # rm -r lists first: a read it may not do
            refused = _invoke(where, *args, code=EXIT_DENIED)
            lines = refused.output.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: not allowed: "), refused.output
            assert f"HTTP/{status}: " in lines[0]
    kept = _invoke(["--url", f"http://any:{tokens['read']}@{host}"], "ls", "/kept").output
    assert kept == "/kept/a\n/kept/b\n"
    assert "10" in CliRunner().invoke(cli, ["put", "--help"]).output


def test_exit_codes_are_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in (EXIT_DENIED, EXIT_CONFLICT, EXIT_INTERRUPTED):
        assert code in EXIT_CODES and f"| `{code}` |" in readme


# -- 6. cache-clean on a missing folder ------------------------------------------------------------


def test_cache_clean_of_a_missing_folder_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cache"
    result = CliRunner().invoke(cli, ["cache-clean", "--cache-dir", str(missing), "--max-size", "1G"])
    assert result.exit_code == 7, result.output
    assert result.output == f"Error: {missing}: no such cache folder\n"
    assert not missing.exists()


def test_a_read_only_store_stops_put_r_at_once(tmp_path: Path) -> None:
    """A server started with --read-only answers 403: the same exit 10, one line; locally ReadOnlyStore is 10 too."""
    from castore.cli.common import exit_code_for
    from castore.errors import ReadOnlyStore

    assert exit_code_for(ReadOnlyStore("the store is open read-only")) == EXIT_DENIED
    _many_files(tmp_path / "pkg", 30)
    Store.open(tmp_path / "store", create=True).close()
    with castore_server(tmp_path / "store", "--read-only") as url:
        refused = _invoke(["--url", url], "put", "-r", str(tmp_path / "pkg"), "/ro", code=EXIT_DENIED)
    assert len(refused.output.splitlines()) == 1 and "HTTP/403: " in refused.output
