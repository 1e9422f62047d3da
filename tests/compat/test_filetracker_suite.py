"""Filetracker 2.3.3's own client/server interaction tests, pointed at ``castore serve``.

``filetracker/tests/interaction_test.py`` starts Filetracker's server itself; here its
``InteractionTest`` class runs unchanged except for ``setUpClass``, which starts castore
instead, once with Filetracker's client and once with castore's (the module's
``Client`` and ``FiletrackerError`` names swapped, as an OIOIOI install would swap its
imports). Result: every test passes but one, which looks inside Filetracker's server
folder (``<server_dir>/links/put.txt``), a layout castore does not have.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
import types
import unittest
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import castore.client

from ..server_process import castore_server


def _load_interaction_tests() -> types.ModuleType:
    """Import the test module without Filetracker's server (it needs bsddb3 and gevent)."""
    stub = types.ModuleType("filetracker.servers.run")
    stub.main = lambda argv: None  # type: ignore[attr-defined]
    saved = sys.modules.get("filetracker.servers.run")
    sys.modules["filetracker.servers.run"] = stub
    try:
        sys.modules.pop("filetracker.tests.interaction_test", None)
        return importlib.import_module("filetracker.tests.interaction_test")
    finally:
        if saved is None:
            del sys.modules["filetracker.servers.run"]
        else:
            sys.modules["filetracker.servers.run"] = saved


LAYOUT_TESTS = {"test_put_file_should_save_file_both_locally_and_remotely"}
"""Tests that inspect Filetracker's server folder layout: expected to fail against castore."""


def _suite_against_castore(client_module: Any) -> type[unittest.TestCase]:
    module = _load_interaction_tests()
    if client_module is not None:
        module.Client = client_module.Client  # type: ignore[attr-defined]
        module.FiletrackerError = client_module.FiletrackerError  # type: ignore[attr-defined]

    class AgainstCastore(module.InteractionTest):  # type: ignore[name-defined,misc]
        @classmethod
        def setUpClass(cls) -> None:
            base = module.InteractionTest  # its setUp reads these from the base class
            base.cache_dir = tempfile.mkdtemp()
            base.server_dir = tempfile.mkdtemp()
            base.temp_dir = tempfile.mkdtemp()
            cls._stack = ExitStack()
            url = cls._stack.enter_context(castore_server(Path(base.server_dir)))
            base.client = module.Client(cache_dir=base.cache_dir, remote_url=url)

        @classmethod
        def tearDownClass(cls) -> None:
            cls._stack.close()
            base = module.InteractionTest
            for folder in (base.cache_dir, base.server_dir, base.temp_dir):
                shutil.rmtree(folder)

    return AgainstCastore


@pytest.mark.parametrize("client", ["filetracker", "castore"])
def test_filetracker_interaction_suite(client: str) -> None:
    case = _suite_against_castore(None if client == "filetracker" else castore.client)
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    suite.run(result)
    failed = {test.id().rsplit(".", 1)[1] for test, _ in result.failures + result.errors}
    assert result.testsRun == 13
    assert failed == LAYOUT_TESTS, [text for _, text in result.failures + result.errors]
