#!/usr/bin/env bash
# Install Filetracker 2.3.3's server (for benchmarks/server.py) into ./.venv-filetracker.
# Its bsddb3 dependency builds against Berkeley DB headers (Debian: libdb-dev), and the
# server needs the [server] extra (gevent).
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv-filetracker/bin/python -c 'import filetracker.servers.run, gevent, bsddb3' 2>/dev/null; then
    exit 0  # already installed
fi
if ! dpkg -s libdb-dev >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq libdb-dev >/dev/null
fi
[ -x .venv-filetracker/bin/python ] || python3 -m venv .venv-filetracker
.venv-filetracker/bin/python -m pip install -q --disable-pip-version-check 'filetracker[server]==2.3.3'
echo "Filetracker server installed in .venv-filetracker"
