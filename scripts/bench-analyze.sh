#!/usr/bin/env bash
# Times `netspectra analyze` end to end on a generated capture, beside
# baselines measured in the same run.
# Usage: scripts/bench-analyze.sh [PACKETS (default 5000000)] [RUNS (default 5)]
# Environment:
#   BENCH_DIR     where the capture and stores go (default bench-data/; a
#                 5 M-packet capture takes about 2.7 GB)
#   BIN           a built `netspectra` to time (default: `cargo build
#                 --release`, then $CARGO_TARGET_DIR or target/)
#   PMACCT_RUNS   runs of each pmacct baseline (default: min(RUNS, 3));
#                 0 skips them
#   BASE_BIN      another build to compare with (e.g. the previous
#                 commit's): each round then also runs every analyze
#                 configuration with it, next to the same one with BIN
#                 (BIN first in odd rounds, BASE_BIN first in even ones),
#                 and the table gains its time ("before") and the paired
#                 ratio; BASE_BIN=BIN measures the method's own noise
#
# Every round runs every configuration once, in the same order, so the
# configurations are paired: a noisy moment hits a whole round, and the
# ratios (store / no store, 1 worker / 2 workers) are medians of the
# per-round ratios. Figures are medians over RUNS rounds; peak RSS is the
# largest of the rounds (GNU time's max RSS). CPU/packet is user + system
# time of all threads over the packets: unlike wall time it does not
# depend on how well the threads overlap, and it compares machines of
# different speed better than a rate does. The capture is written once;
# every timed run reads it from the page cache (see `warm` below).
#
# Baselines, in every round:
#   cat          `cat FILE > /dev/null`: reading the file, nothing else.
#   pmacct       pmacctd (Debian's pmacct) reading the same file with the
#                memory plugin, aggregating per source (`src_host`) and per
#                5-tuple; skipped, and said so, when pmacctd is missing.
#
# "workers" are threads: `analyze` reads, decodes and routes in worker 0
# (the reader counts as a worker), so "1 worker" is one thread doing
# everything and "2 workers" two threads sharing the work. Builds before
# that change (a BASE_BIN older than it) ran the reader as one more
# thread beside the workers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
packets=${1:-5000000}
runs=${2:-5}
bench_bin
bin=$BIN
pmacct_runs=${PMACCT_RUNS:-$(( runs < 3 ? runs : 3 ))}
time_bin=/usr/bin/time
[ -x "$time_bin" ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
bench_capture "$packets" "$bin" bench-analyze
echo 'aggregator: {types: [exact]}' > "$dir/exact-only.yaml"
# Many short windows, as a live run's: each window's tables start empty.
echo 'aggregator: {snapshot_interval: 100ms}' > "$dir/short-windows.yaml"
# Reads the capture into the page cache, untimed, before every timed run:
# a kernel that reclaims idle page cache (DAMON's proactive `pageout`, which
# the development VMs run) would otherwise make runs read from disk.
warm() { cat "$file" > /dev/null; }

have_pmacct=0
if [ "$pmacct_runs" -gt 0 ]; then
    if command -v pmacctd >/dev/null; then
        have_pmacct=1
        # pmacctd sleeps before reading a savefile and before exiting: that
        # fixed delay is measured on a 1 000-packet file and reported.
        "$bin" gen "$tmp/idle.pcap" --packets 1000 >/dev/null
        for agg in src_host "src_host,dst_host,src_port,dst_port,proto" idle; do
            case $agg in src_host) name=src ;; idle) name=idle; agg=src_host ;; *) name=flow ;; esac
            input=$file; [ "$name" = idle ] && input=$tmp/idle.pcap
            cat > "$tmp/pmacct-$name.conf" <<CONF
daemonize: false
pcap_savefile: $input
pcap_savefile_wait: false
plugins: memory
aggregate: $agg
imt_path: $tmp/pmacct-$name.pipe
imt_mem_pools_number: 0
plugin_buffer_size: 102400
plugin_pipe_size: 10240000
logfile: $tmp/pmacct-$name.log
CONF
        done
    else
        echo "pmacct baseline skipped: pmacctd not found (apt-get install pmacct)"
    fi
fi

# One measurement: label, then the command; appends "seconds cpu_seconds
# rss_kb minor_faults" to $tmp/<label>.
measure() {
    local label=$1; shift
    local t0 t1 usage
    t0=$(date +%s%N)
    usage=$("$time_bin" -f '%U %S %M %R' "$@" 2>&1 >/dev/null | tail -1)
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))e-6 $usage" | awk '{print $1, $2 + $3, $4, $5}' >> "$tmp/$label"
}
base=${BASE_BIN:-}
db=$tmp/store.db
analyze() { # label, then analyze arguments
    local label=$1; shift
    local i b suffix builds=("$bin") suffixes=("")
    # The two builds take turns going first: in runs with BASE_BIN = BIN,
    # the 1-worker run was 4–7 % slower when it came right after a
    # 2-worker one than when it came after itself. Labelled by position,
    # not by path: BASE_BIN may be BIN itself (a noise check).
    if [ -n "$base" ]; then
        if (( round % 2 )); then builds=("$bin" "$base") suffixes=("" .base)
        else builds=("$base" "$bin") suffixes=(.base ""); fi
    fi
    for i in "${!builds[@]}"; do
        b=${builds[$i]} suffix=${suffixes[$i]}
        rm -f "$db" "$db-wal" "$db-shm"
        warm
        measure "$label$suffix" "$b" analyze "$file" --format json --top 1 "$@"
        if [ "$label" = store ]; then
            for f in "$db" "$db-wal"; do [ ! -f "$f" ] || stat -c %s "$f"; done |
                awk '{s += $1} END {print s}' >> "$tmp/store-size$suffix"
        fi
    done
}

for round in $(seq "$runs"); do
    warm
    measure cat sh -c "cat '$file' > /dev/null"
    analyze store --workers 2 --store "sqlite:$db"
    analyze nostore2 --workers 2 --no-store
    analyze nostore1 --workers 1 --no-store
    analyze exact2 --workers 2 --no-store --config "$dir/exact-only.yaml"
    analyze exact1 --workers 1 --no-store --config "$dir/exact-only.yaml"
    analyze short2 --workers 2 --no-store --config "$dir/short-windows.yaml"
    if [ "$have_pmacct" = 1 ] && [ "$round" -le "$pmacct_runs" ]; then
        for name in src flow idle; do
            warm
            measure "pmacct-$name" pmacctd -f "$tmp/pmacct-$name.conf"
        done
    fi
done

secs() { awk '{print $1 + 0}' "$tmp/$1" | median; }
cpu() { awk '{print $2}' "$tmp/$1" | median; }
rss() { awk '{print $3}' "$tmp/$1" | sort -n | tail -1; }
# Median over rounds of (a's time / b's time) in the same round, over the
# rounds that ran both (pmacct runs only in the first $pmacct_runs).
ratio() { paste "$tmp/$1" "$tmp/$2" | awk 'NF == 8 {print ($1 + 0) / ($5 + 0)}' | median; }
# The smallest and largest of those per-round ratios: how far one round
# can move them, which says how much the median of a few rounds can.
spread() { paste "$tmp/$1" "$tmp/$2" | awk 'NF == 8 {print ($1 + 0) / ($5 + 0)}' | sort -g |
    awk 'NR == 1 {a = $1} {b = $1} END {printf "%.2f–%.2f×", a, b}'; }
# The same for CPU time.
cpu_ratio() { paste "$tmp/$1" "$tmp/$2" | awk 'NF == 8 {print $2 / $6}' | median | awk '{printf "%.2f×", $1}'; }
# Median minor page faults (fresh memory touched, mapped file pages) in
# thousands: unlike time, nearly the same in every run.
faults() { awk '{print $4}' "$tmp/$1" | median | awk '{printf "%.1f k", $1 / 1000}'; }

echo "capture: $file ($packets packets, $(du -hL "$file" | cut -f1)), $(machine)"
echo "medians of $runs paired rounds (pmacct: $pmacct_runs); ×cat = time / the same round's cat"
echo
if [ -n "$base" ]; then
    printf '| %-58s | %9s | %10s | %10s | %7s | %9s | %9s | %8s |\n' run "wall time" packets/s CPU/packet "× cat" "peak RSS" before "÷ before"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" ----------- ------------ ------------ --------- ----------- ----------- ----------
else
    printf '| %-58s | %9s | %10s | %10s | %7s | %9s |\n' run "wall time" packets/s CPU/packet "× cat" "peak RSS"
    printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" ----------- ------------ ------------ --------- -----------
fi
row() { # label file
    local s r extra=""
    s=$(secs "$2"); r=$(rss "$2")
    if [ -n "$base" ] && [ -f "$tmp/$2.base" ]; then
        extra=$(awk -v b="$(secs "$2.base")" -v q="$(ratio "$2" "$2.base")" 'BEGIN {printf " %7.3f s | %7.2f× |", b, q}')
    elif [ -n "$base" ]; then
        extra="           |          |"
    fi
    awk -v l="$1" -v s="$s" -v p="$packets" -v u="$(cpu "$2")" -v r="$r" -v c="$(ratio "$2" cat)" -v x="$extra" \
        'BEGIN {printf "| %-58s | %7.3f s | %5.2f Mpps | %7.0f ns | %6.1f× | %6.0f MB |%s\n", l, s, p / s / 1e6, u / p * 1e9, c, r / 1024, x}'
}
row "baseline: cat FILE > /dev/null" cat
if [ "$have_pmacct" = 1 ]; then
    row "baseline: pmacctd, per source (src_host)" pmacct-src
    row "baseline: pmacctd, per 5-tuple" pmacct-flow
fi
row "default tasks, 2 workers, SQLite store (the default)" store
row "default tasks, 2 workers, --no-store" nostore2
row "default tasks, 1 worker, --no-store" nostore1
row "exact tasks only, 2 workers, --no-store" exact2
row "exact tasks only, 1 worker, --no-store" exact1
row "default tasks, 2 workers, --no-store, 100 ms windows" short2
echo
if [ "$have_pmacct" = 1 ]; then
    idle=$(secs pmacct-idle)
    awk -v i="$idle" -v a="$(secs pmacct-src)" -v b="$(secs pmacct-flow)" -v p="$packets" \
        'BEGIN {printf "pmacctd: %.2f s of each run is its fixed start/exit sleep (a 1 000-packet file); without it %.2f Mpps per source, %.2f Mpps per 5-tuple\n", i, p / (a - i) / 1e6, p / (b - i) / 1e6}'
fi
size=$(median < "$tmp/store-size")
awk -v r="$(ratio store nostore2)" -v w="$(ratio nostore1 nostore2)" -v e="$(ratio exact1 exact2)" -v z="$size" \
    -v rs="$(spread store nostore2)" -v ws="$(spread nostore1 nostore2)" \
    'BEGIN {
        printf "store cost: default store / --no-store (2 workers) = %.2f× (paired median; rounds %s)\n", r, rs
        printf "2 workers over 1 (default tasks) = %.2f× (rounds %s); exact tasks only = %.2f×\n", w, ws, e
        printf "store file after one run: %.1f MB (with its WAL, if one is left)\n", z / 1e6
    }'
if [ -n "$base" ]; then
    awk -v r="$(ratio store.base nostore2.base)" -v w="$(ratio nostore1.base nostore2.base)" -v z="$(median < "$tmp/store-size.base")" \
        -v rs="$(spread store.base nostore2.base)" -v ws="$(spread nostore1.base nostore2.base)" \
        'BEGIN {printf "before (BASE_BIN): store / --no-store = %.2f× (rounds %s), 2 workers over 1 = %.2f× (rounds %s), store file %.1f MB\n", r, rs, w, ws, z / 1e6}'
    printf 'CPU time ÷ before (paired medians): store %s, --no-store %s with 2 workers and %s with 1, exact only %s and %s\n' \
        "$(cpu_ratio store store.base)" "$(cpu_ratio nostore2 nostore2.base)" "$(cpu_ratio nostore1 nostore1.base)" \
        "$(cpu_ratio exact2 exact2.base)" "$(cpu_ratio exact1 exact1.base)"
fi
printf 'minor page faults (medians): store %s, --no-store %s with 2 workers and %s with 1, %s with 100 ms windows\n' \
    "$(faults store)" "$(faults nostore2)" "$(faults nostore1)" "$(faults short2)"
if [ -n "$base" ]; then
    printf 'before: store %s, --no-store %s, %s and %s; peak RSS %.0f, %.0f and %.0f MB\n' \
        "$(faults store.base)" "$(faults nostore2.base)" "$(faults nostore1.base)" "$(faults short2.base)" \
        "$(($(rss store.base) / 1024))" "$(($(rss nostore2.base) / 1024))" "$(($(rss nostore1.base) / 1024))"
fi
