"""The systems the deduplication benchmark compares, each behind one small adapter.

Every system ingests the corpus one contest-year folder after another (its disk use is
measured after each year), then restores everything into an empty folder (the read-back).
The restored tree is compared with the corpus outside the timed part. Disk use is
``du -sB1`` of the system's data folder: allocated blocks, folders and metadata included.

* ``castore-embedded``: :class:`castore.Store` in a worker process (Python API).
* ``castore-http``: a real ``castore serve`` on 127.0.0.1, the worker uses
  :class:`castore.client.Client` (remote only, one connection, as a judging machine).
* ``filetracker``: Filetracker 2.3.3's server (``.venv-filetracker``) and its client.
* ``cp``: ``cp -r`` and an fsync of every copy (castore's durability): the floor.
* ``tar-zstd``: one ``tar --zstd`` archive per year: compression only.
* ``restic``, ``borg``: content-defined chunking, dedup and zstd; one snapshot per year.

Peak RSS: of the worker process for castore-embedded and of the tool for the command
line systems (``wait4``), of the server's processes for the HTTP systems (the sum of
their ``VmHWM``, read just before the server is stopped).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FT_VENV = ROOT / ".venv-filetracker"
TIME = Path("/usr/bin/time")  # GNU time, for the peak RSS of a command
PASSWORD = "castore-benchmark"  # restic/borg repos live in temp folders and are removed


@dataclass
class Result:
    """What one system did with the corpus."""

    system: str
    version: str = ""
    skipped: str = ""
    disk_per_year: list[int] = field(default_factory=list)
    ingest_seconds: float = 0.0
    read_seconds: float = 0.0
    peak_rss: int = 0
    rss_of: str = ""
    unique_bytes: int | None = None  # after dedup, before compression (when the system tells)
    blobs: int | None = None
    verified: str = ""
    note: str = ""
    compact: dict[str, Any] | None = None
    """castore-compacted: ``castore compact``'s report and the disk before it (timed apart from ingest)."""

    @property
    def disk(self) -> int:
        return self.disk_per_year[-1] if self.disk_per_year else 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def du(path: Path) -> int:
    """Allocated bytes below ``path``, folders included (``du -sB1``)."""
    out = subprocess.run(["du", "-sB1", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def measured(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
             stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.PIPE) -> tuple[float, int]:
    """Run ``command``; return its wall seconds and peak RSS in bytes.

    The RSS comes from GNU time when installed: ``wait4`` of a child forked from this
    (large) process reports at least this process' own RSS, as Linux carries the peak
    over fork and exec.
    """
    with tempfile.NamedTemporaryFile("r") as rss_file:
        wrapped = command
        if TIME.exists():
            wrapped = [str(TIME), "-f", "%M", "-o", rss_file.name, *command]
        start = time.perf_counter()
        process = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
        err = process.stderr.read() if process.stderr is not None else b"(its errors are above)"
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed ({process.returncode}): {err.decode()[-500:]}")
        text = rss_file.read().strip().splitlines()
        rss = int(text[-1]) * 1024 if text and text[-1].isdigit() else usage.ru_maxrss * 1024
    return seconds, rss


def tool_version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0].strip("* ") if text else "unknown"


def castore_version() -> str:
    from importlib.metadata import version

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return f"castore {version('castore')}" + (f" (git {commit})" if commit else "")


def process_group_hwm(pgid: int) -> int:
    """Sum of the peak RSS (VmHWM) of the live processes of a process group."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


@contextmanager
def serving(command: list[str], url: str, env: dict[str, str], log: Path) -> Iterator[list[int]]:
    """Run a server in its own process group; yield a one-item list that gets its peak RSS."""
    from benchmarks.server import wait_ready

    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    peak = [0]
    try:
        wait_ready(url, process)
        yield peak
    finally:
        peak[0] = process_group_hwm(process.pid)
        from benchmarks.server import stop_group

        stop_group(process)


def run_worker(spec: dict[str, Any], work: Path) -> tuple[dict[str, Any], int]:
    """Run :func:`worker` in a fresh interpreter; return its result and its peak RSS."""
    spec_file, result_file = work / "worker-spec.json", work / "worker-result.json"
    spec_file.write_text(json.dumps({**spec, "result": str(result_file)}))
    _, rss = measured([sys.executable, "-m", "benchmarks.systems", str(spec_file)], cwd=ROOT,
                      stdout=None, stderr=None)  # its progress lines go to stderr
    return json.loads(result_file.read_text()), rss


def _progress(system: str, year: str, done: int, total: int) -> None:
    if done and done % 500 == 0:
        print(f"  [{system}] {year}: {done:,} of {total:,} files", file=sys.stderr, flush=True)


def worker(spec: dict[str, Any]) -> None:
    """Ingest the years, measure disk after each, restore all: in this process, for RSS."""
    import contextlib
    import io

    from castore import Store

    src, data, out = Path(spec["src"]), Path(spec["data"]), Path(spec["out"])
    system = spec["system"]
    result: dict[str, Any] = {"ingest": 0.0, "disk": [], "read": 0.0}
    names: list[tuple[str, Path]] = []
    client: Any = None
    if system == "castore-http":
        from castore.client import Client

        client = Client(local_store=None, remote_url=spec["url"])
    elif system == "filetracker":
        from filetracker.client import Client as FiletrackerClient

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Settled for protocol version 2"
            client = FiletrackerClient(local_store=None, remote_url=spec["url"])
    for year in spec["years"]:
        files = sorted(p for p in (src / year).rglob("*") if p.is_file())
        start = time.perf_counter()
        if system.startswith(("castore-embedded", "castore-compacted")):
            with Store.open(data) as store:
                for i, f in enumerate(files):
                    name = "/" + str(f.relative_to(src / year))
                    store.put(name, f, version=1)
                    names.append((name, Path(year) / name.lstrip("/")))
                    _progress(system, year, i, len(files))
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                for i, f in enumerate(files):
                    name = "/" + str(f.relative_to(src / year))
                    client.put_file(name, str(f))
                    names.append((name, Path(year) / name.lstrip("/")))
                    _progress(system, year, i, len(files))
        result["ingest"] += time.perf_counter() - start
        result["disk"].append(du(data))
        print(f"  [{system}] {year}: {len(files):,} files in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    if spec.get("compact"):
        result["compact"] = _compact(data, system)
        result["disk"][-1] = du(data)  # the last year's disk is the store's after compact
    start = time.perf_counter()
    if not spec["read_back"]:
        pass
    elif system.startswith(("castore-embedded", "castore-compacted")):
        with Store.open(data) as store:
            for name, rel in names:
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with store.open_file(name) as reader, open(target, "wb") as sink:
                    shutil.copyfileobj(reader, sink, 1 << 20)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            for name, rel in names:
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.get_file(name, str(target))
    result["read"] = time.perf_counter() - start
    if spec["read_back"]:
        print(f"  [{system}] read back {len(names):,} files", file=sys.stderr, flush=True)
    if system.startswith("castore"):
        with Store.open(data) as store:
            usage = store.usage()
        result["blobs"], result["unique_bytes"] = usage.blobs, usage.blob_bytes
    Path(spec["result"]).write_text(json.dumps(result))


def _compact(data: Path, system: str) -> dict[str, Any]:
    """``castore compact`` on the store at ``data`` after the ingest: its report, the disk before and after."""
    from castore import Store

    before = du(data)
    with Store.open(data) as store:
        report = store.compact()
    after = du(data)
    print(f"  [{system}] compact: {report.settled:,} of {report.contents:,} contents settled, "
          f"{report.seconds:.1f} s, disk {before / 2**20:,.1f} -> {after / 2**20:,.1f} MiB", file=sys.stderr, flush=True)
    return {**report.as_dict(), "disk_before": before, "disk_after": after}


# -- the systems ---------------------------------------------------------------------------

class System:
    """One system under test: say why it cannot run, its version, and run it."""

    name = ""
    description = ""

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        return ""

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        raise NotImplementedError(self.name)


class CastoreEmbedded(System):
    name = "castore-embedded"
    description = "castore's Python API (Store.put / Store.open) in one process"
    level: int | None = None
    """The store's zstd level (``castore init --zstd-level``); None: castore's default."""

    def version(self) -> str:
        return castore_version()

    compact = False
    """Run ``castore compact`` after the ingest (castore-compacted)."""

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        from castore import open_store

        data, out = work / "data", work / "out"
        open_store(data, create=True, zstd_level=self.level).close()  # None: castore's default level
        r, rss = run_worker({"system": self.name, "src": str(src), "data": str(data), "out": str(out),
                             "years": years, "read_back": read_back, "compact": self.compact}, work)
        return Result(self.name, self.version(), disk_per_year=r["disk"], ingest_seconds=r["ingest"],
                      read_seconds=r["read"], peak_rss=rss, rss_of="the process", blobs=r["blobs"],
                      unique_bytes=r["unique_bytes"], compact=r.get("compact"))


class CastoreCompacted(CastoreEmbedded):
    name = "castore-compacted"
    description = ("castore embedded, then castore compact (zstd 19) after the last year; compact timed apart, "
                   "its disk after compact, read back after it")
    compact = True


class CastoreHttp(System):
    name = "castore-http"
    description = "castore serve (2 workers) on 127.0.0.1 and castore.client.Client, one connection"

    def unavailable(self) -> str | None:
        return None if (ROOT / ".venv/bin/castore").exists() else ".venv/bin/castore is not installed"

    def version(self) -> str:
        return castore_version()

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        from benchmarks.server import castore_server
        from castore import Store

        data, out = work / "data", work / "out"
        Store.open(data, create=True).close()  # serve does not create a store without --init
        command, url, env = castore_server(data)
        with serving(command, url, env, work / "server.log") as peak:
            r, _ = run_worker({"system": self.name, "src": str(src), "data": str(data), "out": str(out),
                               "years": years, "url": url, "read_back": read_back}, work)
        r["disk"][-1] = du(data)  # at rest: the server has checkpointed and removed its SQLite WAL
        return Result(self.name, self.version(), disk_per_year=r["disk"], ingest_seconds=r["ingest"],
                      read_seconds=r["read"], peak_rss=peak[0], rss_of="server processes",
                      blobs=r["blobs"], unique_bytes=r["unique_bytes"])


class Filetracker(System):
    name = "filetracker"
    description = "Filetracker 2.3.3: filetracker-server and filetracker.client.Client, remote only"

    def unavailable(self) -> str | None:
        if not (FT_VENV / "bin/filetracker-server").exists():
            return "Filetracker's server is not installed (run bash benchmarks/setup_filetracker.sh)"
        try:
            import filetracker.client  # noqa: F401
        except ImportError:
            return "the filetracker client package is not installed in this Python"
        return None

    def version(self) -> str:
        out = subprocess.run([str(FT_VENV / "bin/python"), "-c",
                              "import importlib.metadata as m; print(m.version('filetracker'))"],
                             capture_output=True, text=True, check=False).stdout.strip()
        return f"filetracker {out} (server and client)"

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        from benchmarks.server import filetracker_server

        data, out = work / "data", work / "out"
        command, url, env = filetracker_server(data, work / "ft.log")
        with serving(command, url, env, work / "server.log") as peak:
            r, _ = run_worker({"system": self.name, "src": str(src), "data": str(data), "out": str(out),
                               "years": years, "url": url, "read_back": read_back}, work)
        r["disk"][-1] = du(data)  # at rest, as for castore-http
        blobs = [p for p in (data / "blobs").rglob("*") if p.is_file()]
        return Result(self.name, self.version(), disk_per_year=r["disk"], ingest_seconds=r["ingest"],
                      read_seconds=r["read"], peak_rss=peak[0], rss_of="server processes",
                      blobs=len(blobs), note="gzip -9 by the client; whole-file dedup by SHA-256")


class Copy(System):
    name = "cp"
    description = "cp -r, then sync of every copied file"

    def version(self) -> str:
        return tool_version(["cp", "--version"])

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        data, out = work / "data", work / "out"
        data.mkdir()
        result = Result(self.name, self.version(), rss_of="cp")
        for year in years:
            seconds, rss = measured(["cp", "-r", str(src / year), str(data / year)])
            seconds += measured(["find", str(data / year), "-type", "f", "-exec", "sync", "{}", "+"])[0]
            result.ingest_seconds += seconds
            result.peak_rss = max(result.peak_rss, rss)
            result.disk_per_year.append(du(data))
        if read_back:
            result.read_seconds, _ = measured(["cp", "-r", str(data), str(out)])
        return result


class TarZstd(System):
    name = "tar-zstd"
    description = "tar --zstd, one archive per year (zstd's default level 3)"

    def unavailable(self) -> str | None:
        return None if shutil.which("zstd") else "zstd is not installed"

    def version(self) -> str:
        return f"{tool_version(['tar', '--version'])}, {tool_version(['zstd', '--version'])}"

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        data, out = work / "data", work / "out"
        data.mkdir()
        out.mkdir()
        result = Result(self.name, self.version(), rss_of="tar and zstd")
        for year in years:
            archive = data / f"{year}.tar.zst"
            seconds, rss = measured(["tar", "--zstd", "-cf", str(archive), "-C", str(src), year])
            seconds += measured(["sync", str(archive)])[0]
            result.ingest_seconds += seconds
            result.peak_rss = max(result.peak_rss, rss)
            result.disk_per_year.append(du(data))
        for year in years if read_back else []:
            result.read_seconds += measured(["tar", "--zstd", "-xf", str(data / f"{year}.tar.zst"),
                                             "-C", str(out)])[0]
        return result


class Restic(System):
    name = "restic"
    description = "restic, repository format 2 (content-defined chunking, zstd auto), a snapshot per year"

    def unavailable(self) -> str | None:
        return None if shutil.which("restic") else "restic is not installed (apt-get install restic)"

    def version(self) -> str:
        return tool_version(["restic", "version"])

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        data, out = work / "data", work / "out"
        env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(data),
               "RESTIC_CACHE_DIR": str(work / "cache")}
        measured(["restic", "init", "--repository-version", "2"], env=env)
        result = Result(self.name, self.version(), rss_of="restic")
        for year in years:
            seconds, rss = measured(["restic", "backup", "--quiet", "--tag", year, year], env=env, cwd=src)
            result.ingest_seconds += seconds
            result.peak_rss = max(result.peak_rss, rss)
            result.disk_per_year.append(du(data))
        for year in years if read_back else []:
            seconds, rss = measured(["restic", "restore", "latest", "--tag", year, "--target", str(out)], env=env)
            result.read_seconds += seconds
        stats = subprocess.run(["restic", "stats", "--json", "--mode", "raw-data"], env=env, check=True,
                               capture_output=True, text=True).stdout
        raw = json.loads(stats)
        # restic 0.14 tells only the stored (compressed) size; later versions also the uncompressed one
        result.unique_bytes = raw.get("total_uncompressed_size")
        # restic stores the absolute path of what it backed up: move the years to out/
        restored = out / src.relative_to(src.anchor)
        for year in years:
            if not (out / year).exists() and (restored / year).exists():
                (restored / year).rename(out / year)
        if restored.exists():
            shutil.rmtree(out / src.relative_to(src.anchor).parts[0])
        return result


class Borg(System):
    name = "borg"
    description = "borgbackup, --encryption none, --compression zstd,3, an archive per year"

    def unavailable(self) -> str | None:
        return None if shutil.which("borg") else "borg is not installed (apt-get install borgbackup)"

    def version(self) -> str:
        return tool_version(["borg", "--version"])

    def run(self, src: Path, years: list[str], work: Path, read_back: bool = True) -> Result:
        data, out = work / "data", work / "out"
        out.mkdir()
        env = {**os.environ, "BORG_PASSPHRASE": PASSWORD, "BORG_REPO": str(data),
               "BORG_BASE_DIR": str(work / "base"), "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
        measured(["borg", "init", "--encryption", "none"], env=env)
        result = Result(self.name, self.version(), rss_of="borg")
        for year in years:
            seconds, rss = measured(["borg", "create", "--compression", "zstd,3", f"::{year}", year],
                                    env=env, cwd=src)
            result.ingest_seconds += seconds
            result.peak_rss = max(result.peak_rss, rss)
            result.disk_per_year.append(du(data))
        for year in years if read_back else []:
            result.read_seconds += measured(["borg", "extract", f"::{year}"], env=env, cwd=out)[0]
        info = json.loads(subprocess.run(["borg", "info", "--json"], env=env, check=True,
                                         capture_output=True, text=True).stdout)
        result.unique_bytes = info["cache"]["stats"]["unique_size"]
        return result


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (
    CastoreEmbedded, CastoreCompacted, CastoreHttp, Filetracker, Copy, TarZstd, Restic, Borg)}
LEVEL_PREFIX = "castore-embedded-zstd"
"""``castore-embedded-zstdN``: castore embedded on a store created with zstd level N."""


def system_named(name: str) -> System | None:
    """The system called ``name`` (one of :data:`SYSTEMS` or ``castore-embedded-zstdN``), else None."""
    if name in SYSTEMS:
        return SYSTEMS[name]()
    level = name.removeprefix(LEVEL_PREFIX)
    if name.startswith(LEVEL_PREFIX) and level.isdigit() and 1 <= int(level) <= 22:
        system = CastoreEmbedded()
        system.name, system.level = name, int(level)
        system.description = f"{CastoreEmbedded.description}, a store created with --zstd-level {level}"
        return system
    return None


if __name__ == "__main__":
    worker(json.loads(Path(sys.argv[1]).read_text()))
