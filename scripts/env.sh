# Sourced by the other scripts: make ./.venv with castore and its dev tools installed.
# Works on a fresh Debian with Python 3.11 as root; reinstalls only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        if ! "$PYTHON" -m venv .venv 2>/dev/null; then
            echo "castore: installing python3-venv with apt-get" >&2
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            rm -rf .venv && "$PYTHON" -m venv .venv
        fi
    fi
    local stamp=.venv/.castore-installed
    local want
    want=$(cat pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "castore: installing the project and its dev tools into .venv" >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
        # The original Filetracker client for the compatibility tests. --no-deps: its
        # server-only dependency bsddb3 would need Berkeley DB headers; the client's own
        # dependencies (requests, six, progressbar2) come with .[dev].
        .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps 'filetracker==2.3.3'
        echo "$want" > "$stamp"
    fi
}
