#!/usr/bin/env bash
# Query latency and load of the query API on a store with more than a
# million rows, on SQLite and (when clickhouse-server is installed) on
# ClickHouse, measured in the same run.
# Usage: scripts/bench-api.sh [PACKETS (default 2000000)] [RUNS (default 3)]
# Environment: BENCH_DIR (default bench-data/), BIN (a built netspectra;
# default `cargo build --release`), STORES (default "sqlite clickhouse";
# ClickHouse is skipped, and said so, without clickhouse-server), LOAD=1
# adds the wrk load scenarios below (needs wrk), DURATION (seconds per wrk
# run, default 10).
#
# The store: `netspectra gen` writes PACKETS frames, which `netspectra
# analyze` stores with 1 s windows (`aggregator.period: 1s`): with the
# default tasks, 2 M packets give ~1.8 M exact rows, 1.05 M of them for
# `per_flow` (the 5-tuple), in ~20 windows. For ClickHouse a private
# clickhouse-server (Debian's) is started on loopback and the same capture
# is stored into it.
#
# Latency (curl, one request at a time, answer cache off): RUNS times, a
# fresh `netspectra api` is started and asked
#   top-all   the top keys over the whole history
#             (`/api/v1/top?task=per_flow&by=bytes&limit=10`)
#   top-1w    the top keys of one 1 s window (the middle one)
# "cold" is a question's first answer from a fresh server process (no
# answer cache, no SQLite page cache in the process; the OS page cache is
# warm), "warm" the median of the 5 answers after it. Figures are medians
# over the RUNS servers.
#
# Load (LOAD=1; wrk on the same 2 cores as the server), each RUNS times,
# median of Requests/sec and of the 99th latency percentile:
#   repeated  top-all from 16 connections, answer cache on: a dashboard's
#             polling. Answers come from the reader's cache, valid until
#             the store gains rows.
#   cold-all  top-all with the cache off, one connection.
#   cold-1s   top keys of one random 1 s window per request, cache off,
#             4 connections: "what happened at 12:03:07?".
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-2000000}
runs=${2:-3}
duration=${DURATION:-10}
dir=${BENCH_DIR:-bench-data}
stores=${STORES:-sqlite clickhouse}
load=${LOAD:-0}
[ "$load" = 1 ] && { command -v wrk >/dev/null || { echo "LOAD=1 needs wrk: apt-get install wrk" >&2; exit 1; }; }
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet -p netspectra-cli
    BIN=${CARGO_TARGET_DIR:-target}/release/netspectra
fi
bin=$(realpath "$BIN")
mkdir -p "$dir"
file=$(realpath "$dir")/bench-$packets.pcap
db=$(realpath "$dir")/api-$packets.db
[ -f "$file" ] || "$bin" gen "$file" --packets "$packets" >/dev/null
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
printf 'aggregator:\n  period: 1s\n' > "$tmp/cfg.yaml"
rm -f "$db" "$db-wal" "$db-shm"   # built by this binary, whatever an earlier one wrote
if [ ! -f "$db" ]; then
    "$bin" analyze --config "$tmp/cfg.yaml" --store "sqlite:$db" --top 1 "$file" >/dev/null
fi

start_clickhouse() {
    local server chp cht
    server=$(command -v clickhouse-server || echo /usr/bin/clickhouse-server)
    [ -x "$server" ] || return 1
    chp=$(free_port); cht=$(free_port)
    mkdir -p "$tmp/ch/data" "$tmp/ch/tmp"
    cat > "$tmp/ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$tmp/ch/server.log</log><errorlog>$tmp/ch/err.log</errorlog></logger>
    <http_port>$chp</http_port><tcp_port>$cht</tcp_port><listen_host>127.0.0.1</listen_host>
    <path>$tmp/ch/data/</path><tmp_path>$tmp/ch/tmp/</tmp_path>
    <users_config>$tmp/ch/users.xml</users_config>
    <default_profile>default</default_profile><default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size><timezone>UTC</timezone>
</yandex>
XML
    cat > "$tmp/ch/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
XML
    (cd "$tmp/ch" && exec "$server" --config-file="$tmp/ch/config.xml" > /dev/null 2>&1) &
    pids+=($!)
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$chp/ping" >/dev/null && break; sleep 0.1; done
    ch_store="clickhouse://127.0.0.1:$chp/bench"
    (cd "$tmp" && "$bin" analyze --config "$tmp/cfg.yaml" --store "$ch_store" --top 1 "$file" >/dev/null)
    curl -sf "http://127.0.0.1:$chp/" --data-binary "OPTIMIZE TABLE bench.exact_rows FINAL" >/dev/null || true
}

# Windows and rows, from the API itself (works whatever the physical layout).
serve() { # STORE CACHE_ENTRIES
    local port
    port=$(free_port)
    "$bin" api --store "$1" --grpc off --http "127.0.0.1:$port" --cache-entries "$2" 2> "$tmp/api.log" &
    pids+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
    done
    api="http://127.0.0.1:$port"
}
stop_api() {
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
    unset 'pids[-1]'
}
serve "sqlite:$db" 0
read -r flow_rows first_s windows < <(curl -sf "$api/api/v1/timeseries?task=per_flow&limit=0" | python3 -c '
import calendar, json, sys, time
rows = json.load(sys.stdin)["rows"]
s = [calendar.timegm(time.strptime(r["window_start"][:19], "%Y-%m-%dT%H:%M:%S")) for r in rows]
print(sum(r["keys"] for r in rows), min(s), max(s) - min(s) + 1)
')
stop_api
mid=$(( first_s + windows / 2 ))
top="/api/v1/top?task=per_flow&by=bytes&limit=10"
top1="$top&from=${mid}000000000&to=$(( mid + 1 ))000000000"
echo "capture: $packets packets; store: $flow_rows per_flow rows in $windows windows of 1 s; $(nproc) cores"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { curl -sf -o /dev/null -w '%{time_total}\n' "$1" | awk '{printf "%.1f\n", $1 * 1000}'; }
# Reads a store's files into the OS page cache, untimed, so "cold" stays
# what it says: the process is fresh, the page cache warm. Without it a
# kernel that reclaims idle page cache (DAMON's proactive `pageout`, which
# the development VMs run) makes some servers read from disk.
warm_store() { # STORE
    case $1 in
        sqlite:*) cat "$db"* > /dev/null ;;
        *) find "$tmp/ch/data" -type f -exec cat {} + > /dev/null ;;
    esac
}
latency() { # STORE NAME
    local cold_all=() warm_all=() cold_1=() warm_1=()
    for _ in $(seq "$runs"); do
        warm_store "$1"
        serve "$1" 0
        cold_all+=("$(ms "$api$top")")
        warm_all+=("$(for _ in 1 2 3 4 5; do ms "$api$top"; done | median)")
        stop_api
        warm_store "$1"
        serve "$1" 0
        cold_1+=("$(ms "$api$top1")")
        warm_1+=("$(for _ in 1 2 3 4 5; do ms "$api$top1"; done | median)")
        stop_api
    done
    printf '| %-10s | %8s ms | %8s ms | %8s ms | %8s ms |\n' "$2" \
        "$(printf '%s\n' "${cold_all[@]}" | median)" "$(printf '%s\n' "${warm_all[@]}" | median)" \
        "$(printf '%s\n' "${cold_1[@]}" | median)" "$(printf '%s\n' "${warm_1[@]}" | median)"
}
bench() { # NAME CONNECTIONS WRK-ARGS...
    local name=$1 conns=$2; shift 2
    local rps=() p99=()
    for _ in $(seq "$runs"); do
        wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${duration}s" --timeout 30s --latency "$@" > "$tmp/wrk.txt"
        grep -q "Non-2xx" "$tmp/wrk.txt" && { cat "$tmp/wrk.txt"; echo "non-2xx answers" >&2; exit 1; }
        rps+=("$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")")
        p99+=("$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$tmp/wrk.txt")")
    done
    printf '%-10s %-10s %3s conns  %10s req/s  p99 %9s ms   (runs: %s req/s)\n' "$store_name" "$name" "$conns" \
        "$(printf '%s\n' "${rps[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)" "${rps[*]}"
}
load_scenarios() { # STORE
    cat > "$tmp/window.lua" <<LUA
math.randomseed(42)
request = function()
  local s = $first_s + math.random(0, $windows - 1)
  return wrk.format("GET", "/api/v1/top?task=per_flow&by=bytes&limit=10&from=" .. s .. "000000000&to=" .. (s + 1) .. "000000000")
end
LUA
    serve "$1" 256
    curl -sf "$api$top" >/dev/null   # fill the cache once
    bench repeated 16 "$api$top"
    stop_api
    serve "$1" 0
    bench cold-all 1 "$api$top"
    bench cold-1s 4 -s "$tmp/window.lua" "$api"
    stop_api
}

targets=()
for s in $stores; do
    case $s in
        sqlite) targets+=("sqlite:$db|SQLite") ;;
        clickhouse)
            if start_clickhouse; then targets+=("$ch_store|ClickHouse")
            else echo "ClickHouse skipped: clickhouse-server not found (apt-get install clickhouse-server)"; fi ;;
    esac
done
echo "latency, answer cache off, medians of $runs fresh servers (cold: first answer; warm: median of the next 5)"
echo
printf '| %-10s | %11s | %11s | %11s | %11s |\n' store "top-all cold" "top-all warm" "top-1w cold" "top-1w warm"
echo "|------------|-------------|-------------|-------------|-------------|"
for t in "${targets[@]}"; do latency "${t%%|*}" "${t#*|}"; done
if [ "$load" = 1 ]; then
    echo
    for t in "${targets[@]}"; do store_name=${t#*|}; load_scenarios "${t%%|*}"; done
fi
