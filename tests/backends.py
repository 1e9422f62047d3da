"""Real PostgreSQL and S3 servers for tests, started on 127.0.0.1 and stopped afterwards.

* :class:`PostgresCluster` — ``initdb`` into a temporary folder and ``pg_ctl start`` on a
  free port (as user ``postgres`` when the tests run as root, which PostgreSQL refuses to
  be). Each store gets its own database, copied from a migrated template in milliseconds.
* :class:`MotoServer` — ``moto_server`` (moto[server] from PyPI), an S3 API in one process;
  each store gets its own bucket.

scripts/test.sh installs both (``apt-get install postgresql``; moto is a dev dependency).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from castore.metadata.migrate import upgrade_schema

from .server_process import free_port

__all__ = ["MotoServer", "PostgresCluster", "postgres_bin"]

_count = itertools.count()


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian's newest), or None when not installed."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if debian:
        return Path(debian[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """A throw-away PostgreSQL server on 127.0.0.1 (trust authentication, fsync off)."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/test.sh runs: apt-get install postgresql)")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="castore-pg-"))
        self.port = free_port()
        self.data = self.folder / "data"
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_user:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start")
        self.template = "castore_template"
        self._admin(f"CREATE DATABASE {self.template}")
        from sqlalchemy import create_engine

        engine = create_engine(self.url(self.template))
        upgrade_schema(engine)  # every database copied from the template starts migrated
        engine.dispose()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new migrated database without a store in it (``castore init`` adds the settings)."""
        name = f"castore_{os.getpid()}_{next(_count)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return self.url(name)

    def empty_database(self) -> str:
        """A new database without castore's schema."""
        name = f"empty_{os.getpid()}_{next(_count)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as_user, str(self.bindir / program), *args], check=True, capture_output=True,
                       cwd=self.folder)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class MotoServer:
    """``moto_server`` on a free loopback port: an in-memory S3 API."""

    REGION = "us-east-1"

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # moto reads no real credentials; boto3 needs some to sign requests
        for variable, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                                ("AWS_DEFAULT_REGION", self.REGION)):
            os.environ.setdefault(variable, value)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    def new_bucket(self) -> str:
        """A blobs URL on a new, empty bucket."""
        from castore.blobs.s3 import _client

        name = f"castore-{os.getpid()}-{next(_count)}"
        _client(self.endpoint, self.REGION).create_bucket(Bucket=name)
        return f"s3://{name}/blobs?endpoint_url={self.endpoint}&region={self.REGION}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
