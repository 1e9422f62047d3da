"""The deduplication benchmark: ``python -m benchmarks run [--scale ...] [--systems ...]``.

Makes the contest-like corpus of :mod:`benchmarks.corpus`, gives it to every system of
:mod:`benchmarks.systems` one contest-year after another, checks that each gives every
file back unchanged, prints a table and writes ``benchmarks/results/<date>-<scale>/``
(``report.md``, PNG plots, ``results.json``). Systems that are not installed are
skipped, with the reason in the report. Timings are noisy on a shared machine: compare
the systems of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import xxhash

from benchmarks.breakdown import breakdown
from benchmarks.corpus import SCALES, Corpus, build
from benchmarks.dedup_report import load, machine, print_table, write_report
from benchmarks.systems import LEVEL_PREFIX, SYSTEMS, Result, system_named

MiB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results"


def tree_digests(root: Path) -> dict[str, tuple[int, bytes]]:
    """Relative path -> (size, xxh3-128) of every file below ``root``."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            digest = xxhash.xxh3_128()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
            found[str(path.relative_to(root))] = (path.stat().st_size, digest.digest())
    return found


def verify(expected: dict[str, tuple[int, bytes]], restored: Path) -> str:
    """"ok" when ``restored`` holds exactly the corpus' files, else what differs."""
    got = tree_digests(restored) if restored.exists() else {}
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    wrong = [p for p in expected.keys() & got.keys() if expected[p] != got[p]]
    if not (missing or extra or wrong):
        return "ok"
    return f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} different files"


def part_sizes(corpus: Corpus, src: Path, work: Path, names: list[str]) -> dict[str, dict[str, int]]:
    """Disk of castore, restic and borg on the parts of the corpus where sub-file dedup could help.

    Each part is copied to its own folder (real copies), each distinct content once (all
    three dedup whole files, so repeats would only add time), and stored alone.
    """
    parts: dict[str, list[str]] = {"tail-changed inputs (and the inputs they change)": [],
                                   "submissions (near-identical sources)": []}
    tails = {r.base for _, _, r in corpus.files() if r.kind == "tail"}
    seen: set[object] = set()
    for year, path, recipe in corpus.files():
        if recipe in seen:
            continue
        seen.add(recipe)
        rel = f"{corpus.year_dir(year)}{path}"
        if recipe.kind == "tail" or recipe in tails:
            parts["tail-changed inputs (and the inputs they change)"].append(rel)
        elif "/submissions/" in path:
            parts["submissions (near-identical sources)"].append(rel)
    sizes: dict[str, dict[str, int]] = {}
    for part, files in parts.items():
        folder = work / "part" / "files"
        for rel in files:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, folder / rel)
        digests = tree_digests(folder)
        row = {"files": len(files), "logical": sum(size for size, _ in digests.values()),
               "distinct": sum(size for size, _ in set(digests.values()))}
        years = sorted(p.name for p in folder.iterdir())
        for name in names:
            system = system_named(name)
            assert system is not None
            scratch = work / "part" / name
            scratch.mkdir(parents=True)
            try:
                result = system.run(folder, years, scratch, read_back=False)
                row[name] = result.disk
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        sizes[part] = row
        shutil.rmtree(work / "part")
    return sizes


def run(args: argparse.Namespace) -> Path:
    names = [n.strip() for n in args.systems.split(",") if n.strip()] if args.systems else list(SYSTEMS)
    names += [f"{LEVEL_PREFIX}{level}" for level in args.castore_levels]
    unknown = [n for n in names if system_named(n) is None]
    if unknown:
        sys.exit(f"unknown system(s): {', '.join(unknown)}; choose from {', '.join(SYSTEMS)} "
                 f"or {LEVEL_PREFIX}N (N = 1..22)")
    names = list(dict.fromkeys(names))  # each once, in the order given
    out = args.out or RESULTS / f"{datetime.date.today().isoformat()}-{args.scale}"
    work = Path(tempfile.mkdtemp(prefix="castore-dedup-bench-", dir=args.work))
    started = time.perf_counter()
    try:
        info = machine(work)
        print(f"machine: {info['cpus']} cores, {info['memory']}, {info['filesystem']}", flush=True)
        corpus = build(args.scale, args.seed)
        src = work / "corpus"
        print(f"making the {args.scale} corpus (seed {args.seed}) in {src} ...", flush=True)
        sizes = corpus.materialize(src)
        years = [corpus.year_dir(y) for y in range(len(corpus.years))]
        logical_per_year = []
        for year in years:
            previous = logical_per_year[-1] if logical_per_year else 0
            logical_per_year.append(previous + sum(p.stat().st_size for p in (src / year).rglob("*") if p.is_file()))
        print(f"corpus: {sizes.files:,} files, {sizes.logical_bytes / MiB:,.1f} MiB logical, "
              f"{sizes.distinct:,} distinct contents ({sizes.distinct_bytes / MiB:,.1f} MiB)", flush=True)
        expected = tree_digests(src)
        results: list[Result] = []
        breakdowns: dict[str, dict[str, object]] = {}
        for name in names:
            system = system_named(name)
            assert system is not None
            reason = system.unavailable()
            if reason:
                print(f"== {name}: skipped: {reason}", flush=True)
                results.append(Result(name, skipped=reason))
                continue
            print(f"== {name}: {system.description}", flush=True)
            scratch = work / name
            scratch.mkdir()
            began = time.perf_counter()
            try:
                result = system.run(src, years, scratch)
                result.verified = verify(expected, scratch / "out")
                if name.startswith(("castore-embedded", "castore-compacted")) or name == "filetracker":
                    breakdowns[name] = breakdown(name, scratch / "data", corpus, src)
            except Exception as e:  # noqa: BLE001 -- one broken system must not hide the others
                traceback.print_exc()
                result = Result(name, system.version(), skipped=f"failed: {str(e).splitlines()[0][:200]}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if not result.skipped:
                print(f"   disk {result.disk / MiB:,.1f} MiB, ingest {result.ingest_seconds:.1f} s, "
                      f"read {result.read_seconds:.1f} s, restored: {result.verified} "
                      f"({time.perf_counter() - began:.0f} s in all)", flush=True)
            results.append(result)
        parts = {}
        part_systems = [n for n in ("castore-embedded", "restic", "borg")
                        if n in names and not next(r for r in results if r.system == n).skipped]
        if args.parts and len(part_systems) > 1:
            print("== the parts of the corpus where sub-file dedup could help", flush=True)
            began = time.perf_counter()
            parts = part_sizes(corpus, src, work, part_systems)
            print(f"   done in {time.perf_counter() - began:.0f} s", flush=True)
        data = {
            "scale": args.scale, "seed": args.seed, "date": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"), "machine": info, "corpus": vars(sizes), "years": years,
            "logical_per_year": logical_per_year, "results": [r.as_dict() for r in results], "parts": parts,
            "breakdowns": breakdowns,
            "command": " ".join(["python -m benchmarks run", *sys.argv[2:]]),
            "seconds": time.perf_counter() - started, "load_end": load(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    print_table(data)
    write_report(data, out)
    print(f"report: {out / 'report.md'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run", help="run the deduplication benchmark and write its report")
    p.add_argument("--scale", choices=list(SCALES), default="default",
                   help="small: CI, under a minute; default: minutes on 2 cores (1 GiB); large: 42 GiB, "
                   "needs about 3x that free on the scratch disk")
    p.add_argument("--systems", default="", help=f"comma-separated subset of: {','.join(SYSTEMS)} "
                   f"(also {LEVEL_PREFIX}N: castore embedded on a store created with zstd level N)")
    p.add_argument("--castore-levels", type=lambda text: [int(x) for x in text.split(",") if x], default=[],
                   metavar="N,M", help="also run castore embedded on stores created with these zstd levels "
                   "(castore init --zstd-level), to compare disk and ingest time with the default level")
    p.add_argument("--seed", type=int, default=1, help="the corpus' seed (default 1)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/results/DATE-SCALE)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    p.add_argument("--no-parts", dest="parts", action="store_false",
                   help="skip storing the sub-file-dedup parts alone in castore, restic and borg")
    p.add_argument("--report-only", type=Path, default=None, metavar="RESULTS_JSON",
                   help="only rewrite the report and plots from a results.json")
    args = parser.parse_args()
    if args.report_only:
        data = json.loads(args.report_only.read_text())
        print_table(data)
        write_report(data, args.out or args.report_only.parent)
        return
    os.environ.setdefault("MPLBACKEND", "Agg")
    run(args)


if __name__ == "__main__":
    main()
