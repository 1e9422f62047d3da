#!/usr/bin/env bash
# Install everything the tests need, then run the test suite in three parts, each whatever became
# of the others, and end with one line per part (passed, failed, or not run and why); the exit
# status is 1 when any part failed or could not be set up (e.g. no Python >= 3.12 for django6):
#   main     all of it with Django 5.2 LTS on Python 3.11 (S3 on moto); extra args go to pytest
#   radosgw  the S3 tests again with the blobs on Ceph's radosgw, a real S3 implementation
#            (scripts/radosgw.sh; the files are RADOSGW_TESTS below)
#   django6  the Django bridge tests with the newest Django 6.x on Python 3.12+
# With extra args only the main part runs (the others are listed as not run).
source "$(dirname "$0")/env.sh"
source scripts/parts.sh
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

# The S3 tests run on radosgw too (PostgreSQL + radosgw; moto runs them all in the main part):
# the S3 backend's contract and read cache, the setup check, the per-process clients, the
# store's semantics, moving a store, killed writers, two servers on one bucket, the README's steps.
RADOSGW_TESTS=(
    tests/blobs/test_blob_backends.py::TestS3Backend
    tests/blobs/test_blob_backends.py::TestS3ReadCacheHealing
    tests/cli/test_s3_setup.py
    tests/system/test_s3_clients.py
    tests/store/test_store_semantics.py
    tests/store/test_moving.py
    tests/system/test_processes.py
    tests/system/test_two_servers.py
    tests/system/test_readme_scale.py
)

run_part main .venv/bin/python -m pytest "$@"
if [ $# -gt 0 ]; then
    skip_part radosgw "pytest arguments were given (they go to the main part only)"
    skip_part django6 "pytest arguments were given (they go to the main part only)"
else
    if why=$(ensure_radosgw); then
        run_part radosgw env CASTORE_TEST_BACKENDS=postgresql+s3-radosgw \
            .venv/bin/python -m pytest -q -p no:cacheprovider "${RADOSGW_TESTS[@]}"
    else
        fail_part radosgw "$why"
    fi
    if why=$(ensure_django6_venv); then
        echo "castore: the Django bridge tests with $(.venv-django6/bin/python -m django --version | sed 's/^/Django /')" >&2
        run_part django6 .venv-django6/bin/python -m pytest -q -p no:cacheprovider tests/bridge
    else
        fail_part django6 "$why"
    fi
fi
report_parts
