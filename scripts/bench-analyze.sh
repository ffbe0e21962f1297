#!/usr/bin/env bash
# Times `netspectra analyze` end to end on a generated capture.
# Usage: scripts/bench-analyze.sh [PACKETS (default 5000000)] [RUNS (default 5)]
# Prints, per configuration and worker count, the median wall time, Mpps
# and peak resident memory (GNU time's max RSS) over RUNS runs. The capture is
# written once to bench-data/ (about 550 bytes a packet) and read from the
# page cache after the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-5000000}
runs=${2:-5}
cargo build --release --quiet
bin=target/release/netspectra
mkdir -p bench-data
file=bench-data/bench-$packets.pcap
[ -f "$file" ] || "$bin" gen "$file" --packets "$packets"
cat "$file" > /dev/null   # warm the page cache
echo 'aggregator: {types: [exact]}' > bench-data/exact-only.yaml
time_bin=/usr/bin/time
[ -x "$time_bin" ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }

measure() { # label, then analyze arguments
    local label=$1; shift
    local secs=() rss=()
    for _ in $(seq "$runs"); do
        out=$("$time_bin" -f '%e %M' "$bin" analyze "$file" --format json --top 1 "$@" 2>&1 >/dev/null | tail -1)
        secs+=("${out% *}"); rss+=("${out#* }")
    done
    median_s=$(printf '%s\n' "${secs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    max_rss=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
    awk -v l="$label" -v s="$median_s" -v p="$packets" -v r="$max_rss" -v n="$runs" \
        'BEGIN {printf "%-34s %7.2f s %7.2f Mpps %7.0f MB peak RSS (median of %d)\n", l, s, p / s / 1e6, r / 1024, n}'
}

echo "capture: $file ($packets packets, $(du -hL "$file" | cut -f1)), $(nproc) cores"
for w in 1 2; do
    measure "default tasks, $w worker(s), no store" --no-store --workers "$w"
done
measure "default tasks, 2 workers, SQLite" --workers 2 --store "sqlite:bench-data/bench.db"
for w in 1 2; do
    measure "exact tasks only, $w worker(s)" --no-store --workers "$w" --config bench-data/exact-only.yaml
done
