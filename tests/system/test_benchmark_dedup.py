"""The deduplication benchmark: its corpus is what it says, and a small run writes a sane report.

No timing is asserted: the benchmark measures, these tests check that what it reports
is consistent and that the systems it must always compare really ran.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.corpus import Recipe, build, make
from benchmarks.dedup_report import PLOTS

ROOT = Path(__file__).resolve().parents[2]
ALWAYS = ("castore-embedded", "castore-http", "filetracker", "cp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    build("small", seed=7).materialize(tmp_path / "a")
    build("small", seed=7).materialize(tmp_path / "b")
    build("small", seed=8).materialize(tmp_path / "c")
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a == b
    assert len(set(a.values()) & set(c.values())) < len(set(a.values())) // 10


def test_a_content_does_not_depend_on_what_was_made_before() -> None:
    base = Recipe("graph", 300_000, 11)
    tail = Recipe("tail", base.size, 12, base=base, tail=2_000)
    alone = make(tail)
    cache: dict[Recipe, bytes] = {}
    cache[base] = make(base)
    assert make(tail, cache) == alone
    assert alone[:200_000] == cache[base][:200_000]  # only the last lines differ
    assert alone != cache[base]


def test_declared_distinct_count_matches_a_brute_force_count(tmp_path: Path) -> None:
    corpus = build("small", seed=3)
    sizes = corpus.materialize(tmp_path)
    files = tree(tmp_path)
    digests = {hashlib.sha256(data).digest() for data in files.values()}
    assert len(files) == corpus.file_count == sizes.files
    assert len(digests) == len(corpus.distinct()) == sizes.distinct
    assert sum(len(d) for d in files.values()) == sizes.logical_bytes
    assert sizes.distinct < sizes.files  # the corpus repeats itself, as contest data does


def test_every_kind_of_repetition_is_in_the_corpus() -> None:
    corpus = build("small", seed=1)
    paths = [path for _, path, _ in corpus.files()]
    kinds = {recipe.kind for _, _, recipe in corpus.files()}
    assert {"tail", "submission", "pdf", "zip", "exe", "answers"} <= kinds
    assert any("/package-2/" in p for p in paths)  # a re-upload
    problems: dict[str, set[str]] = {}
    for p in paths:
        if "/problems/" in p:
            problems.setdefault(p.split("/")[4], set()).add(p.split("/")[2])
    assert any(len(contests) > 1 for contests in problems.values())  # one problem, several contests


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("report")
    work = tmp_path_factory.mktemp("work")
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--scale", "small", "--out", str(out),
                           "--work", str(work)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "distinct contents" in done.stdout and "report:" in done.stdout
    return json.loads((out / "results.json").read_text()), out


def test_small_run_has_the_systems_it_must_compare(small_run: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    data, out = small_run
    results = {r["system"]: r for r in data["results"]}
    for name in ALWAYS:
        assert not results[name]["skipped"], f"{name}: {results[name]['skipped']}"
    report = (out / "report.md").read_text()
    for name, r in results.items():
        assert name in report
        if r["skipped"]:
            assert f"**{name}**: skipped: " in report  # a missing system says why


def test_small_run_numbers_are_consistent(small_run: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    data, _ = small_run
    corpus = data["corpus"]
    assert corpus["distinct"] < corpus["files"] and corpus["distinct_bytes"] < corpus["logical_bytes"]
    assert data["logical_per_year"][-1] == corpus["logical_bytes"]
    for r in data["results"]:
        if r["skipped"]:
            continue
        assert r["verified"] == "ok", r  # every file came back unchanged
        assert len(r["disk_per_year"]) == len(data["years"])
        assert all(d > 0 for d in r["disk_per_year"])
        assert r["ingest_seconds"] > 0 and r["read_seconds"] > 0 and r["peak_rss"] > 0
        if r["system"].startswith("castore"):
            assert r["disk_per_year"][-1] <= corpus["logical_bytes"]
            assert r["blobs"] == corpus["distinct"]  # exactly one blob per distinct content
            assert r["unique_bytes"] == corpus["distinct_bytes"]
    from benchmarks.dedup_report import figures

    for row in figures(data):
        assert row["overall"] > 0 and row["ingest_mbs"] > 0 and row["read_mbs"] > 0
        assert row["dedup"] is None or row["dedup"] > 0
        assert row["compression"] is None or row["compression"] > 0


def test_small_run_plots_are_pngs_made_by_matplotlib(small_run: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    _, out = small_run
    report = (out / "report.md").read_text()
    for name in PLOTS.values():
        png = (out / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE)
        assert b"Matplotlib" in png[:400]  # its Software text chunk
        assert png.rstrip().endswith(b"IEND\xaeB`\x82")
        assert f"]({name})" in report


def test_small_run_tells_where_castore_and_filetracker_disk_goes(small_run: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    data, out = small_run
    corpus = data["corpus"]
    disks = {r["system"]: r["disk_per_year"][-1] for r in data["results"]}
    for name in ("castore-embedded", "filetracker"):
        b = data["breakdowns"][name]
        # every distinct content is found once in the store, in its part of the corpus
        assert sum(part[0] for part in b["parts"].values()) == corpus["distinct"]
        assert sum(part[1] for part in b["parts"].values()) == corpus["distinct_bytes"]
        assert {p: part[0] for p, part in b["parts"].items()} == {p: v[2] for p, v in corpus["by_part"].items()}
        # the categories add up to du of the data folder, measured at rest
        assert sum(c[2] for c in b["categories"].values()) == disks[name]
        assert 0 < sum(part[2] for part in b["parts"].values()) <= b["categories"]["blob files"][1] + (
            b["categories"].get("database (SQLite, with the inline contents)", [0, 0, 0])[1])
    assert data["breakdowns"]["filetracker"]["categories"]["symlinks (one per path)"][0] == corpus["files"]
    assert "## castore against Filetracker, part by part" in (out / "report.md").read_text()


def test_systems_option_names_the_systems_to_run(tmp_path: Path) -> None:
    from benchmarks.systems import SYSTEMS, CastoreEmbedded, system_named

    assert all(system_named(name) is not None for name in SYSTEMS)
    level = system_named("castore-embedded-zstd6")
    assert isinstance(level, CastoreEmbedded) and level.level == 6 and level.name == "castore-embedded-zstd6"
    for wrong in ("castore-embedded-zstd0", "castore-embedded-zstd23", "castore-embedded-zstdx", "rsync"):
        assert system_named(wrong) is None
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--scale", "small", "--systems", "cp,rsync",
                           "--out", str(tmp_path / "out"), "--work", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0
    assert "unknown system(s): rsync" in done.stderr
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []  # nothing made or written



def test_a_skipped_system_gets_a_line_saying_why(small_run: tuple[dict, Path], tmp_path: Path) -> None:  # type: ignore[type-arg]
    from benchmarks.dedup_report import write_report
    from benchmarks.systems import Result

    data, _ = small_run
    reason = "borg is not installed (apt-get install borgbackup)"
    others = [r for r in data["results"] if r["system"] != "borg"]
    report = write_report({**data, "results": [*others, Result("borg", skipped=reason).as_dict()]}, tmp_path)
    text = report.read_text()
    assert f"- **borg**: skipped: {reason}" in text
    assert "| borg |" not in text  # no row of figures for it
    assert all((tmp_path / name).read_bytes().startswith(PNG_SIGNATURE) for name in PLOTS.values())
