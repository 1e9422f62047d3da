"""The README's "Running at scale" steps, run as written: the database made as ``postgres``, the
bucket made by ``castore init --create-bucket``, then ``castore serve`` storing a large file there.

The snippets are taken from README.md by their ``<!-- readme-scale: NAME -->`` markers. Only
where the servers are is changed: PostgreSQL's host and port (the test's throw-away cluster),
the S3 endpoint (moto or radosgw), the cache folder, and where ``serve`` listens.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from castore.blobs.s3 import _client

from ..backends import PostgresCluster, S3Server
from ..server_process import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "castore-blobs"


def readme_snippets() -> dict[str, list[str]]:
    """Each marked snippet's command lines (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    found = dict(re.findall(r"<!-- readme-scale: (\S+) -->\n```\w*\n(.*?)```", text, re.DOTALL))
    assert set(found) == {"database", "store"}, sorted(found)
    return {name: [line.split("  #")[0].strip() for line in body.strip().splitlines()] for name, body in found.items()}


def as_postgres(command: str, postgres: PostgresCluster) -> None:
    """``sudo -u postgres …`` as written, told where the test's cluster listens (sudo resets the environment)."""
    words = shlex.split(command)
    assert words[:3] == ["sudo", "-u", "postgres"], command
    switch = ["sudo", "-u", "postgres"] if shutil.which("sudo") else ["runuser", "-u", "postgres", "--"]
    subprocess.run([*switch, "env", "PGHOST=127.0.0.1", f"PGPORT={postgres.port}", *words[3:]], check=True,
                   capture_output=True, timeout=60, cwd="/")


def test_the_running_at_scale_steps_work_as_written(postgres: PostgresCluster, s3_server: S3Server,
                                                    tmp_path: Path) -> None:
    snippets = readme_snippets()
    for command in snippets["database"]:
        as_postgres(command, postgres)
    try:
        run_store_steps(snippets["store"], postgres, s3_server, tmp_path)
    finally:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS castore WITH (FORCE)")
            c.execute("DROP ROLE IF EXISTS castore")
        client = _client(s3_server.endpoint, s3_server.REGION)
        for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
        client.delete_bucket(Bucket=BUCKET)


def run_store_steps(lines: list[str], postgres: PostgresCluster, s3_server: S3Server, tmp_path: Path) -> None:
    env = dict(os.environ)
    served = False
    assert not any(b["Name"] == BUCKET for b in _client(s3_server.endpoint, s3_server.REGION).list_buckets()["Buckets"])
    for line in lines:
        words = shlex.split(line)
        if words[0].endswith("pip"):
            continue  # castore is installed already
        if words[0] == "export":
            for assignment in words[1:]:
                name, value = assignment.split("=", 1)
                if value == "…":
                    continue  # the test's credentials are in the environment already
                env[name] = (value.replace("db.example:5432", f"127.0.0.1:{postgres.port}")
                             .replace("https://s3.example", s3_server.endpoint)
                             .replace("/var/cache/castore", str(tmp_path / "cache")))
            continue
        assert words[0] == "castore", line
        if words[1] == "serve":
            serve_and_put_a_large_file(words[2:], env, s3_server)
            served = True
        else:
            done = subprocess.run([sys.executable, "-m", "castore", *words[1:]], env=env, capture_output=True,
                                  text=True, timeout=120, check=False)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
    assert served, "the README's steps end with castore serve"


def serve_and_put_a_large_file(options: list[str], env: dict[str, str], s3_server: S3Server) -> None:
    """``castore serve`` with the README's options, listening on loopback; a file too large to be
    kept inline goes into the bucket through it."""
    port = free_port()
    where = {"--host": "127.0.0.1", "--port": str(port), "--workers": "2", "--allowed-hosts": "127.0.0.1"}
    options = [where.get(options[i - 1], word) if i else word for i, word in enumerate(options)]
    process = subprocess.Popen([sys.executable, "-m", "castore", "serve", *options], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(url + "/version", headers={"Host": "127.0.0.1"}, timeout=1).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, "castore serve stopped"
                return False

        wait_for(answers, "castore serve answers", timeout=60)
        content = os.urandom(1 << 20)
        put = httpx.put(url + "/files/problems/1/big.in?last_modified=Thu, 01 Jan 1970 00:16:40 -0000",
                        content=content, headers={"Host": "127.0.0.1"}, timeout=60)
        assert put.status_code == 200, put.text
        got = httpx.get(url + "/files/problems/1/big.in", headers={"Host": "127.0.0.1", "Accept-Encoding": "identity"},
                        timeout=60)
        assert got.status_code == 200 and got.content == content
    finally:
        process.terminate()
        process.wait(30)
    objects = _client(s3_server.endpoint, s3_server.REGION).list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [item["Key"].startswith("prod/") for item in objects] == [True], objects
