"""``castore compact``: options, summary and JSON report (#23)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from castore.cli import cli
from castore.store import Store

from ..store.test_compacting import numbers


def test_compact_command_reports_and_continues(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        for i in range(3):
            store.put(f"/t/{i}.in", numbers(i, 3000), 1)
    runner = CliRunner()
    first = runner.invoke(cli, ["--root", str(root), "--json", "compact", "--limit", "1"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["contents"], report["settled"], report["finished"]) == (1, 1, False)
    assert report["bytes_after"] < report["bytes_before"] and report["cpu_seconds"] >= 0
    rest = runner.invoke(cli, ["--root", str(root), "compact", "--level", "19", "--min-age", "0"])
    assert rest.exit_code == 0, rest.output
    assert rest.output.startswith("looked at 2 contents") and "settled 2" in rest.output and "MB/s" in rest.output
    assert "more to do" not in rest.output
    again = runner.invoke(cli, ["--root", str(root), "compact", "--budget", "0"])
    assert again.exit_code == 0 and again.output.startswith("looked at 0 contents")
    with Store.open(root) as store:
        assert all(store.read_bytes(f"/t/{i}.in") == numbers(i, 3000) for i in range(3))
    assert runner.invoke(cli, ["--root", str(root), "compact", "--level", "23"]).exit_code == 2
