"""Real PostgreSQL and S3 servers for tests, started on 127.0.0.1 and stopped afterwards.

* :class:`PostgresCluster` — ``initdb`` into a temporary folder and ``pg_ctl start`` on a
  free port (as user ``postgres`` when the tests run as root, which PostgreSQL refuses to
  be). Each test's store gets an empty migrated database: one emptied by ``TRUNCATE`` after
  an earlier test (:meth:`PostgresCluster.recycle`, ~20 ms), else a copy of a migrated
  template (``CREATE DATABASE``, ~0.2-0.5 s, and 7 MB more to delete at the end).
* :class:`MotoServer` — ``moto_server`` (moto[server] from PyPI), an S3 API in one process;
  each store gets its own bucket.
* :class:`RadosGateway` — Ceph's radosgw, a real S3 implementation (``scripts/radosgw.sh``:
  one monitor, one in-memory OSD, ~2 s to start). Unlike moto it keeps connections alive.

scripts/test.sh installs them (``apt-get install postgresql radosgw ceph-mon ceph-osd``; moto is
a dev dependency).
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

__all__ = ["MotoServer", "PostgresCluster", "RadosGateway", "S3Server", "postgres_bin"]

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
        self._schema = self._schema_of(self.template)
        self._free: list[str] = []
        """Databases emptied by :meth:`recycle`, as they were when first copied from the template."""

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A migrated database without a store in it (``castore init`` adds the settings)."""
        if self._free:
            return self.url(self._free.pop())
        name = f"castore_{os.getpid()}_{next(_count)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template} STRATEGY FILE_COPY")  # PostgreSQL 15+
        return self.url(name)

    def recycle(self, url: str) -> None:
        """Give back a database from :meth:`new_database` once its test is over, for the next one.

        Its connections are ended and its rows removed (``TRUNCATE … RESTART IDENTITY``);
        a database whose tables or schema revision are no longer the template's is dropped
        instead, so that the next test always starts from what the template holds.
        """
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        if self._schema_of(name) != self._schema:
            self._admin(f"DROP DATABASE {name} WITH (FORCE)")
            return
        tables = ", ".join(table for table in self._schema[0] if table != "alembic_version")
        with psycopg.connect(self.dsn(name), autocommit=True) as c:
            c.execute(f"TRUNCATE {tables} RESTART IDENTITY")  # type: ignore[arg-type]
        self._free.append(name)

    def _schema_of(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A database's tables and Alembic revision."""
        import psycopg

        with psycopg.connect(self.dsn(name), autocommit=True) as c:
            tables = tuple(sorted(row[0] for row in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
            revision = tuple(row[0] for row in c.execute("SELECT version_num FROM alembic_version")) \
                if "alembic_version" in tables else ()
        return tables, revision

    def dsn(self, database: str) -> str:
        """psycopg's connection string for ``database`` (a name, or a URL :meth:`url` made)."""
        database = database.rsplit("/", 1)[-1]
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def empty_database(self) -> str:
        """A new database without castore's schema."""
        name = f"empty_{os.getpid()}_{next(_count)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as_user, str(self.bindir / program), *args], check=True, capture_output=True,
                       cwd=self.folder)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class S3Server:
    """An S3 server for tests: its ``endpoint``, and a new bucket for each store."""

    REGION = "us-east-1"
    endpoint: str

    @staticmethod
    def credentials() -> tuple[str, str]:
        """The access key and secret the tests sign with (the AWS variables, set to ``testing`` when unset)."""
        for variable, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                                ("AWS_DEFAULT_REGION", S3Server.REGION)):
            os.environ.setdefault(variable, value)
        return os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]

    def bucket_url(self, name: str, prefix: str = "blobs") -> str:
        """The blobs URL of bucket ``name`` (made or not) on this server."""
        return f"s3://{name}/{prefix}?endpoint_url={self.endpoint}&region={self.REGION}"

    def new_bucket_name(self) -> str:
        """A bucket name no test used yet (the bucket is not made)."""
        return f"castore-{os.getpid()}-{next(_count)}"

    def new_bucket(self) -> str:
        """A blobs URL on a new, empty bucket."""
        from castore.blobs.s3 import _client

        name = self.new_bucket_name()
        _client(self.endpoint, self.REGION).create_bucket(Bucket=name)
        return self.bucket_url(name)

    def stop(self) -> None:
        raise NotImplementedError


class MotoServer(S3Server):
    """``moto_server`` on a free loopback port: an in-memory S3 API (answers ``Connection: close``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.credentials()  # moto reads no real credentials; boto3 needs some to sign requests
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

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


RADOSGW_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "radosgw.sh"


class RadosGateway(S3Server):
    """Ceph's radosgw on a throw-away one-node cluster (``scripts/radosgw.sh``): a real S3
    implementation, which keeps connections alive as AWS does."""

    def __init__(self) -> None:
        if shutil.which("radosgw") is None:
            raise RuntimeError("radosgw is not installed (scripts/test.sh runs: apt-get install -y "
                               "--no-install-recommends radosgw ceph-mon ceph-osd)")
        self.credentials()  # the script makes its S3 user with these keys
        self.folder = Path(tempfile.mkdtemp(prefix="castore-radosgw-"))
        self.port = free_port()
        done = subprocess.run(["bash", str(RADOSGW_SCRIPT), "start", str(self.folder / "cluster"), str(self.port),
                               str(free_port())], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"scripts/radosgw.sh start failed: {done.stderr.strip()}")
        self.endpoint = done.stdout.strip()

    def stop(self) -> None:
        subprocess.run(["bash", str(RADOSGW_SCRIPT), "stop", str(self.folder / "cluster")], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
