"""Settings mistakes a newcomer makes are refused loudly, and the test run cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_bridge.client import get_client, memory_store_factory, running_tests
from django_bridge.filename import FiletrackerFilename, split_versioned

ROOT = Path(__file__).resolve().parents[2]


def test_memory_store_is_refused_outside_a_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert running_tests()
    monkeypatch.delattr(mail, "outbox")  # what a production process looks like
    assert not running_tests()
    with pytest.raises(ImproperlyConfigured, match="tests only"):
        memory_store_factory()
    with pytest.raises(ImproperlyConfigured, match="local_store_factory"):
        get_client()


@pytest.mark.parametrize("url", ["127.0.0.1:9999", "http://", "ftp://x"])
def test_a_bad_filetracker_url_is_improperly_configured(url: str, tmp_path: Path) -> None:
    with (
        override_settings(FILETRACKER_CLIENT_FACTORY="django_bridge.client.remote_storage_factory",
                          FILETRACKER_URL=url, FILETRACKER_CACHE_ROOT=str(tmp_path)),
        pytest.raises(ImproperlyConfigured, match="FILETRACKER_URL"),
    ):
        get_client()


@pytest.mark.parametrize("name", ["a/b@²", "a/b@١٢", "a/b@-1", "a/b@1.5", "a/b@99999999999999999999999"])
def test_filename_versions_follow_castore_names(name: str) -> None:
    with pytest.raises(ValueError):
        split_versioned(name)
    with pytest.raises(ValueError):
        FiletrackerFilename(name)
    assert split_versioned("a/b@17") == ("a/b", 17)


def test_a_test_run_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """The settings' BASE_DIR (castore-django-tests-*) is removed when the run ends."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "bt"),
         "tests/bridge/test_client_factory.py::test_client_is_built_once"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(tmp_path.glob("castore-django-*")), list(tmp_path.iterdir())


def test_manage_py_check_reports_the_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    call_command("check")  # inside a test run the memory store is fine
    monkeypatch.delattr(mail, "outbox")
    with pytest.raises(SystemCheckError, match="django_bridge.E001"):
        call_command("check")
