#!/usr/bin/env bash
# Install everything the tests need, then run the whole test suite (extra args go to pytest):
# all of it with Django 5.2 LTS on Python 3.11, then the Django bridge tests again with the
# newest Django 6.x on Python 3.12+.
source "$(dirname "$0")/env.sh"
ensure_venv
# Filetracker 2.3.3's own server, a real peer for tests/compat (Debian's libdb-dev for bsddb3)
bash benchmarks/setup_filetracker.sh >/dev/null
# Debian's Chromium and its driver, for the web page's browser test (tests/server/test_ui_browser.py)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "castore: installing chromium and chromium-driver with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# restic and borg, the deduplication benchmark's sub-file references (its test runs them when present)
if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then
    apt-get update -qq && apt-get install -y -qq restic borgbackup >/dev/null
fi
# PostgreSQL's server programs: the store's tests start a throw-away cluster on 127.0.0.1
ensure_postgresql
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
    ensure_django6_venv
    echo "castore: the Django bridge tests with $(.venv-django6/bin/python -m django --version | sed 's/^/Django /')" >&2
    .venv-django6/bin/python -m pytest -q -p no:cacheprovider tests/bridge
fi
