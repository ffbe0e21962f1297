# shellcheck shell=bash
# What the benchmark scripts share (bench-analyze.sh, bench-ab.sh,
# profile-analyze.sh): sourced, not run. One place for where the capture
# lives, so that every script measures the same file.

# BIN, or else a release build of the current tree.
bench_bin() {
    if [ -z "${BIN:-}" ]; then
        cargo build --release --quiet -p netspectra-cli
        BIN=${CARGO_TARGET_DIR:-target}/release/netspectra
    fi
}

# bench_capture PACKETS GEN_BIN NAME: sets `dir` (BENCH_DIR, default
# bench-data/), `file` (the `netspectra gen` capture of PACKETS packets in
# it, written by GEN_BIN the first time only) and `tmp` (a scratch folder
# named after NAME, removed when the script exits).
bench_capture() {
    dir=${BENCH_DIR:-bench-data}
    mkdir -p "$dir"
    file=$dir/bench-$1.pcap
    [ -f "$file" ] || "$2" gen "$file" --packets "$1" >/dev/null
    tmp=$(mktemp -d "$dir/$3.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
}

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# "N cores, CPU model", for the header of a script's output.
machine() { echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"; }
