"""The public API is what __all__ says, and the code passes mypy --strict and ruff."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import castore

ROOT = Path(__file__).resolve().parents[1]


def test_exported_members_exist_and_are_documented() -> None:
    for name in castore.__all__:
        member = getattr(castore, name)
        assert member.__doc__, f"castore.{name} has no docstring"
    assert {"Store", "NotFound", "InvalidName", "CastoreError"} <= set(castore.__all__)


def test_errors_derive_from_one_base() -> None:
    members = [getattr(castore, n) for n in castore.__all__]
    errors = [m for m in members if isinstance(m, type) and issubclass(m, BaseException)]
    assert len(errors) >= 10 and all(issubclass(e, castore.CastoreError) for e in errors)


def test_mypy_strict() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_ruff() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "castore", "django_bridge", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
