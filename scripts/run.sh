#!/usr/bin/env bash
# Install castore and serve the embedded store ./castore-data (SQLite + blob folder, created in the
# current folder) over HTTP with the Filetracker v2 protocol on 127.0.0.1:9999, until
# Ctrl-C or SIGTERM. Extra arguments go to `castore serve` (e.g. --port 8000 --workers 2).
here=$(pwd)
source "$(dirname "$0")/env.sh"
project=$(pwd)
ensure_venv
cd "$here"
exec "$project/.venv/bin/castore" --root "${CASTORE_ROOT:-castore-data}" serve --init --host 127.0.0.1 --port 9999 "$@"
