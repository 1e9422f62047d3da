#!/usr/bin/env bash
# Install everything the tests need, then run the whole test suite (extra args go to pytest).
source "$(dirname "$0")/env.sh"
ensure_venv
exec .venv/bin/python -m pytest "$@"
