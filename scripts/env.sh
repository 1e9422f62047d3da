# Sourced by the other scripts: make ./.venv with castore and its dev tools installed.
# Works on a fresh Debian with Python 3.11 as root; reinstalls only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}

_stamp_of() {
    cat pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1
}

# make_venv DIR PYTHON DJANGO_SPEC: a venv with castore[dev,django], that Django, and
# the original Filetracker client for the compatibility tests (--no-deps: its server-only
# dependency bsddb3 would need Berkeley DB headers; requests, six and progressbar2 come
# with .[dev]).
make_venv() {
    local dir=$1 python=$2 django=$3
    if [ ! -x "$dir/bin/python" ]; then
        if ! "$python" -m venv "$dir" 2>/dev/null; then
            echo "castore: installing python3-venv with apt-get" >&2
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$dir" && "$python" -m venv "$dir" || return 1
        fi
    fi
    local stamp=$dir/.castore-installed
    local want
    want=$(_stamp_of)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "castore: installing the project, $django and the dev tools into $dir" >&2
        # each step || return 1: errexit does not apply when the caller tests the result (test.sh)
        "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null || return 1
        "$dir/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,django]' "$django" || return 1
        "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps 'filetracker==2.3.3' || return 1
        echo "$want" > "$stamp"
    fi
}

# Debian's PostgreSQL server programs (initdb, pg_ctl), for the tests on PostgreSQL; the tests
# start and stop their own cluster, so the package's default cluster is not needed.
ensure_postgresql() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        echo "castore: installing postgresql with apt-get" >&2
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
}

# Ceph's radosgw, a real S3 implementation, for the tests' radosgw part (scripts/radosgw.sh
# starts a throw-away one-node cluster). Prints why on stdout and fails when it cannot be had.
ensure_radosgw() {
    if command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null; then
        return 0
    fi
    echo "castore: installing radosgw, ceph-mon and ceph-osd with apt-get" >&2
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd; } >&2; then
        echo "apt-get could not install radosgw, ceph-mon and ceph-osd"
        return 1
    fi
}

ensure_venv() {
    make_venv .venv "$PYTHON" 'django>=5.2,<5.3'   # Django 5.2 LTS, what OIOIOI pins
}

# A Python >= 3.12 for the Django 6.x run (Django 6 dropped Python 3.11): $PYTHON_DJANGO6,
# else python3.13/python3.12 on PATH, else the newest pyenv-installed 3.12+.
find_python_for_django6() {
    local candidate
    for candidate in "${PYTHON_DJANGO6:-}" python3.14 python3.13 python3.12 \
            $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
        # pyenv shims exist for versions that are not active: run it to be sure
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    return 1
}

# Prints why on stdout and fails when there is no Python for it, or its install failed.
ensure_django6_venv() {
    local python
    if ! python=$(find_python_for_django6); then
        echo "no Python >= 3.12 found for the Django 6.x tests (set PYTHON_DJANGO6)"
        return 1
    fi
    make_venv .venv-django6 "$python" 'django>=6.0,<7' >&2 || { echo "installing .venv-django6 failed"; return 1; }
}
