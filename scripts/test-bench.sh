#!/usr/bin/env bash
# Runs the benchmark and profiling scripts end to end on a small capture,
# so that a change to `analyze` or to a script that breaks them fails CI
# rather than the next person measuring. Checks that each prints its
# table, not the figures (those mean nothing on a 20 000-packet capture).
# Usage: NETSPECTRA_BIN=path/to/netspectra scripts/test-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${NETSPECTRA_BIN:?set NETSPECTRA_BIN to a built netspectra}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# A script that dies without a word (a SIGPIPE, say) still names its line.
trap 'echo "test-bench.sh: failed at line $LINENO (exit $?)" >&2' ERR
expect() { # what, output, pattern
    grep -q -- "$3" <<< "$2" || { printf '%s: no line matching %s in:\n%s\n' "$1" "$3" "$2" >&2; exit 1; }
}

out=$(BENCH_DIR=$dir BIN=$bin BASE_BIN=$bin PMACCT_RUNS=0 scripts/bench-analyze.sh 20000 1)
expect bench-analyze.sh "$out" '^| default tasks, 2 workers, --no-store  .* [0-9.]*× |$'
expect bench-analyze.sh "$out" '^store cost: .* rounds [0-9.]*–[0-9.]*×)$'

out=$(BENCH_DIR=$dir PACKETS=20000 scripts/bench-ab.sh 2 "$bin" "$bin")
expect bench-ab.sh "$out" '^| B .* [0-9.]*× | *[0-9.]*× |$'

echo 'aggregator: {types: [exact]}' > "$dir/exact.yaml"
echo 'aggregator: {snapshot_interval: 100ms}' > "$dir/short.yaml"
out=$(BENCH_DIR=$dir PACKETS=20000 CONFIGS="$dir/exact.yaml $dir/short.yaml" \
    scripts/bench-ab.sh 2 "$bin" "$bin" -- --workers 1 --no-store --config {})
expect "bench-ab.sh with CONFIGS" "$out" '(short.yaml)'
expect "bench-ab.sh with CONFIGS" "$out" '^analyze arguments: --workers 1 --no-store --config {};'

if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    out=$(BENCH_DIR=$dir BIN=$bin scripts/profile-analyze.sh 20000)
    expect profile-analyze.sh "$out" '^ *[0-9.]*%  ns-worker-1$'
    expect profile-analyze.sh "$out" '^per thread and function'
else
    echo "profile-analyze.sh not run: perf is missing or may not profile here"
fi

# A wrong call is refused with its usage, not run.
if scripts/bench-ab.sh 2 "$bin" 2>/dev/null; then
    echo "bench-ab.sh accepted one build" >&2; exit 1
fi
echo "benchmark scripts ran on a 20 000-packet capture"
