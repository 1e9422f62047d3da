#!/usr/bin/env bash
# Mutation testing of the code where a surviving mutant means a wrong byte, a lost file or an
# open door: each module against the tests that cover it (MODULES below), with mutmut 3.
#
#   bash scripts/mutate.sh                 every module, one after the other
#   bash scripts/mutate.sh names upload    only these
#   bash scripts/mutate.sh --list          the modules, what each mutates and the tests it runs
#   bash scripts/mutate.sh --report NAME   the figures of NAME's last run again (no run)
#
# Not part of CI nor of scripts/test.sh: a full run takes tens of minutes. It installs mutmut
# into ./.venv if missing, copies the working tree (tracked and new files) to a scratch folder
# per module ($MUTATE_WORK, default /tmp/castore-mutate), runs mutmut there under nice, and
# prints one line per module: mutants run, killed, survived (listed, less the equivalent ones
# of scripts/mutate-equivalent.md), timeouts, no covering test, and the score. Read a
# survivor with `cd $MUTATE_WORK/<module> && ../../path/to/.venv/bin/mutmut show <name>`
# (the command is printed). MUTATE_JOBS (default 2) sets mutmut's --max-children.
#
# Why mutmut rather than cosmic-ray (both tried on castore/names.py with tests/store/test_names.py):
# mutmut ran 136 mutants in 20 s (~9 a second: it forks one warm pytest process per mutant
# and runs only the tests that reach the mutated function); cosmic-ray ran 33 of its 185 in
# 90 s (~0.4 a second: a new pytest process per mutant, every test each time), about 25x
# slower, which would make a full run several hours here. What mutmut gives up: it learns
# which tests reach a function in-process, so a test that reaches it only through a server
# subprocess is not run for it (such mutants show as "no tests" or survive); hence the
# in-process tests in the mapping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
MUTMUT_SPEC='mutmut>=3.8,<3.9'
WORK=${MUTATE_WORK:-/tmp/castore-mutate}
JOBS=${MUTATE_JOBS:-2}
EQUIVALENT=$REPO/scripts/mutate-equivalent.md

# name | files to mutate (globs, space-separated) | mutant names to run (globs; "-": all of them) | tests
# [| CASTORE_TEST_BACKENDS, default sqlite+file: each mutant's run is a new pytest session, and
#    PostgreSQL or moto started anew for each would cost more than the mutant's tests]
MODULES=(
  "names|castore/names.py|-|tests/store/test_names.py"
  "upload|castore/server/upload.py|-|tests/server/test_upload_bounds.py tests/store/test_put_zstd.py"
  "auth|castore/server/auth.py castore/server/tokens.py|-|tests/server/test_tokens.py tests/server/test_access_stays_closed.py"
  "reading|castore/reading.py|-|tests/store/test_verified_reads.py tests/store/test_integrity.py tests/store/test_random_access.py"
  "batch|castore/batch.py castore/server/batch.py|-|tests/server/test_batch.py tests/server/test_batch_attacks.py"
  "dedup|castore/putting.py|castore.putting.x__same_bytes__* castore.putting.x__part__* castore.putting.x__nonempty_bytes__* castore.putting.xǁPutStepsǁ_holds__* castore.putting.xǁPutStepsǁ_probe__*|tests/store/test_dedup.py tests/store/test_collisions.py tests/store/test_store_semantics.py"
  "blobs-fs|castore/blobs/fs.py castore/blobs/staging.py|-|tests/blobs/test_blob_backends.py tests/store/test_faults.py"
  "blobs-s3|castore/blobs/s3.py|castore.blobs.s3.xǁS3BlobBackendǁpublish__* castore.blobs.s3.xǁ_S3Stagedǁ*|tests/blobs/test_blob_backends.py|sqlite+s3"
  "cache|castore/client/cache.py|-|tests/client/test_cache.py tests/client/test_client.py"
  "migration|castore/migration/live.py castore/migration/importer.py|-|tests/migration/test_migration_sources.py tests/migration/test_migration_no_resurrection.py tests/migration/test_live_migration_hostile.py tests/migration/test_import_batches.py"
  "linking|castore/metadata/linking.py|-|tests/migration/test_import_batches.py tests/metadata/test_totals.py|postgresql+file"
  "bridge-storage|django_bridge/storage.py|-|tests/bridge/test_storage_contract.py tests/bridge/test_newcomer_safety.py tests/bridge/test_storing_files.py tests/bridge/test_fixtures.py tests/bridge/test_oioioi_call_sites.py"
)

field() { local IFS="|"; read -r -a parts <<< "$1"; echo "${parts[$2]:-}"; }

if [ "${1:-}" = "--list" ]; then
    for entry in "${MODULES[@]}"; do
        printf '%-15s mutates: %s\n%15s  runs: %s\n%15s  tests: %s\n' "$(field "$entry" 0)" "$(field "$entry" 1)" "" \
            "$(field "$entry" 2)" "" "$(field "$entry" 3)"
    done
    exit 0
fi

source scripts/env.sh
# a .venv linked from another tree (a worktree sharing the main one's) is that tree's to
# install: ensure_venv here would repoint its editable castore at this tree
[ -L .venv ] || ensure_venv
if ! .venv/bin/python -c 'import mutmut' 2>/dev/null; then
    echo "castore: installing $MUTMUT_SPEC into .venv (for scripts/mutate.sh only)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check "$MUTMUT_SPEC"
fi
# through the interpreter, not .venv/bin/mutmut: that script's #! line names the python of the
# folder pip ran in, which may be gone (.venv is shared between worktrees)
MUTMUT=("$REPO/.venv/bin/python" -m mutmut)

# write_config DIR FILES TESTS: mutmut's settings for one module (setup.cfg in the scratch copy).
write_config() {
    local dir=$1 files=$2 tests=$3 f
    {
        echo "[mutmut]"
        echo "source_paths = castore"
        echo "    django_bridge"
        echo "only_mutate ="
        for f in $files; do echo "    $f"; done
        echo "pytest_add_cli_args_test_selection ="
        for f in $tests; do echo "    $f"; done
        # -m "not slow": the slow tests (crash rounds, flipped bytes through every client) take
        # seconds each, and each mutant reaching their code would run them
        echo "pytest_add_cli_args = -p"
        echo "    no:cacheprovider"
        echo "    -m"
        echo "    not slow"
        echo "also_copy = tests"
        echo "    benchmarks"
        echo "    docs"
        echo "    README.md"
        echo "    alembic"
        echo "    alembic.ini"
    } > "$dir/setup.cfg"
}

# equivalent_names: the mutant names scripts/mutate-equivalent.md lists (first column of its tables).
equivalent_names() {
    grep -o '^| `[^`]*`' "$EQUIVALENT" 2>/dev/null | sed 's/^| `//; s/`$//' || true
}

run_module() {
    local entry=$1 name files selection tests dir
    name=$(field "$entry" 0); files=$(field "$entry" 1); selection=$(field "$entry" 2); tests=$(field "$entry" 3)
    local backends
    backends=$(field "$entry" 4); backends=${backends:-sqlite+file}
    dir=$WORK/$name
    rm -rf "$dir"
    mkdir -p "$dir"
    git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
        [ -e "$f" ] && cp --parents -- "$f" "$dir/"
    done
    write_config "$dir" "$files" "$tests"
    local -a names=()
    [ "$selection" != "-" ] && read -r -a names <<< "$selection"
    local started=$SECONDS
    (cd "$dir" && CASTORE_TEST_BACKENDS=$backends \
        nice -n 10 "${MUTMUT[@]}" run --max-children "$JOBS" "${names[@]}" > "$dir/run.log" 2>&1) || {
        echo "$name: mutmut failed, see $dir/run.log" >&2; tail -20 "$dir/run.log" >&2; return 1; }
    (cd "$dir" && "${MUTMUT[@]}" results --all true 2>/dev/null) > "$dir/results.txt"
    report "$name" "$dir" "$((SECONDS - started))" "${names[@]}"
}

# report NAME DIR SECONDS [GLOBS...]: one line of figures, then the survivors not listed as equivalent.
report() {
    local name=$1 dir=$2 seconds=$3; shift 3
    local pattern='.*'
    if [ $# -gt 0 ]; then
        pattern=$(printf '%s\n' "$@" | sed 's/[.]/\\./g; s/\*/.*/g' | paste -sd'|')
    fi
    local selected
    selected=$(sed 's/^ *//; s/: / /' "$dir/results.txt" | grep -E "^($pattern) " | grep -v ' not checked$' || true)
    local equivalent survivors
    equivalent=$(equivalent_names)
    survivors=$(echo "$selected" | awk '$2 == "survived" {print $1}' | grep -vxF -f <(echo "$equivalent"; echo __none__) || true)
    local total killed survived timeout notests equiv
    total=$(echo "$selected" | grep -c . || true)
    killed=$(echo "$selected" | awk '$2 == "killed"' | grep -c . || true)
    survived=$(echo "$survivors" | grep -c . || true)
    timeout=$(echo "$selected" | awk '$2 == "timeout"' | grep -c . || true)
    notests=$(echo "$selected" | awk '$2 == "no" {print}' | grep -c . || true)
    equiv=$(echo "$selected" | awk '$2 == "survived" {print $1}' | grep -xF -f <(echo "$equivalent"; echo __none__) | grep -c . || true)
    local counted=$((total - equiv))
    local score="n/a"
    [ "$counted" -gt 0 ] && score=$(awk -v k="$((killed + timeout))" -v n="$counted" 'BEGIN {printf "%.1f %%", 100 * k / n}')
    printf '%-15s mutants %4d  killed %4d  timeout %3d  survived %3d  no-tests %3d  equivalent %3d  score %s  (%ds)\n' \
        "$name" "$total" "$killed" "$timeout" "$survived" "$notests" "$equiv" "$score" "$seconds" | tee -a "$WORK/summary.txt"
    if [ -n "$survivors" ]; then
        echo "$survivors" | sed 's/^/    survived: /'
        echo "    read one: (cd $dir && ${MUTMUT[*]} show NAME)"
    fi
}

mkdir -p "$WORK"
if [ "${1:-}" = "--report" ]; then
    # --report MODULE...: the figures of the last run in $MUTATE_WORK/MODULE again (say, after
    # scripts/mutate-equivalent.md changed, or of a run stopped early: its unchecked mutants are left out)
    shift
    for entry in "${MODULES[@]}"; do
        name=$(field "$entry" 0)
        [[ " $* " == *" $name "* ]] || continue
        selection=$(field "$entry" 2); names=()
        [ "$selection" != "-" ] && read -r -a names <<< "$selection"
        (cd "$WORK/$name" && "${MUTMUT[@]}" results --all true 2>/dev/null) > "$WORK/$name/results.txt"
        report "$name" "$WORK/$name" 0 "${names[@]}"
    done
    exit 0
fi
wanted=("$@")
status=0
for entry in "${MODULES[@]}"; do
    name=$(field "$entry" 0)
    if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    run_module "$entry" || status=1
done
exit $status
