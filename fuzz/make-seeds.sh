#!/usr/bin/env bash
# Rebuilds the seed corpus in fuzz/seeds/<target>/ from the generator
# (`netspectra gen`), the repository's capture (data/demo.pcapng, its first
# blocks) and hand-built messages (model_stream's streams are written by hand
# in seeds/model_stream and left as they are). Seeds are committed; run this only to
# change them. Usage: fuzz/make-seeds.sh PATH/TO/netspectra
set -euo pipefail
cd "$(dirname "$0")"
bin=${1:?usage: fuzz/make-seeds.sh PATH/TO/netspectra}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in pcap_reader pcapng_reader frame_decoder wire_batch config_yaml api_query sqlite_open model_stream; do
    mkdir -p "seeds/$t"
done
"$bin" gen "$tmp/a.pcap" --packets 12 --seed 1 >/dev/null
"$bin" gen "$tmp/b.pcapng" --packets 12 --seed 2 --format pcapng >/dev/null
"$bin" analyze "$tmp/a.pcap" --store "sqlite:$tmp/store.db" >/dev/null
exec python3 - "$tmp" <<'PY'
import os, struct, sys, sqlite3, shutil
tmp = sys.argv[1]
def put(target, name, data):
    with open(os.path.join("seeds", target, name), "wb") as f:
        f.write(data)

pcap = open(os.path.join(tmp, "a.pcap"), "rb").read()
put("pcap_reader", "gen-12.pcap", pcap)
# Big-endian, nanosecond variant of the same records.
hdr = struct.unpack("<IHHiIII", pcap[:24])
be = struct.pack(">IHHiIII", 0xA1B23C4D, *hdr[1:])
off, recs = 24, []
while off + 16 <= len(pcap):
    sec, usec, cap, orig = struct.unpack("<IIII", pcap[off:off + 16])
    frame = pcap[off + 16:off + 16 + cap]
    recs.append(frame)
    be += struct.pack(">IIII", sec, usec * 1000, cap, orig) + frame
    off += 16 + cap
put("pcap_reader", "gen-12-be-ns.pcap", be)
put("pcap_reader", "truncated.pcap", pcap[:len(pcap) - 7])

ng = open(os.path.join(tmp, "b.pcapng"), "rb").read()
put("pcapng_reader", "gen-12.pcapng", ng)
put("pcapng_reader", "truncated.pcapng", ng[:len(ng) - 5])
# The repository's capture: its first 8 KiB (section, interfaces, packets).
demo = open(os.path.join("..", "data", "demo.pcapng"), "rb").read()
blocks, off = [], 0
while off + 12 <= len(demo) and off < 8192:
    ln = struct.unpack("<I", demo[off + 4:off + 8])[0]
    blocks.append(demo[off:off + ln])
    off += ln
put("pcapng_reader", "demo-head.pcapng", b"".join(blocks))
# Odd block lengths Wireshark reads (#16 finding 6).
def odd(ty, body, padded):
    ln = 12 + len(body)
    out = struct.pack("<II", ty, ln) + body
    if padded:
        out += b"\0" * (-len(out) % 4)
    return out + struct.pack("<I", ln)
def epb(data):
    return struct.pack("<IIIII", 0, 0, 7, len(data), len(data)) + data
shb_idb = blocks[0] + b"".join(b for b in blocks[1:] if struct.unpack("<I", b[:4])[0] == 1)
put("pcapng_reader", "odd-lengths.pcapng",
    shb_idb + odd(6, epb(recs[0][:61] if len(recs[0]) >= 61 else recs[0]), True)
    + odd(0x0BAD, b"\1\2", False) + odd(6, epb(recs[1]), False))

for i, frame in enumerate(recs[:6]):
    put("frame_decoder", f"eth-{i}", bytes([0]) + frame)
    # The same IP packet as raw IP (link index 3) and in an SLL header.
    put("frame_decoder", f"raw-{i}", bytes([3]) + frame[14:])
put("frame_decoder", "vlan", bytes([0]) + recs[0][:12] + b"\x81\x00\x00\x05" + recs[0][12:])

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
def key(f, wt): return varint(f << 3 | wt)
def vf(f, v): return key(f, 0) + varint(v)
def lf(f, b): return key(f, 2) + varint(len(b)) + b
def packet(src, dst, sp, dp, proto, ext=True):
    ts = vf(1, 1700000000) + vf(2, 123456789)
    ft = lf(1, src) + lf(2, dst) + vf(3, sp) + vf(4, dp) + vf(5, proto)
    body = lf(1, ts) + lf(2, ft) + vf(3, 1514)
    if ext:
        body += vf(16, 96) + vf(17, 0x12) + vf(18, 7) + vf(19, 4 if len(src) == 4 else 6)
    return body
v4 = packet(bytes([10, 0, 0, 1]), bytes([192, 168, 1, 2]), 40000, 443, 6)
v6 = packet(bytes(range(16)), bytes(range(16, 32)), 53, 5353, 17)
go = packet(bytes([10, 0, 0, 9]), bytes([10, 0, 0, 10]), 1, 2, 17, ext=False)
put("wire_batch", "batch-3", lf(4, v4) + lf(4, v6) + lf(4, go) + lf(1, b"probe-1") + vf(2, 3) + vf(3, 1000))
put("wire_batch", "packet-v4", v4)
put("wire_batch", "packetinfo-go2netspectra", go)
put("wire_batch", "empty-batch", lf(1, b"p") + vf(2, 0) + vf(3, 1))

shutil.copy(os.path.join("..", "crates", "model", "tests", "data", "go2netspectra-config.yaml"),
            os.path.join("seeds", "config_yaml", "go2netspectra-config.yaml"))
put("config_yaml", "tasks.yaml", b"""aggregator:
  period: 10s
  snapshot_interval: 1s
  num_workers: ${WORKERS}
  tasks:
    - name: per_src
      type: exact
      key: [SrcIP, DstPort]
    - name: hh
      type: sketch
      algorithm: countmin
      key: [SrcNet/24]
store:
  url: sqlite:x.db
""")
put("config_yaml", "empty.yaml", b"")

ops = ["tasks", "runs", "aggregate", "top", "trace", "heavy-hitters", "super-spreaders", "timeseries", "health"]
for name, op, q in [
    ("top", "top", "task=per_src_ip&limit=10&by=bytes&since=1h&src_ip=10.0.0.0/8"),
    ("trace", "trace", "task=t&src_ip=10.0.0.1&dst_ip=2001:db8::1&src_port=1&dst_port=2&protocol=6&from=2024-01-01T00:00:00Z&to=1704067300000000000"),
    ("hh", "heavy-hitters", "task_name=cm&type=1&limit=0"),
    ("runs", "runs", "limit=5"),
    ("bad", "aggregate", "from=x&since=1h&%zz"),
]:
    put("api_query", name, bytes([ops.index(op)]) + q.encode())

store = os.path.join(tmp, "store.db")
c = sqlite3.connect(store)
c.execute("PRAGMA journal_mode = DELETE")
c.execute("VACUUM")
c.close()
data = open(store, "rb").read()
put("sqlite_open", "store-v3.db", data)
# The crafted negative user_version of #16 finding 5 (header offset 60).
put("sqlite_open", "negative-user-version.db", data[:60] + struct.pack(">i", -1) + data[64:])
put("sqlite_open", "newer-user-version.db", data[:60] + struct.pack(">i", 99) + data[64:])
put("sqlite_open", "not-sqlite", b"SQLite format 2\0" + b"\xff" * 84)
PY
