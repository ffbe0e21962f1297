#!/usr/bin/env bash
# Where the CPU of `netspectra analyze` goes: one run under `perf record`
# on the benchmark capture, then the share of all samples per thread, per
# thread in the kernel, and per thread and function.
# Usage: scripts/profile-analyze.sh [PACKETS (default 5000000)] [-- ANALYZE ARGS...]
#   ANALYZE ARGS default to `--workers 2 --no-store`.
# Environment:
#   BENCH_DIR   where the capture is (default bench-data/; the file is
#               shared with scripts/bench-analyze.sh)
#   BIN         a built `netspectra` (default: `cargo build --release`)
#   FREQ        samples per second per CPU (default 1999)
#   TOP         functions listed (default 25)
#
# Threads: the main thread reads, decodes and routes, and is worker 0 (it
# carries the binary's name); ns-worker-N are the other workers,
# ns-collector joins windows, ns-rollup and ns-totals are the jobs after
# the last packet. The capture is read once before the run, so it comes
# from the page cache. Needs perf (Debian: linux-perf) and permission to
# profile (root, or kernel.perf_event_paranoid <= 1). One run is a
# sample: shares move by a point or two between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
packets=5000000
if [ $# -gt 0 ] && [ "$1" != -- ]; then packets=$1; shift; fi
[ $# -eq 0 ] || shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--workers 2 --no-store)
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }
bench_bin
bench_capture "$packets" "$BIN" profile
cat "$file" > /dev/null
perf record -q -F "${FREQ:-1999}" -o "$tmp/perf.data" -- \
    "$BIN" analyze "$file" --format json --top 1 "${args[@]}" > /dev/null 2> "$tmp/stderr" \
    || { cat "$tmp/stderr" >&2; exit 1; }
report() { perf report -i "$tmp/perf.data" --no-children --stdio --percent-limit 0.01 "$@" 2>/dev/null | grep -v '^#' | grep -v '^$'; }
echo "capture: $file ($packets packets), analyze ${args[*]}, $(machine)"
echo "share of all samples, per thread:"
report --sort comm | awk '{printf "  %7s  %s\n", $1, $2}'
echo
echo "in the kernel, per thread:"
report --sort comm,dso | awk '$3 == "[kernel.kallsyms]" {printf "  %7s  %s\n", $1, $2}'
echo
echo "per thread and function (top ${TOP:-25}):"
# awk, not head: it reads to the end, so perf report gets no SIGPIPE
# (which pipefail would turn into the script's failure).
report --sort comm,sym |
    awk -v n="${TOP:-25}" 'NR <= n {p = $1; c = $2; k = $3; $1 = $2 = $3 = ""; sub(/^ +/, ""); printf "  %7s  %-14s %s %s\n", p, c, k, $0}'
