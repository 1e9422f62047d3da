"""Import benchmark: ``castore import-filetracker`` from a Filetracker 2.3.3 data folder and server.

Setup once: ``bash benchmarks/setup_filetracker.sh``. Run::

    .venv/bin/python benchmarks/import_filetracker.py --mb 300

Uploads a corpus of about ``--mb`` MB to a real Filetracker server on 127.0.0.1 (mostly
test-like text: many small files, some of a few MB, a fifth of the paths sharing a
content with another path), then imports it into two fresh castore stores: from the
data folder, and from the server over HTTP. Prints files/s and MB/s (logical) of each.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.server import FT_VENV, ROOT, filetracker_server, running
from castore.protocol import format_version


def _text(rng: random.Random, size: int) -> bytes:
    line = b" ".join(b"%d" % rng.randrange(10**6) for _ in range(12)) + b"\n"
    out = bytearray()
    while len(out) < size:
        out += line if rng.random() < 0.7 else b" ".join(b"%d" % rng.randrange(10**6) for _ in range(12)) + b"\n"
    return bytes(out[:size])


def corpus(total_mb: int, seed: int = 1) -> list[tuple[str, int, bytes]]:
    rng = random.Random(seed)
    files: list[tuple[str, int, bytes]] = []
    budget = total_mb * 1_000_000
    size = 0
    while size < budget:
        k = len(files)
        if files and rng.random() < 0.2:
            data = rng.choice(files)[2]  # shared with another path
        elif rng.random() < 0.02:
            data = _text(rng, rng.randrange(1, 8) << 20)
        else:
            data = _text(rng, rng.randrange(100, 64_000))
        files.append((f"/contests/c{k % 20}/p{k % 97}/tests/{k}.in", 1_600_000_000 + k, data))
        size += len(data)
    return files


def upload(url: str, files: list[tuple[str, int, bytes]]) -> None:
    """Upload as Filetracker's own client does: gzipped, with SHA256-Checksum and Logical-Size."""
    with httpx.Client(base_url=url, timeout=120) as http:
        for path, version, data in files:
            headers = {"Content-Encoding": "gzip", "SHA256-Checksum": hashlib.sha256(data).hexdigest(),
                       "Logical-Size": str(len(data))}
            response = http.put("/files" + quote(path), content=gzip.compress(data, 6), headers=headers,
                                params={"last_modified": format_version(version)})
            response.raise_for_status()


def run_import(root: Path, *source: str) -> dict[str, object]:
    subprocess.run([str(ROOT / ".venv/bin/castore"), "--root", str(root), "init"], check=True,
                   capture_output=True)
    done = subprocess.run([str(ROOT / ".venv/bin/castore"), "--root", str(root), "import-filetracker", *source,
                           "--json"], check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    if not (FT_VENV / "bin/filetracker-server").exists():
        sys.exit("Filetracker's server is not installed: run bash benchmarks/setup_filetracker.sh")
    files = corpus(args.mb)
    logical = sum(len(d) for _, _, d in files)
    print(f"corpus: {len(files)} files, {logical / 1e6:.0f} MB logical, "
          f"{len({d for _, _, d in files})} distinct contents")
    with tempfile.TemporaryDirectory(prefix="castore-import-bench-") as tmp:
        work = Path(tmp)
        with running(*filetracker_server(work / "ft", work / "ft.log")) as url:
            started = time.perf_counter()
            upload(url, files)
            print(f"uploaded to Filetracker in {time.perf_counter() - started:.1f} s")
            for label, source in (("folder", [str(work / "ft")]), ("server", ["--url", url])):
                report = run_import(work / f"castore-{label}", *source, "--jobs", str(args.jobs))
                print(f"from {label}: {report['imported']} files in {report['seconds']} s = "
                      f"{report['files_per_second']} files/s, {report['mb_per_second']} MB/s; "
                      f"stored {int(report['stored_bytes']) / 1e6:.0f} MB "  # type: ignore[call-overload]
                      f"(dedup {report['dedup_ratio']}x), problems {len(report['problems'])}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
