# Sourced by scripts/test.sh: run the test suite in parts, each whatever became of the others,
# and end with one line per part. tests/test_test_command.py runs these with fake parts.
#
#   run_part NAME COMMAND...   run COMMAND; the part passed when it exits 0, else failed
#   skip_part NAME WHY         the part was not run, on purpose, and why (not a failure)
#   fail_part NAME WHY         the part could not run (e.g. its install failed): a failure
#   report_parts               one line per part, in order; returns 1 when any part failed

_part_lines=()
_part_failed=0

run_part() {
    local name=$1
    shift
    echo "castore: part $name: $*" >&2
    local status=0
    "$@" || status=$?
    if [ "$status" -eq 0 ]; then
        _part_lines+=("$name: passed")
    else
        _part_lines+=("$name: failed (exit $status)")
        _part_failed=1
    fi
}

skip_part() {
    _part_lines+=("$1: not run: $2")
}

fail_part() {
    _part_lines+=("$1: failed: $2")
    _part_failed=1
}

report_parts() {
    local line
    echo "castore: test parts:"
    for line in "${_part_lines[@]}"; do
        echo "  $line"
    done
    return "$_part_failed"
}
