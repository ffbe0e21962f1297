#!/usr/bin/env bash
# Tests scripts/cluster.sh: `up` brings the distributed stack up on loopback
# (nats-server with JetStream, clickhouse-server, two engines with elastic
# membership, api, alert and the ai gateway), a probe replay of a
# generated capture lands in the store with exactly the totals `analyze`
# computes offline, the api answers (and refuses a request without its
# token), the ai gateway answers Go2NetSpectra's AIService over gRPC naming
# the capture's top source (and refuses a call without the token), both
# engines share the 16 shards, and `down` leaves no process behind —
# checked even when a step fails.
#
# Usage: scripts/test-cluster.sh   (NETSPECTRA_BIN: the binary, default the
# debug build in CARGO_TARGET_DIR or target/; scripts/test.sh runs it).
# With MEASURE_RSS=1 it prints every process's peak RSS (VmHWM) before
# `down`: scripts/measure-rss.sh uses that to size the deployments.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-cluster: FAILED: $*" >&2; exit 1; }
log() { echo "test-cluster: $*" >&2; }

export NETSPECTRA_BIN="${NETSPECTRA_BIN:-${CARGO_TARGET_DIR:-target}/debug/netspectra}"
[ -x "$NETSPECTRA_BIN" ] || fail "no binary at $NETSPECTRA_BIN (cargo build first, or set NETSPECTRA_BIN)"
bin=$NETSPECTRA_BIN
packets="${PACKETS:-20000}"

work=$(mktemp -d /tmp/netspectra-test-cluster.XXXXXX)
export NETSPECTRA_CLUSTER_DIR="$work/cluster"
# 20 ports from a base nothing listens on.
port_free() { ! { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; }
for _ in $(seq 1 50); do
    base=$((20000 + RANDOM % 20000))
    ok=1
    for ((p = base + 1; p <= base + 20; p++)); do port_free "$p" || { ok=0; break; }; done
    [ $ok = 1 ] && break
done
[ "$ok" = 1 ] || fail "no 20 free loopback ports found"
export NETSPECTRA_CLUSTER_PORT_BASE=$base
# Short windows, so the replay's last window closes within seconds.
export NETSPECTRA_WINDOW=2s NETSPECTRA_PERIOD=4s
# A small stream: NATS refuses one larger than its share of the free disk.
export NETSPECTRA_STREAM_MAX_BYTES=256MiB

# Whatever happens: `down`, then no process that `up` started may be left.
started_pids=()
cleanup() {
    local rc=$? pid left=""
    trap - EXIT
    scripts/cluster.sh down >/dev/null 2>&1 || rc=1
    for pid in "${started_pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            left="$left $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [ -n "$left" ]; then
        echo "test-cluster: FAILED: processes left after down:$left (killed)" >&2
        rc=1
    fi
    if [ $rc -ne 0 ]; then
        for f in "$NETSPECTRA_CLUSTER_DIR"/logs/*.log "$work"/query.log; do
            [ -f "$f" ] || continue
            echo "--- $f (last 15 lines)" >&2
            sed 's/\x1b\[[0-9;]*m//g' "$f" | tail -n 15 >&2
        done
    fi
    rm -rf "$work"
    [ $rc -eq 0 ] && echo "test-cluster: 1 passed, 0 failed" || echo "test-cluster: 0 passed, 1 failed"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A capture and what `analyze` counts in it offline, with the same config.
"$bin" gen "$work/traffic.pcap" --packets "$packets" >/dev/null 2>&1
"$bin" analyze "$work/traffic.pcap" --no-store --format json --top 1 \
    --config deploy/config/netspectra.yaml >"$work/offline.json"
want=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%s=%d/%d/%d" % (t["name"], t["packets"], t["bytes"], t["keys"]) for t in d["tasks"] if t["kind"] == "exact"))' "$work/offline.json")
# The top source by bytes, which the ai gateway's answer must name.
top_src=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(next(t for t in d["tasks"] if t["name"] == "per_src_ip")["rows"][0]["key"]["SrcIP"])' "$work/offline.json")
log "expected (offline analyze): $want; top source $top_src"

# grpc_unary PORT /pkg.Service/Method TOKEN TEXT: a unary gRPC call whose
# request and answer are one string field (number 1), over HTTP/2 with
# curl (no gRPC client needed). Prints the gRPC status, a tab, the answer.
grpc_unary() {
    python3 -c '
import struct, sys
text = sys.argv[1].encode()
n, size = len(text), b""
while True:
    size += bytes([(n & 0x7f) | (0x80 if n > 0x7f else 0)])
    n >>= 7
    if not n:
        break
msg = b"\x0a" + size + text
sys.stdout.buffer.write(b"\x00" + struct.pack(">I", len(msg)) + msg)' "$4" >"$work/grpc.req"
    local auth=()
    [ -n "$3" ] && auth=(-H "authorization: Bearer $3")
    curl -sS --http2-prior-knowledge --max-time 60 -X POST -H 'content-type: application/grpc' \
        -H 'te: trailers' "${auth[@]}" --data-binary @"$work/grpc.req" \
        -D "$work/grpc.head" -o "$work/grpc.body" "http://127.0.0.1:$1$2" || return 1
    python3 -c '
import re, sys
head = open(sys.argv[1], "rb").read().decode("latin-1")
status = re.findall(r"(?im)^grpc-status:\s*(\d+)", head)
body = open(sys.argv[2], "rb").read()
text = ""
if len(body) > 5 and body[5] == 0x0a:
    i, n, shift = 6, 0, 0
    while True:
        b = body[i]; i += 1
        n |= (b & 0x7f) << shift; shift += 7
        if b < 0x80:
            break
    text = body[i:i + n].decode()
print((status[-1] if status else "?") + "\t" + text.replace("\n", " "))' "$work/grpc.head" "$work/grpc.body"
}

log "cluster.sh up (ports $((base + 1))-$((base + 20)))"
scripts/cluster.sh up --engines 2 >"$work/env.sh"
for f in "$NETSPECTRA_CLUSTER_DIR"/pids/*; do started_pids+=("$(cat "$f")"); done
# shellcheck disable=SC1091
. "$work/env.sh"
[ -n "${NETSPECTRA_API_TOKEN:-}" ] || fail "cluster.sh env gave no API token"
status=$(scripts/cluster.sh status) || { echo "$status" >&2; fail "a process is down after up"; }
for role in nats clickhouse engine-0 engine-1 api; do
    grep -Eq "^$role +[0-9]+ up +200 " <<<"$status" || { echo "$status" >&2; fail "$role is not up and ready"; }
done
if "$bin" alert --help >/dev/null 2>&1; then
    grep -Eq '^alert +[0-9]+ up ' <<<"$status" || { echo "$status" >&2; fail "alert is not running"; }
fi
grep -Eq '^ai +[0-9]+ up +200 ' <<<"$status" || { echo "$status" >&2; fail "ai is not up and ready"; }
[ -n "${NETSPECTRA_AI_GRPC:-}" ] || fail "cluster.sh env gave no AI gateway address"

log "replaying $packets packets"
scripts/cluster.sh replay "$work/traffic.pcap" >/dev/null 2>"$work/replay.log" \
    || { cat "$work/replay.log" >&2; fail "the probe replay failed"; }

# The stored totals, through the API, until they equal the offline ones.
got=""
for _ in $(seq 1 120); do
    got=$("$bin" query aggregate --format json 2>>"$work/query.log" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join("%s=%d/%d/%d" % (s["task_name"], s["total_packets"], s["total_bytes"], s["flow_count"]) for s in d["summaries"]))' || true)
    # Same tasks, in any order.
    [ "$(tr ' ' '\n' <<<"$got" | sort)" = "$(tr ' ' '\n' <<<"$want" | sort)" ] && break
    sleep 0.5
done
[ "$(tr ' ' '\n' <<<"$got" | sort)" = "$(tr ' ' '\n' <<<"$want" | sort)" ] \
    || fail "stored totals never matched: got '$got', want '$want'"
log "stored through the cluster and answered by the api: $got"

# The token is required: without it the api refuses (exit 2, not 0, and
# not 1, which would mean no answer at all).
rc=0
NETSPECTRA_API_TOKEN='' "$bin" query tasks >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "a request without the token: exit $rc, want 2 (refused)"

# The ai gateway: Go2NetSpectra's AIService answers from the store (the
# offline analyst names the top source), and only with the token.
ai_port=${NETSPECTRA_AI_GRPC##*:}
answer=$(grpc_unary "$ai_port" /v1.AIService/AnalyzeTraffic "$NETSPECTRA_API_TOKEN" \
    "Alert: Total_Traffic_Spike on per_src_ip") || fail "the ai gateway did not answer"
[ "${answer%%$'\t'*}" = 0 ] || fail "AnalyzeTraffic: gRPC status ${answer%%$'\t'*}: ${answer#*$'\t'}"
grep -qF "$top_src" <<<"${answer#*$'\t'}" || fail "the ai gateway's answer does not name $top_src: ${answer#*$'\t'}"
refused=$(grpc_unary "$ai_port" /v1.AIService/AnalyzeTraffic "" "x") || fail "the ai gateway did not answer"
[ "${refused%%$'\t'*}" = 16 ] || fail "AnalyzeTraffic without the token: gRPC status ${refused%%$'\t'*}, want 16 (UNAUTHENTICATED)"
log "the ai gateway answers with the top source ($top_src) and refuses a call without the token"

# Both engines hold shards, together all 16 (elastic membership; a shard
# moves at its period's end, in packet time, so give it a few periods).
owned_shards() {
    python3 -c '
import sys, urllib.request
for line in urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode().splitlines():
    if line.startswith("netspectra_engine_owned_shards "):
        print(int(float(line.split()[1])))' "$1"
}
ports=$(sed -n 's/^engine-[0-9]* .*127\.0\.0\.1:\([0-9]*\)\/readyz$/\1/p' <<<"$status")
owned=()
for _ in $(seq 1 60); do
    owned=()
    for m in $ports; do owned+=("$(owned_shards "$m")"); done
    [ "${#owned[@]}" = 2 ] && [ "${owned[0]}" -gt 0 ] && [ "${owned[1]}" -gt 0 ] \
        && [ $((owned[0] + owned[1])) = 16 ] && break
    sleep 0.5
done
[ "${#owned[@]}" = 2 ] && [ "${owned[0]}" -gt 0 ] && [ "${owned[1]}" -gt 0 ] \
    && [ $((owned[0] + owned[1])) = 16 ] || fail "engines' owned shards: ${owned[*]} (want two shares of 16)"
log "engines own ${owned[0]} + ${owned[1]} shards"

if [ "${MEASURE_RSS:-0}" = 1 ]; then
    scripts/cluster.sh status
fi

log "cluster.sh down"
scripts/cluster.sh down 2>/dev/null
for pid in "${started_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && fail "pid $pid still runs after down"
done
if scripts/cluster.sh status >/dev/null 2>&1; then fail "status says up after down"; fi
