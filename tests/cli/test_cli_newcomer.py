"""The castore command as a newcomer meets it: one behaviour local and remote, one-line errors,
no silent surprises (issue #11)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from castore.cli import cli
from castore.cli.common import EXIT_CODES
from castore.store import Store

from ..server_process import castore_server, free_port

ROOT = Path(__file__).resolve().parents[2]
CASTORE = [sys.executable, "-m", "castore"]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("newcomer-remote") / "store") as url:
        yield url


def invoke(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def test_every_command_gives_the_same_answer_local_and_remote(server_url: str, tmp_path: Path) -> None:
    """Each command once against --root and once against --url: same stdout, stderr and exit code."""
    root = tmp_path / "local"
    Store.open(root, create=True).close()
    data = tmp_path / "a.in"
    data.write_bytes(b"1 2\n" * 100)
    folder = tmp_path / "pkg"
    (folder / "t").mkdir(parents=True)
    (folder / "t" / "1.in").write_bytes(b"one")
    os.utime(folder / "t" / "1.in", (1000, 1000))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "good").write_bytes(b"good")
    (bad / "x@y").write_bytes(b"an @ in a name")
    out = tmp_path / "out"
    steps: list[tuple[list[str], bytes | None]] = [
        (["put", str(data), "/c/a.in@100"], None),
        (["put", "-", "/c/b.in@5", ], b"from stdin"),
        (["put", str(data), "/c/a.in@50"], None),  # older: kept
        (["put", "--strict", str(data), "/c/a.in@50"], None),
        (["put", str(tmp_path / "nope"), "/c/x@1"], None),
        (["put", str(data), "/c/../x"], None),
        (["put", str(data), "/c/a@99999999999999999999999"], None),
        (["cat", "/c/b.in"], None),
        (["cat", "/c/missing"], None),
        (["cat", "/c/a.in@7"], None),
        (["get", "/c/b.in"], None),
        (["get", "/c/b.in@5", str(out)], None),
        (["get", "/c/b.in", str(tmp_path / "no" / "such" / "folder")], None),
        (["ls"], None),
        (["ls", "/c"], None),
        (["ls", "-l", "/c"], None),
        (["--json", "ls", "-l", "/c"], None),
        (["ls", "/missing"], None),
        (["ls", "relative"], None),
        (["stat", "/c/a.in"], None),
        (["--json", "stat", "/c/a.in"], None),
        (["stat", "/c/a.in@50"], None),
        (["stat", "/c/missing"], None),
        (["--json", "stat", "/c/missing"], None),
        (["ingest", str(folder), "/pkg"], None),
        (["ingest", str(folder), "/pkg"], None),
        (["put", "-r", str(folder), "/tree@7"], None),
        (["put", "-r", str(folder), "/tree@3"], None),  # older: kept
        (["put", "-r", "--strict", str(folder), "/tree@3"], None),
        (["--json", "put", "-r", str(folder), "/tree/@9"], None),
        (["put", "-r", str(bad), "/tree/bad@9"], None),  # one bad name fails alone
        (["put", "-r", str(data), "/tree"], None),  # not a folder
        (["put", "-r", str(folder), "relative"], None),
        (["ingest", str(bad), "/bad"], None),  # refused whole: nothing stored
        (["ls", "-l", "/tree"], None),
        (["rm", "/c/a.in@10"], None),
        (["rm", "/c/a.in"], None),
        (["rm", "/c/a.in"], None),
        (["rm", "-r", "/pkg"], None),
        (["rm", "-r", "--yes", "/pkg"], None),
        (["ls", "/"], None),
    ]
    for args, stdin in steps:
        local = invoke("--root", str(root), *args, input=stdin)
        local_out = out.read_bytes() if out.exists() else None
        out.unlink(missing_ok=True)
        remote = invoke("--url", server_url, *args, input=stdin)
        remote_out = out.read_bytes() if out.exists() else None
        out.unlink(missing_ok=True)
        assert (local.exit_code, local.stdout, local.stderr, local_out) == (
            remote.exit_code, remote.stdout, remote.stderr, remote_out), args
        assert "Traceback" not in local.output + remote.output
    for command in ("log /c/b.in", "du", "gc", "check", "init", "serve"):
        assert invoke("--url", server_url, *command.split()).exit_code == 2


def test_exit_codes_and_messages(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    assert invoke("--root", root, "init").exit_code == 0
    data = tmp_path / "a"
    data.write_bytes(b"x")
    assert invoke("--root", root, "put", str(data), "/a@10").exit_code == 0
    older = invoke("--root", root, "put", str(data), "/a@5")
    assert older.exit_code == 0 and older.stdout == "/a@10\n"
    assert older.stderr == "kept: a newer version @10 is stored (/a@5 was not stored)\n"
    strict = invoke("--root", root, "put", "--strict", str(data), "/a@5")
    assert strict.exit_code == 8 and strict.stderr.count("\n") == 2  # the notice, then the error
    big = invoke("--root", root, "put", str(data), "/a@99999999999999999999999")
    assert big.exit_code == 4 and "too large" in big.stderr and "digits" not in big.stderr
    missing = invoke("--root", root, "get", "/a", str(tmp_path / "nofolder" / "out"))
    assert missing.exit_code == 7
    assert missing.stderr == f"Error: {tmp_path / 'nofolder' / 'out'}: No such file or directory\n"
    assert not (tmp_path / "nofolder").exists()
    as_json = invoke("--root", root, "--json", "cat", "/nope")
    assert as_json.exit_code == 3 and json.loads(as_json.stdout) == {"error": "not found: /nope", "code": 3}
    usage = invoke("--root", root, "--json", "ls", "--max-version", "x")
    assert usage.exit_code == 2 and json.loads(usage.stdout)["code"] == 2


@pytest.mark.parametrize("url", ["127.0.0.1:9999", "ftp://example.org", "http://"])
def test_a_bad_url_is_one_line_and_exit_2(url: str) -> None:
    done = subprocess.run([*CASTORE, "--url", url, "ls"], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: --url: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_a_wrong_url_prefix_is_named_as_such(server_url: str) -> None:
    """A server with no file list at that URL (castore answers 404 to unknown endpoints) is not "not found: "."""
    done = invoke("--url", f"{server_url}/no-such-prefix", "ls", "/")
    assert done.exit_code == 3
    assert done.stderr == f"Error: no file list at {server_url}/no-such-prefix (is the --url prefix right?)\n"


def test_errors_are_printed_once(server_url: str) -> None:
    done = invoke("--url", server_url, "cat", "/never/stored")
    assert done.exit_code == 3 and done.stderr == "Error: not found: /never/stored\n"


def test_init_takes_settings(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    done = invoke("--root", root, "--json", "init", "--retention", "3", "--inline-max", "0", "--zstd-level", "5")
    assert done.exit_code == 0
    with Store.open(root) as store:
        assert store.settings() == {"retention": 3, "inline_max": 0, "zstd_level": 5}
    again = invoke("--root", root, "init", "--retention", "4")
    assert again.exit_code == 2 and "retention=3" in again.stderr
    assert invoke("--root", root, "init", "--zstd-level", "99").exit_code == 2


def test_check_prints_counts(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    with Store.open(root, create=True) as store:
        store.put("/a", b"x", 1)
        store.put("/a", b"y", 2)
    done = invoke("--root", root, "check")
    assert done.exit_code == 0
    assert "paths:          1\nversions:       2\nblobs:          2 checked" in done.stdout
    assert done.stdout.endswith("status:         clean (exit 0)\n")


def test_rm_recursive_counts_and_asks(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    with Store.open(root, create=True) as store:
        for i in range(3):
            store.put(f"/eval/{i}", b"x", 1)
        store.put("/keep", b"x", 1)
    refused = invoke("--root", root, "rm", "-r", "/eval")
    assert refused.exit_code == 2 and "3 files" in refused.stderr and "--yes" in refused.stderr
    done = invoke("--root", root, "rm", "-r", "--yes", "/eval")
    assert done.exit_code == 0 and done.stdout == "removed 3 files below /eval\n"
    with Store.open(root) as store:
        assert [i.path for i in store.list("/")] == ["/keep"]


def test_ingest_skips_links_and_fifos_and_counts_kept(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    Store.open(root, create=True).close()
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the folder")
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "a.in").write_bytes(b"new content")
    (folder / "link").symlink_to(secret)
    (folder / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(folder / "fifo")
    os.utime(folder / "a.in", (1000, 1000))
    with Store.open(root) as store:
        store.put("/pkg/a.in", b"newer", 2000)
    done = invoke("--root", root, "ingest", str(folder), "/pkg")
    assert done.exit_code == 0
    assert done.stdout == "ingested 0 files (11 B), 1 kept (a newer version is stored), 3 skipped\n"
    assert "kept: a newer version @2000 is stored" in done.stderr
    assert f"skipped (symlink): {folder / 'link'}" in done.stderr
    assert f"skipped (not a regular file): {folder / 'fifo'}" in done.stderr
    with Store.open(root) as store:
        assert [i.path for i in store.list("/")] == ["/pkg/a.in"]
        assert store.read_bytes("/pkg/a.in") == b"newer"
    assert invoke("--root", root, "ingest", "--strict", str(folder), "/pkg").exit_code == 8


@pytest.mark.parametrize("command", ["put -r", "ingest"])
@pytest.mark.parametrize("where", ["root", "url"])
def test_a_store_folder_inside_the_tree_is_skipped(command: str, where: str, server_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`castore put -r .` where the default store ./castore-data lives: the store's own files are not stored."""
    monkeypatch.chdir(tmp_path)
    assert invoke("init").exit_code == 0  # ./castore-data, the default --root
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "1.in").write_bytes(b"1 2\n")
    (tmp_path / "notes.txt").write_bytes(b"n")
    store = [] if where == "root" else ["--url", server_url]
    prefix = f"/tree-{where}-{command.split()[0]}"
    done = invoke(*store, *command.split(), ".", prefix)
    assert done.exit_code == 0, done.output
    assert f"skipped (a castore store's folder): {Path('.') / 'castore-data'}" in done.stderr
    assert done.stdout.endswith("1 skipped\n"), done.stdout
    listed = invoke(*store, "ls", prefix)
    assert listed.stdout.splitlines() == [f"{prefix}/notes.txt", f"{prefix}/tests/1.in"]


@pytest.mark.parametrize("command", ["put -r", "ingest"])
def test_a_store_folder_given_as_the_tree_is_skipped(command: str, tmp_path: Path) -> None:
    """`castore put -r ./castore-data /x`: the store's own files (its database, reserve, blobs) are not stored."""
    root = tmp_path / "castore-data"
    assert invoke("--root", str(root), "init").exit_code == 0
    (root / "stray.txt").write_bytes(b"x")
    done = invoke("--root", str(root), *command.split(), str(root), "/x")
    assert done.exit_code == 0, done.output
    assert f"skipped (a castore store's folder): {root}" in done.stderr
    assert done.stdout.startswith(("put 0 files", "ingested 0 files")), done.stdout
    assert invoke("--root", str(root), "ls", "/x").stdout == ""


def test_ingest_following_links_does_not_go_round_a_loop(tmp_path: Path) -> None:
    """A link to a folder above it (a/up -> ..) is skipped, listed: followed, it stored one file ~40 times
    (and two such links never ended: 2**40 paths)."""
    folder = tmp_path / "tree"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "f").write_bytes(b"f")
    (folder / "a" / "up").symlink_to("..")
    root = str(tmp_path / "s")
    assert invoke("--root", root, "init").exit_code == 0
    done = invoke("--root", root, "ingest", "--follow-symlinks", str(folder), "/t")
    assert done.exit_code == 0, done.output
    assert f"skipped (a symlink loop): {folder / 'a' / 'up'}" in done.stderr
    assert invoke("--root", root, "ls", "/t").stdout.splitlines() == ["/t/a/f"]  # once, not ~40 times


def test_ingest_following_links_does_not_go_round_two_links_that_point_at_each_other(tmp_path: Path) -> None:
    """a/x -> b and b/y -> a: neither is above the other, and the walk would go a/x/y/x/y/... until paths get too long."""
    root = str(tmp_path / "s")
    Store.open(root, create=True).close()
    folder = tmp_path / "pkg"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        (folder / name / f"{name}.in").write_bytes(name.encode())
    (folder / "a" / "x").symlink_to(folder / "b", target_is_directory=True)
    (folder / "b" / "y").symlink_to(folder / "a", target_is_directory=True)
    done = invoke("--root", root, "ingest", "--follow-symlinks", str(folder), "/pkg")
    assert done.exit_code == 0, done.output
    with Store.open(root) as store:
        stored = sorted(i.path for i in store.list("/"))
    # each folder once under each name that does not go round: a, a/x (b), b, b/y (a)
    assert stored == ["/pkg/a/a.in", "/pkg/a/x/b.in", "/pkg/b/b.in", "/pkg/b/y/a.in"], stored
    assert f"skipped (a symlink loop): {folder / 'a' / 'x' / 'y'}" in done.stderr
    assert f"skipped (a symlink loop): {folder / 'b' / 'y' / 'x'}" in done.stderr


@pytest.mark.parametrize("where", ["root", "url"])
def test_ingest_refuses_a_bad_name_before_storing_anything(where: str, server_url: str, tmp_path: Path) -> None:
    """A file name castore cannot store (an @ in it) stops ingest before the first put, not halfway."""
    store = ["--root", str(tmp_path / "s")] if where == "root" else ["--url", server_url]
    if where == "root":
        Store.open(tmp_path / "s", create=True).close()
    folder = tmp_path / "pkg"
    folder.mkdir()
    for name in ("a.in", "x@y", "z.in"):
        (folder / name).write_bytes(name.encode())
    prefix = f"/refused-{where}"
    done = invoke(*store, "ingest", str(folder), prefix)
    assert done.exit_code == 4, done.output
    assert done.stderr == f"Error: invalid path '{prefix}/x@y': a path must not contain '@' (it separates the version)\n"
    assert invoke(*store, "ls", prefix).exit_code == 3  # nothing was stored


def test_progress_bars_in_url_mode(server_url: str, tmp_path: Path) -> None:
    data = tmp_path / "big"
    data.write_bytes(os.urandom(3 << 20))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_bytes(b"x" * 1000)
    env = {"CASTORE_PROGRESS": "1"}
    put = invoke("--url", server_url, "put", str(data), "/big@1", env=env)
    assert put.exit_code == 0 and "put" in put.stderr and "3.00M" in put.stderr
    get = invoke("--url", server_url, "get", "/big", str(tmp_path / "back"), env=env)
    assert get.exit_code == 0 and "get" in get.stderr and "3.00M" in get.stderr
    ingest = invoke("--url", server_url, "ingest", str(tmp_path / "dir"), "/d", env=env)
    assert ingest.exit_code == 0 and "ingest" in ingest.stderr and "files=1/1" in ingest.stderr
    tree = invoke("--url", server_url, "put", "-r", str(tmp_path / "dir"), "/progress-tree", env=env)
    assert tree.exit_code == 0 and "B/s" in tree.stderr and "files=1/1" in tree.stderr  # bytes, rate, files
    assert (tmp_path / "back").read_bytes() == data.read_bytes()
    removed = invoke("--url", server_url, "rm", "-r", "--yes", "/progress-tree", env=env)
    assert removed.exit_code == 0 and "rm" in removed.stderr
    assert "B/s" not in removed.stderr and "/1 [" in removed.stderr and "files/s" in removed.stderr  # files, not bytes


def test_ls_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with Store.open(root, create=True) as store:
        for i in range(2000):
            store.put(f"/{'long-folder-name/' * 8}{i:05}", b"x", 1)
    ls = subprocess.Popen([*CASTORE, "--root", str(root), "ls"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert ls.stdout is not None and ls.stdout.readline().startswith(b"/long-folder-name/")
    ls.stdout.close()  # what `head -1` does
    assert ls.wait(60) == 141
    assert ls.stderr is not None and ls.stderr.read() == b""


def test_ls_over_url_into_a_closed_pipe_exits_quietly(server_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):  # about 90 KB of listing: more than a pipe holds
        (folder / f"{'x' * 200}{i:04}").write_bytes(b"x")
    assert invoke("--url", server_url, "put", "-r", str(folder), "/pipe@1").exit_code == 0
    ls = subprocess.Popen([*CASTORE, "--url", server_url, "ls", "/pipe"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    assert ls.stdout is not None and ls.stdout.readline().startswith(b"/pipe/xxx")
    ls.stdout.close()
    assert ls.wait(60) == 141
    assert ls.stderr is not None and ls.stderr.read() == b""


def test_serve_refuses_a_missing_store_and_prints_where_it_listens(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    refused = subprocess.run([*CASTORE, "--root", str(typo), "serve", "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 5 and "init" in refused.stderr and not typo.exists()
    port = free_port()
    server = subprocess.Popen([*CASTORE, "--root", str(typo), "serve", "--init", "--port", str(port),
                               "--workers", "2"], stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        assert re.fullmatch(rf"castore \S+ serving {re.escape(str(typo))} at http://127\.0\.0\.1:{port} "
                            r"\(2 workers, open to anyone: no access token needed\)\n", line), line
        deadline = time.monotonic() + 30
        while True:  # wait until it listens
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.05)
        busy = subprocess.run([*CASTORE, "--root", str(typo), "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert busy.returncode == 9 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def _commands(group: click.Group, words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand (``token create``, ``migrate status``) with the words that call it."""
    for name, command in group.commands.items():
        yield (*words, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*words, name))


def test_run_sh_serves_a_new_embedded_store_and_says_where(tmp_path: Path) -> None:
    """The README's first command: scripts/run.sh passes serve --init (the embedded default) and prints one line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CASTORE_ROOT", "CASTORE_METADATA", "CASTORE_BLOBS")}
    server = subprocess.Popen(["bash", str(ROOT / "scripts" / "run.sh"), "--port", str(port), "--workers", "1"],
                              cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        while line and not line.startswith("castore "):  # anything ensure_venv printed first
            line = server.stderr.readline()
        store = tmp_path / "castore-data"
        assert re.fullmatch(rf"castore \S+ serving {re.escape(str(store))} at http://127\.0\.0\.1:{port} "
                            r"\(1 worker, open to anyone: no access token needed\)\n", line), line
        assert (store / "metadata.sqlite3").exists()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_every_command_help_says_what_with_an_example() -> None:
    seen = []
    for words, command in _commands(cli):
        done = invoke(*words, "--help")
        assert done.exit_code == 0 and "Example:" in done.stdout, words
        assert command.help and len(command.help.split(".")[0]) > 10, words
        seen.append(" ".join(words))
    assert {"put", "token create", "migrate status"} <= set(seen)
    put_help = invoke("put", "--help").stdout
    assert "put -r" in put_help and "--jobs" in put_help  # the folder upload has its example too


def test_readme_documents_every_command_and_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    for name in cli.commands:
        assert f"`castore {name}" in section, f"README's Command line section does not list {name}"
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", section, re.MULTILINE))
    assert sorted(map(int, rows)) == sorted(EXIT_CODES), "the exit code table must list every code once"


def test_importing_the_cli_loads_no_server_or_database_library() -> None:
    code = ("import sys, castore.cli; "
            "print(sorted(m for m in ('sqlalchemy', 'starlette', 'uvicorn', 'tqdm', 'zstandard') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_progress_counts_each_byte_once_over_two_passes(tmp_path: Path) -> None:
    """The store hashes a seekable source, then reads it again: the bar must still end at its size."""
    import io

    from castore.client.remote import ProgressReader

    seen: list[int] = []
    reader = ProgressReader(io.BytesIO(b"x" * 1000), seen.append)
    assert reader.read(600) and reader.read() and reader.seek(0) == 0 and len(reader.read()) == 1000
    assert sum(seen) == 1000
