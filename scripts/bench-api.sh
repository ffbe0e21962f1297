#!/usr/bin/env bash
# Load benchmark of the HTTP query API (wrk) on an embedded store with more
# than a million rows.
# Usage: scripts/bench-api.sh [PACKETS (default 2000000)] [RUNS (default 3)]
# Environment: DURATION (seconds per wrk run, default 10); STORE=clickhouse
# loads the same rows into a private clickhouse-server (Debian's, started
# here on loopback) and serves from it instead of SQLite.
#
# The store: `netspectra gen` writes PACKETS frames (bench-data/), which
# `netspectra analyze` stores with 1 s windows (`aggregator.period: 1s`):
# with the default tasks, 2 M packets give ~1.8 M exact rows, 1.05 M of
# them for `per_flow` (the 5-tuple). `netspectra api` serves it over HTTP
# only, on loopback; wrk runs on the same 2 cores, so the figures are for
# client and server sharing the machine. Scenarios, each RUNS times
# (median of Requests/sec and of the 99th latency percentile reported):
#
#   repeated  The same top-keys question over the whole history
#             (`/api/v1/top?task=per_flow&by=bytes&limit=10`) from 16
#             connections: a dashboard's polling. Answers come from the
#             reader's cache, valid until the store gains rows.
#   cold-all  The same question with the cache off (`--cache-entries 0`),
#             one connection: every request groups the 1.05 M rows again.
#   cold-1s   Top keys of one random 1 s window per request (`from`/`to`),
#             cache off, 4 connections: "what happened at 12:03:07?".
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-2000000}
runs=${2:-3}
duration=${DURATION:-10}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet -p netspectra-cli
bin=$PWD/target/release/netspectra
mkdir -p bench-data
file=bench-data/bench-$packets.pcap
db=bench-data/api-$packets.db
[ -f "$file" ] || "$bin" gen "$file" --packets "$packets" >/dev/null
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
printf 'aggregator:\n  period: 1s\n' > "$tmp/cfg.yaml"
if [ ! -f "$db" ]; then
    "$bin" analyze --config "$tmp/cfg.yaml" --store "sqlite:$db" --top 1 "$file" >/dev/null
fi
store="sqlite:$db"
if [ "${STORE:-sqlite}" = clickhouse ]; then
    server=$(command -v clickhouse-server || echo /usr/bin/clickhouse-server)
    [ -x "$server" ] || { echo "needs clickhouse-server: apt-get install clickhouse-server" >&2; exit 1; }
    chp=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    cht=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
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
    store="clickhouse://127.0.0.1:$chp/bench"
    (cd "$tmp" && "$bin" analyze --config "$tmp/cfg.yaml" --store "$store" --top 1 "$OLDPWD/$file" >/dev/null)
    curl -sf "http://127.0.0.1:$chp/" --data-binary "OPTIMIZE TABLE bench.exact_rows FINAL" >/dev/null || true
fi
read -r rows flow_rows first_s windows < <(python3 - "$db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute("SELECT count(*) FROM exact_rows").fetchone()[0]
flow = c.execute("SELECT count(*) FROM exact_rows WHERE task = 'per_flow'").fetchone()[0]
lo, hi = c.execute("SELECT min(window_start), max(window_start) FROM exact_rows").fetchone()
print(rows, flow, lo // 10**9, (hi - lo) // 10**9 + 1)
PY
)
echo "store: $store — $rows exact rows ($flow_rows per_flow), $windows windows of 1 s"

serve() { # CACHE_ENTRIES
    local port
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    "$bin" api --store "$store" --grpc off --http "127.0.0.1:$port" --cache-entries "$1" 2> "$tmp/api.log" &
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

cat > "$tmp/window.lua" <<LUA
math.randomseed(42)
request = function()
  local s = $first_s + math.random(0, $windows - 1)
  return wrk.format("GET", "/api/v1/top?task=per_flow&by=bytes&limit=10&from=" .. s .. "000000000&to=" .. (s + 1) .. "000000000")
end
LUA

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bench() { # NAME CONNECTIONS WRK-ARGS...
    local name=$1 conns=$2; shift 2
    local rps=() p99=()
    for _ in $(seq "$runs"); do
        wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${duration}s" --timeout 30s --latency "$@" > "$tmp/wrk.txt"
        grep -q "Non-2xx" "$tmp/wrk.txt" && { cat "$tmp/wrk.txt"; echo "non-2xx answers" >&2; exit 1; }
        rps+=("$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")")
        p99+=("$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$tmp/wrk.txt")")
    done
    printf '%-10s %3s conns  %10s req/s  p99 %9s ms   (runs: %s req/s)\n' "$name" "$conns" \
        "$(printf '%s\n' "${rps[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)" "${rps[*]}"
}

top="/api/v1/top?task=per_flow&by=bytes&limit=10"
serve 256
curl -sf "$api$top" >/dev/null   # fill the cache once
bench repeated 16 "$api$top"
stop_api
serve 0
bench cold-all 1 "$api$top"
bench cold-1s 4 -s "$tmp/window.lua" "$api"
stop_api
