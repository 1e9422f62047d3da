"""The deduplication benchmark's table, report (Markdown) and plots (PNG, matplotlib)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

MiB = 1 << 20
MB = 1e6
PLOTS = {"disk": "disk.png", "throughput": "throughput.png", "growth": "growth.png"}


def machine(path: Path) -> dict[str, str]:
    """Cores, memory, filesystem of ``path``, kernel and Python: what the figures depend on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory = f"{kib / (1 << 20):.1f} GiB RAM"
    except (OSError, StopIteration):
        memory = "unknown RAM"
    fs = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", str(path)],
                        capture_output=True, text=True, check=False).stdout.strip() or "unknown"
    return {"cpus": str(os.cpu_count()), "cpu": model or platform.processor(), "memory": memory, "load": load(),
            "filesystem": fs, "kernel": platform.release(), "python": platform.python_version()}


def load() -> str:
    """The load averages over 1, 5 and 15 minutes (other jobs on a shared machine slow every timing)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def figures(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system that ran, with the derived ratios."""
    logical = data["corpus"]["logical_bytes"]
    distinct_bytes = data["corpus"]["distinct_bytes"]
    rows = []
    for r in data["results"]:
        if r["skipped"]:
            continue
        disk = r["disk_per_year"][-1]
        unique = r["unique_bytes"]
        if unique is None:
            if r["system"] == "filetracker" and r["blobs"] == data["corpus"]["distinct"]:
                unique = distinct_bytes  # whole-file dedup, one blob per distinct content
            elif r["system"] in ("cp", "tar-zstd"):
                unique = logical
        rows.append({
            "system": r["system"], "disk": disk, "logical": logical, "overall": logical / disk,
            "dedup": logical / unique if unique else None, "compression": unique / disk if unique else None,
            "ingest_s": r["ingest_seconds"], "ingest_mbs": logical / r["ingest_seconds"] / MB,
            "read_s": r["read_seconds"], "read_mbs": logical / r["read_seconds"] / MB,
            "rss": r["peak_rss"], "rss_of": r["rss_of"], "blobs": r["blobs"], "verified": r["verified"],
        })
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


TABLE_HEAD = ("system", "disk MiB", "logical/disk", "dedup", "compression", "ingest s", "ingest MB/s",
              "read s", "read MB/s", "peak RSS MiB", "blobs", "restored")


def table_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for f in figures(data):
        blobs = "–" if f["blobs"] is None else f"{f['blobs']:,}"
        rows.append((f["system"], _fmt(f["disk"] / MiB, 1), _fmt(f["overall"]), _fmt(f["dedup"]),
                     _fmt(f["compression"]), _fmt(f["ingest_s"], 1), _fmt(f["ingest_mbs"], 1),
                     _fmt(f["read_s"], 1), _fmt(f["read_mbs"], 1), _fmt(f["rss"] / MiB, 0), blobs,
                     f["verified"]))
    return rows


def print_table(data: dict[str, Any]) -> None:
    corpus = data["corpus"]
    print(f"\ncorpus {data['scale']}: {corpus['files']:,} files, {corpus['logical_bytes'] / MiB:,.1f} MiB logical, "
          f"{corpus['distinct']:,} distinct contents ({corpus['distinct_bytes'] / MiB:,.1f} MiB)")
    rows = [TABLE_HEAD, *table_rows(data)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEAD))]
    for row in rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    for r in data["results"]:
        if r["skipped"]:
            print(f"{r['system']}: skipped: {r['skipped']}")
    for line in targets(data):
        print(line)


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["system"]: f for f in figures(data)}


def targets(data: dict[str, Any]) -> list[str]:
    """The issue's targets, each with its measured figure (only for systems that ran)."""
    f = _by_name(data)
    distinct = data["corpus"]["distinct"]
    lines = []
    castore = f.get("castore-embedded") or f.get("castore-http")

    def check(label: str, value: float, limit: float, above: bool) -> None:
        ok = value >= limit if above else value <= limit
        lines.append(f"- {label}: **{value:.3g}** ({'≥' if above else '≤'} {limit:g}: "
                     f"{'met' if ok else 'MISSED'})")

    floor = incompressible_floor(data)
    smallest = min(f.values(), key=lambda row: row["disk"]) if f else None
    if castore and "filetracker" in f:
        ft = f["filetracker"]["disk"]
        check("castore disk / Filetracker disk", castore["disk"] / ft, 0.5, False)
        if castore["disk"] > 0.5 * ft and floor:
            lines.append(f"  - why: Filetracker also keeps one copy per distinct content, so only compression and "
                         f"overhead can differ (next section). 0.5x is {0.5 * ft / MiB:,.1f} MiB, less than the "
                         f"archives, statements and compiled checkers alone take in castore ({floor / MiB:,.1f} MiB: "
                         "contents that no compressor shrinks and whole-file dedup already keeps once).")
    if castore and "cp" in f:
        copy = f["cp"]["disk"]
        check("castore disk / plain copy disk", castore["disk"] / copy, 0.1, False)
        if castore["disk"] > 0.1 * copy and smallest:
            lines.append(f"  - why: 0.1x is {0.1 * copy / MiB:,.1f} MiB; whole-file dedup divides this corpus by at "
                         f"most {data['corpus']['logical_bytes'] / data['corpus']['distinct_bytes']:.2f}x"
                         + (f", the incompressible contents take {floor / MiB:,.1f} MiB" if floor else "")
                         + f", and no system here gets below {smallest['disk'] / MiB:,.1f} MiB "
                         f"({smallest['system']}).")
    for name in ("castore-embedded", "castore-http"):
        if name in f:
            blobs = f[name]["blobs"]
            lines.append(f"- {name} blobs: **{blobs:,}**, distinct contents in the corpus: {distinct:,} "
                         f"({'equal' if blobs == distinct else 'NOT EQUAL'})")
    if "castore-http" in f and "filetracker" in f:
        check("castore over HTTP ingest / Filetracker ingest (MB/s)",
              f["castore-http"]["ingest_mbs"] / f["filetracker"]["ingest_mbs"], 10, True)
    if "castore-embedded" in f and "cp" in f:
        check("castore embedded ingest / cp + sync (MB/s)",
              f["castore-embedded"]["ingest_mbs"] / f["cp"]["ingest_mbs"], 0.5, True)
    return lines


INCOMPRESSIBLE = ("package archives", "statements (PDF)", "compiled checkers")


def incompressible_floor(data: dict[str, Any]) -> int:
    """Bytes castore stores for the (nearly) incompressible parts, when the run measured them."""
    parts = data.get("breakdowns", {}).get("castore-embedded", {}).get("parts", {})
    return sum(int(parts[p][2]) for p in INCOMPRESSIBLE if p in parts)


def reading(data: dict[str, Any]) -> list[str]:
    """What bounds the disk figures on this corpus, in a few sentences from the figures."""
    f = _by_name(data)
    corpus = data["corpus"]
    castore = f.get("castore-embedded") or f.get("castore-http")
    lines = [(f"- Whole-file dedup can at best divide this corpus by logical / distinct = "
             f"**{corpus['logical_bytes'] / corpus['distinct_bytes']:.2f}x**.")]
    parts = corpus.get("by_part")
    if parts:
        hard = sum(parts[p][3] for p in INCOMPRESSIBLE if p in parts)
        lines.append(f"- Package archives, statements and compiled checkers are "
                     f"**{hard / corpus['distinct_bytes'] * 100:.0f} %** of the distinct bytes, a new archive with "
                     "every upload, and (nearly) incompressible: every system keeps them about whole.")
    if castore and "filetracker" in f:
        ft = f["filetracker"]
        lines.append(f"- Filetracker 2.3.3 also keeps one blob per distinct content (SHA-256; {ft['blobs']:,} blobs "
                     "here) and gzips it at level 9, so castore's disk differs from it only by compression (castore: zstd "
                     "level 1) and per-file overhead: Filetracker spends a 4 KiB block on "
                     "every blob file however small, a symlink and a lock file per path and a Berkeley DB; castore "
                     "keeps contents up to 128 KiB inside its SQLite file. "
                     f"Measured: castore {castore['disk'] / MiB:,.1f} MiB, Filetracker {ft['disk'] / MiB:,.1f} MiB.")
    if "castore-http" in f and "filetracker" in f:
        lines.append("- Ingest over HTTP: Filetracker's client hashes (SHA-256) and gzips (level 9) every file before "
                     "sending it, also a content its server already has; castore's client does not hash (the server does), "
                     "compresses with zstd level 1 and sends one request per file on a kept-alive connection. "
                     f"Measured: {f['castore-http']['ingest_mbs']:,.1f} against {f['filetracker']['ingest_mbs']:,.1f} "
                     "MB/s.")
    if castore and "cp" in f:
        lines.append(f"- castore divides the corpus by **{castore['overall']:.2f}x** (dedup {_fmt(castore['dedup'])}x, "
                     f"then compression {_fmt(castore['compression'])}x); ≤ 0.1x of the plain copy needs 10x.")
    return lines


def subfile(data: dict[str, Any]) -> list[str]:
    """What restic and borg (sub-file dedup) save over castore, overall and on each part."""
    f = _by_name(data)
    castore = f.get("castore-embedded") or f.get("castore-http")
    if not castore:
        return []
    lines = []
    for name in ("restic", "borg"):
        if name in f:
            diff = 1 - f[name]["disk"] / castore["disk"]
            word = "less" if diff > 0 else "more"
            lines.append(f"- {name} uses **{abs(diff) * 100:.1f} % {word}** disk than castore on the whole corpus "
                         f"({f[name]['disk'] / MiB:,.1f} MiB against {castore['disk'] / MiB:,.1f} MiB).")
    corpus = data["corpus"]
    lines.append(f"- Sub-file redundancy the corpus holds by construction: {corpus['tail_shared_bytes'] / MiB:,.1f} "
                 f"MiB of its {corpus['distinct_bytes'] / MiB:,.1f} MiB of distinct contents "
                 f"({corpus['tail_shared_bytes'] / corpus['distinct_bytes'] * 100:.1f} %) repeat the beginning of "
                 "another input (tail-changed inputs); near-identical submissions add a little more.")
    if data.get("parts"):
        lines.append("")
        systems = [n for n in ("castore-embedded", "restic", "borg") if n in next(iter(data["parts"].values()))]
        others = [n for n in systems if n != "castore-embedded"]
        lines.append("| part of the corpus, each content once, stored alone | files | logical MiB | "
                     + " | ".join(f"{n} MiB" for n in systems)
                     + "".join(f" | {n} vs castore" for n in others if "castore-embedded" in systems) + " |")
        lines.append("|---|---:|---:|" + "---:|" * len(systems)
                     + "---:|" * (len(others) if "castore-embedded" in systems else 0))
        for part, row in data["parts"].items():
            cells = [f"{row[n] / MiB:,.2f}" for n in systems]
            if "castore-embedded" in systems:
                cells += [f"{(row[n] / row['castore-embedded'] - 1) * 100:+.0f} %" for n in others]
            lines.append(f"| {part} | {row['files']:,} | {row['logical'] / MiB:,.1f} | " + " | ".join(cells) + " |")
        if "castore-embedded" in systems:
            lines += ["", ("castore's figures include its 2 MiB `.reserve` (space kept so that deletes work on a full "
                      "disk), which weighs on a part as small as the submissions.")]
    tail_part = next((row for part, row in data.get("parts", {}).items() if part.startswith("tail")), None)
    if tail_part and "castore-embedded" in tail_part and tail_part.get("distinct"):
        bound = tail_part["castore-embedded"] * corpus["tail_shared_bytes"] / tail_part["distinct"]
        lines.append("")
        lines.append(f"Perfect sub-file dedup of the tail-changed inputs would save castore at most about "
                     f"**{bound / MiB:,.1f} MiB**, {bound / castore['disk'] * 100:.1f} % of its disk: their shared "
                     "beginnings, compressed as castore compresses that part.")
    best = min((f[n]["disk"] for n in ("restic", "borg") if n in f), default=None)
    if best is not None:
        saving = 1 - best / castore["disk"]
        verdict = ("would save more than 20 %" if saving > 0.2 else "would save less than 20 %")
        lines.append("")
        lines.append(f"Sub-file dedup (the better of restic and borg, with their own compression) "
                     f"{verdict} over castore on this corpus: **{saving * 100:.1f} %**.")
    return lines


def plots(data: dict[str, Any], out: Path) -> list[Path]:
    """Write the three PNG plots into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = figures(data)
    names = [r["system"] for r in rows]
    colors = {n: plt.get_cmap("tab10")(i) for i, n in enumerate(
        ["castore-embedded", "castore-http", "filetracker", "cp", "tar-zstd", "restic", "borg", "castore-compacted"])}
    written = []
    logical = data["corpus"]["logical_bytes"] / MiB
    scale = data["scale"]

    fig, ax = plt.subplots(figsize=(8, 4.2))
    values = [r["disk"] / MiB for r in rows]
    bars = ax.barh(names, values, color=[colors.get(n, "grey") for n in names])
    ax.bar_label(bars, labels=[f"{v:,.0f} MiB" if v >= 10 else f"{v:,.1f} MiB" for v in values], padding=3)
    ax.axvline(logical, color="black", linestyle="--", linewidth=1)
    ax.text(logical, len(names) - 0.5, f" logical {logical:,.0f} MiB", va="center", ha="right")
    ax.invert_yaxis()
    ax.set_xlabel("disk used (MiB, du of the data folder)")
    ax.set_title(f"Disk used for the whole corpus ({scale} scale)")
    ax.set_xlim(0, max(values + [logical]) * 1.25)
    fig.tight_layout()
    written.append(out / PLOTS["disk"])
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.6))
    ys = range(len(names))
    ingest = [r["ingest_mbs"] for r in rows]
    read = [r["read_mbs"] for r in rows]
    b1 = ax.barh([y - 0.2 for y in ys], ingest, height=0.4, label="ingest", color="tab:blue")
    b2 = ax.barh([y + 0.2 for y in ys], read, height=0.4, label="read back", color="tab:orange")
    ax.bar_label(b1, labels=[f"{v:,.0f}" for v in ingest], padding=3, fontsize=8)
    ax.bar_label(b2, labels=[f"{v:,.0f}" for v in read], padding=3, fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("MB/s of logical bytes (one client, whole corpus)")
    ax.set_xlim(0, max(ingest + read) * 1.18)
    ax.set_title(f"Ingest and read-back throughput ({scale} scale)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    written.append(out / PLOTS["throughput"])
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.6))
    xs = [v / MiB for v in data["logical_per_year"]]
    for r in data["results"]:
        if r["skipped"]:
            continue
        ax.plot(xs, [d / MiB for d in r["disk_per_year"]], marker="o", label=r["system"],
                color=colors.get(r["system"], "grey"))
    ax.plot(xs, xs, linestyle=":", color="black", label="logical")
    for x, year in zip(xs, data["years"]):
        ax.annotate(year, (x, 0), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7,
                    xycoords=("data", "axes fraction"))
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.1f}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("logical bytes stored so far (MiB), contest-years added one after another")
    ax.set_ylabel("disk used (MiB, log scale)")
    ax.set_title(f"Disk used as the corpus grows ({scale} scale)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    written.append(out / PLOTS["growth"])
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def against_filetracker(data: dict[str, Any]) -> list[str]:
    """castore's disk against Filetracker's: stored contents part by part, then the overhead."""
    b = data.get("breakdowns", {})
    if "castore-embedded" not in b or "filetracker" not in b:
        return []
    c, ft = b["castore-embedded"], b["filetracker"]
    lines = ["## castore against Filetracker, part by part", "",
             ("Both keep one stored copy per distinct content, so their disks differ by the stored (compressed) "
             "bytes of each content and by what else lies on disk. *stored*: castore's stored size (zstd at the "
             "store's level, raw when that saves under 5 %), Filetracker's blob file (gzip -9); *blob files*: "
             "the 4 KiB blocks those files take (castore keeps contents up to 128 KiB in its SQLite file, "
             "counted below)."), "",
             ("| part | distinct | distinct MiB | castore stored MiB | Filetracker stored MiB | castore / Filetracker | "
             "castore blob files MiB | Filetracker blob files MiB |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = [0, 0, 0, 0, 0]
    for part, (count, size, stored, allocated) in sorted(c["parts"].items(), key=lambda kv: -kv[1][1]):
        fstored, fallocated = ft["parts"][part][2], ft["parts"][part][3]
        lines.append(f"| {part} | {count:,} | {size / MiB:,.1f} | {stored / MiB:,.1f} | {fstored / MiB:,.1f} | "
                     f"{stored / fstored:.2f} | {allocated / MiB:,.1f} | {fallocated / MiB:,.1f} |")
        for i, v in enumerate((size, stored, fstored, allocated, fallocated)):
            total[i] += v
    lines.append(f"| **all** | {sum(r[0] for r in c['parts'].values()):,} | {total[0] / MiB:,.1f} | "
                 f"{total[1] / MiB:,.1f} | {total[2] / MiB:,.1f} | {total[1] / total[2]:.2f} | "
                 f"{total[3] / MiB:,.1f} | {total[4] / MiB:,.1f} |")
    lines += ["", "| on disk (du) | castore MiB | castore entries | Filetracker MiB | Filetracker entries |",
              "|---|---:|---:|---:|---:|"]
    categories = list(dict.fromkeys([*c["categories"], *ft["categories"]]))
    for category in categories:
        cc, fc = c["categories"].get(category, [0, 0, 0]), ft["categories"].get(category, [0, 0, 0])
        lines.append(f"| {category} | {cc[2] / MiB:,.1f} | {cc[0]:,} | {fc[2] / MiB:,.1f} | {fc[0]:,} |")
    cdisk = sum(v[2] for v in c["categories"].values())
    fdisk = sum(v[2] for v in ft["categories"].values())
    lines.append(f"| **total** | {cdisk / MiB:,.1f} | | {fdisk / MiB:,.1f} | |")
    # the gap, split: payload (compression) and the rest (per-file and metadata overhead)
    c_over, f_over = cdisk - total[1], fdisk - total[2]
    lines += ["", (f"Of Filetracker's {fdisk / MiB:,.1f} MiB, {total[2] / MiB:,.1f} MiB are stored contents and "
                   f"{f_over / MiB:,.1f} MiB overhead; of castore's {cdisk / MiB:,.1f} MiB, {total[1] / MiB:,.1f} MiB "
                   f"and {c_over / MiB:,.1f} MiB. So castore saves **{(total[2] - total[1]) / MiB:,.1f} MiB by "
                   f"compression** and **{(f_over - c_over) / MiB:,.1f} MiB of overhead**: "
                   f"{(fdisk - cdisk) / MiB:,.1f} MiB in all, {(1 - cdisk / fdisk) * 100:.1f} % of Filetracker's "
                   "disk. Half of Filetracker's disk would need castore to store every content in half the bytes "
                   "gzip -9 does."), ""]
    return lines


def other_levels(data: dict[str, Any]) -> list[str]:
    """castore at other zstd levels against its default, when the run had them."""
    f = _by_name(data)
    base = f.get("castore-embedded")
    others = [n for n in f if n.startswith("castore-embedded-zstd")]
    if not base or not others:
        return []
    lines = ["## castore at other zstd levels", "",
             "The same corpus in stores created with `castore init --zstd-level N` (castore's default is level 1).",
             "", "| system | disk MiB | vs default level | ingest s | vs default level | read s |",
             "|---|---:|---:|---:|---:|---:|",
             f"| castore-embedded | {base['disk'] / MiB:,.1f} | | {base['ingest_s']:,.1f} | | {base['read_s']:,.1f} |"]
    for name in others:
        o = f[name]
        lines.append(f"| {name} | {o['disk'] / MiB:,.1f} | {(o['disk'] / base['disk'] - 1) * 100:+.1f} % | "
                     f"{o['ingest_s']:,.1f} | {o['ingest_s'] / base['ingest_s']:.2f}x | {o['read_s']:,.1f} |")
    b = data.get("breakdowns", {})
    if "castore-embedded" in b:
        lines += ["", "Stored MiB per part:", "",
                  "| part | " + " | ".join(["castore-embedded", *(n for n in others if n in b)]) + " |",
                  "|---|" + "---:|" * (1 + sum(n in b for n in others))]
        for part, row in sorted(b["castore-embedded"]["parts"].items(), key=lambda kv: -kv[1][1]):
            cells = [f"{row[2] / MiB:,.1f}", *(f"{b[n]['parts'][part][2] / MiB:,.1f}" for n in others if n in b)]
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def after_compact(data: dict[str, Any]) -> list[str]:
    """castore-compacted against castore-embedded, restic and borg; before/after compact per part (issue #23)."""
    f = _by_name(data)
    result = next((r for r in data["results"] if r["system"] == "castore-compacted" and not r["skipped"]), None)
    if result is None or not result.get("compact"):
        return []
    c = result["compact"]
    after = f["castore-compacted"]
    logical = data["corpus"]["logical_bytes"]
    intro = ("castore-compacted ingests as castore-embedded does (zstd level 1), then runs `castore compact` "
             "(zstd 19) once after the last year, timed apart; its disk is the store's after compact and its "
             "read-back reads the compacted store.")
    settled = (f"- compact: {c['settled']:,} of {c['contents']:,} contents settled ({c['moved_inline']:,} moved "
               f"inline), stored {c['bytes_before'] / MiB:,.1f} -> {c['bytes_after'] / MiB:,.1f} MiB "
               f"({(c['bytes_after'] / c['bytes_before'] - 1) * 100:+.1f} %), disk {c['disk_before'] / MiB:,.1f} -> "
               f"{c['disk_after'] / MiB:,.1f} MiB")
    timing = (f"- compact time: {c['seconds']:,.1f} s wall, {c['cpu_seconds']:,.1f} s CPU: "
              f"{c['logical_bytes'] / MB / max(c['cpu_seconds'], 1e-9):,.2f} MB/s of logical content per core "
              f"(each distinct content once); the worker's peak RSS (ingest, compact and read) "
              f"{after['rss'] / MiB:,.0f} MiB")
    lines = ["## castore after `castore compact` (issue #23)", "", intro, "", settled, timing]
    base = f.get("castore-embedded")
    if base:
        lines.append(f"- ingest {after['ingest_mbs']:,.1f} MB/s (castore-embedded: {base['ingest_mbs']:,.1f}); "
                     f"read after compact {after['read_mbs']:,.1f} MB/s (castore-embedded, not compacted: "
                     f"{base['read_mbs']:,.1f}, {(after['read_mbs'] / base['read_mbs'] - 1) * 100:+.0f} %)")
    peers = {n: f[n]["disk"] for n in ("restic", "borg") if n in f}
    if peers:
        best = min(peers, key=lambda n: peers[n])
        lines.append(f"- against the smaller of restic and borg ({best}, {peers[best] / MiB:,.1f} MiB): "
                     f"**{after['disk'] / peers[best]:.3f}x** (before compact "
                     f"{c['disk_before'] / peers[best]:.3f}x; target ≤ 1.0x, stretch ≤ 0.95x)")
    lines.append(f"- logical / disk: {logical / after['disk']:.2f}")
    b = data.get("breakdowns", {})
    if "castore-embedded" in b and "castore-compacted" in b:
        lines += ["", "Stored MiB per part of the corpus, before and after compact (each distinct content once):", "",
                  "| part | distinct | before compact | after compact | change |", "|---|---:|---:|---:|---:|"]
        for part, row in sorted(b["castore-embedded"]["parts"].items(), key=lambda kv: -kv[1][1]):
            new = b["castore-compacted"]["parts"].get(part, row)
            lines.append(f"| {part} | {row[0]:,} | {row[2] / MiB:,.2f} | {new[2] / MiB:,.2f} | "
                         f"{(new[2] / row[2] - 1) * 100 if row[2] else 0:+.1f} % |")
        cats = b["castore-compacted"]["categories"]
        lines += ["", "castore-compacted's disk by category (allocated MiB): "
                  + ", ".join(f"{name} {row[2] / MiB:,.1f}" for name, row in sorted(cats.items()))]
    return [*lines, ""]


def corpus_parts(data: dict[str, Any]) -> list[str]:
    """The corpus by part: how much each repeats (a table), when the run recorded it."""
    parts = data["corpus"].get("by_part")
    if not parts:
        return []
    lines = ["| part | files | logical MiB | distinct contents | distinct MiB | logical / distinct |",
             "|---|---:|---:|---:|---:|---:|"]
    for part, (files, logical, distinct, distinct_bytes) in sorted(parts.items(), key=lambda kv: -kv[1][3]):
        lines.append(f"| {part} | {files:,} | {logical / MiB:,.1f} | {distinct:,} | {distinct_bytes / MiB:,.1f} | "
                     f"{logical / distinct_bytes:.2f} |")
    return [*lines, ""]


def write_report(data: dict[str, Any], out: Path) -> Path:
    """``out/report.md`` and its plots."""
    out.mkdir(parents=True, exist_ok=True)
    plots(data, out)
    m, corpus = data["machine"], data["corpus"]
    lines = [
        f"# Deduplication benchmark, {data['scale']} scale, {data['date'][:10]}",
        "",
        (f"Made with `{data['command']}` (corpus seed {data['seed']}) in {data['seconds'] / 60:.1f} minutes. "
        "Timings come from one run on a machine other jobs shared: compare systems within this report, "
        "not with other runs."),
        "",
        "## Machine",
        "",
        f"- {m['cpus']} cores ({m['cpu']}), {m['memory']}",
        f"- filesystem of the scratch folder: `{m['filesystem']}`",
        f"- Linux {m['kernel']}, Python {m['python']}",
        *([f"- load average (1, 5, 15 min) at the start: {m['load']}, at the end: {data.get('load_end', '?')}"]
          if "load" in m else []),
        "",
        "## Corpus",
        "",
        (f"{corpus['files']:,} files, **{corpus['logical_bytes'] / MiB:,.1f} MiB logical**, "
        f"**{corpus['distinct']:,} distinct contents** ({corpus['distinct_bytes'] / MiB:,.1f} MiB): "
        f"whole-file dedup alone could keep {corpus['distinct_bytes'] / corpus['logical_bytes'] * 100:.1f} % of the "
        f"bytes. {len(data['years'])} contest-years, ingested one after another. "
        "What repeats and why is described in `benchmarks/corpus.py`."),
        "",
        *corpus_parts(data),
        "## Systems and versions",
        "",
    ]
    from benchmarks.systems import system_named

    for r in data["results"]:
        system = system_named(r["system"])
        description = system.description if system else ""
        if r["skipped"]:
            lines.append(f"- **{r['system']}**: skipped: {r['skipped']}")
        else:
            lines.append(f"- **{r['system']}**: {r['version']}. {description}.")
    lines += ["", "## Results", "", "| " + " | ".join(TABLE_HEAD) + " |",
              "|---|" + "---:|" * (len(TABLE_HEAD) - 2) + "---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(data)]
    lines += [
        "",
        ("*disk*: `du -sB1` of the system's data folder (metadata, folders and indexes included). "
        "*logical/disk* = overall saving; *dedup* = logical / bytes kept after dedup (before compression), "
        "*compression* = those bytes / disk (so repository overhead counts against it), where the system tells (castore: its usage; restic: `stats "
        "--mode raw-data`; borg: `info`; Filetracker: whole-file dedup, so the distinct contents). "
        "*ingest*: storing every file, one contest-year after another, with each system's durability "
        "(cp: an fsync of every copy; tar: a sync of each archive). *read*: restoring every file into an "
        "empty folder, no fsync; *restored* compares every restored file with the corpus. *peak RSS*: of "
        "the process for castore-embedded, of the tool for the command-line systems, the sum of the "
        "server's processes for castore-http and Filetracker."),
        "",
        "## Reading the figures",
        "",
        *reading(data),
        "",
        "## Targets (issue #14)",
        "",
        *targets(data),
        "",
        *against_filetracker(data),
        *other_levels(data),
        *after_compact(data),
        "## Where sub-file dedup (restic, borg) saves more than castore",
        "",
        *subfile(data),
        "",
        "## Plots",
        "",
        f"![disk used per system]({PLOTS['disk']})",
        "",
        f"![ingest and read throughput]({PLOTS['throughput']})",
        "",
        f"![disk used as the corpus grows]({PLOTS['growth']})",
        "",
        "## Reproduce",
        "",
        "```",
        "bash benchmarks/setup_filetracker.sh       # Filetracker 2.3.3's server in .venv-filetracker",
        "apt-get install -y restic borgbackup       # optional: skipped when missing",
        f".venv/bin/python -m benchmarks run --scale {data['scale']}",
        "```",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
