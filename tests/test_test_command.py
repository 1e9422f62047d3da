"""scripts/test.sh runs every part whatever became of the others, and ends with one line per part.

The parts run through scripts/parts.sh, which these tests drive with fake parts (``true``,
``false``); test.sh itself installs packages and runs the whole suite, so it is not run here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_parts(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash after ``set -euo pipefail`` (as test.sh has it) and ``source scripts/parts.sh``."""
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/parts.sh; {script}"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60)


def test_a_failed_part_does_not_stop_the_next_and_the_summary_says_so() -> None:
    done = run_parts("run_part main false; run_part radosgw touch /dev/null; "
                     "skip_part django6 'no Python >= 3.12 found'; report_parts")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.splitlines()[-3:] == [
        "  main: failed (exit 1)", "  radosgw: passed", "  django6: not run: no Python >= 3.12 found"], done.stdout


def test_all_parts_passed_exits_0_and_a_part_not_run_is_no_failure() -> None:
    done = run_parts("run_part main true; skip_part radosgw 'pytest arguments were given'; report_parts")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.splitlines()[-2:] == ["  main: passed", "  radosgw: not run: pytest arguments were given"]


def test_a_part_that_could_not_be_set_up_is_a_failure() -> None:
    done = run_parts("run_part main true; fail_part django6 'no Python >= 3.12 found'; report_parts")
    assert done.returncode == 1 and done.stdout.splitlines()[-1] == "  django6: failed: no Python >= 3.12 found"


def test_the_test_command_runs_its_three_parts_through_parts_sh() -> None:
    text = (ROOT / "scripts" / "test.sh").read_text()
    assert "source scripts/parts.sh" in text and text.rstrip().endswith("report_parts")
    assert set(re.findall(r"(?:run|skip|fail)_part (\w+)", text)) == {"main", "radosgw", "django6"}
    assert not re.search(r"^\.venv[^\n]*pytest", text, re.MULTILINE), "every pytest run is a part (run_part)"
