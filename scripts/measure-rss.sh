#!/usr/bin/env bash
# Measures the peak resident set size of every process of the distributed
# topology, to size the deployments' memory requests and limits
# (deploy/k8s/*.yaml, deploy/helm/netspectra/values.yaml, compose limits).
#
# Method: scripts/test-cluster.sh with MEASURE_RSS=1 runs the stack of
# scripts/cluster.sh (nats-server, clickhouse-server, 2 engines, api, alert,
# ai) with the deploy config's default tasks (3 exact + Count-Min +
# SuperSpread), replays a generated capture of PACKETS packets through a
# probe, waits until the api answers the offline totals and the ai gateway
# has answered one question over them, then prints each process's
# VmHWM from /proc/PID/status (the kernel's peak RSS of that process, the
# figure GNU time's "Maximum resident set size" reports) before `down`.
# The probe is measured separately with GNU time (/usr/bin/time -v), as it
# is a short-lived process here.
#
# Usage: scripts/measure-rss.sh [PACKETS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-1000000}"
export NETSPECTRA_BIN="${NETSPECTRA_BIN:-${CARGO_TARGET_DIR:-target}/release/netspectra}"
[ -x "$NETSPECTRA_BIN" ] || { echo "error: no binary at $NETSPECTRA_BIN (cargo build --release, or set NETSPECTRA_BIN)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "error: GNU time is missing (apt-get install time)" >&2; exit 1; }
echo "== $NETSPECTRA_BIN, $packets packets"
PACKETS="$packets" MEASURE_RSS=1 scripts/test-cluster.sh 2> >(grep -E '^test-cluster: (expected|stored|engines|FAILED)' >&2)

# The probe alone: replay the same kind of capture into a throwaway nats-server.
work=$(mktemp -d /tmp/netspectra-measure.XXXXXX)
nats_pid=""
cleanup() { [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
nats=$(command -v nats-server || echo "$scripts_dir/nats-server")
port=$((20000 + RANDOM % 20000))
"$nats" -a 127.0.0.1 -p "$port" -js -sd "$work/js" >/dev/null 2>&1 &
nats_pid=$!
sleep 1
"$NETSPECTRA_BIN" gen "$work/t.pcap" --packets "$packets" >/dev/null 2>&1
# With the deploy config and a stream that fits the disk (NATS refuses one
# larger than its share of the free space).
NETSPECTRA_STREAM_MAX_BYTES=1GiB /usr/bin/time -v "$NETSPECTRA_BIN" probe --config deploy/config/netspectra.yaml \
    --file "$work/t.pcap" --jetstream --nats "nats://127.0.0.1:$port" >/dev/null 2>"$work/time.txt"
awk -F': ' '/Maximum resident set size/ {printf "probe (replay)   peak_rss %d MiB\n", $2 / 1024}' "$work/time.txt"
