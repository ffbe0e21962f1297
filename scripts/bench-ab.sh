#!/usr/bin/env bash
# Compares builds (or configurations) of `netspectra analyze` on one
# capture with paired, alternating runs: the tool for telling whether a
# change of a few per cent is real on a noisy machine.
# Usage: scripts/bench-ab.sh ROUNDS BIN_A BIN_B [BIN...] [-- ANALYZE ARGS...]
#   Each round runs every build once on the same capture, in turn, the
#   order reversed every other round so that neither build always runs
#   first. ANALYZE ARGS default to `--workers 2 --no-store`. To compare
#   configurations instead of builds, give the same build twice and put
#   `{}` in the arguments: it is replaced, run by run, by the matching
#   word of CONFIGS (e.g. CONFIGS="a.yaml b.yaml" ... -- --config {}).
# Environment:
#   BENCH_DIR   where the capture is (default bench-data/)
#   PACKETS     packets of the generated capture (default 5000000; the
#               file is shared with scripts/bench-analyze.sh)
#   CONFIGS     one word per build, replacing `{}` in the arguments
#
# Prints, for each build, the median wall time, CPU time (user + system of
# all threads) and minor page faults, and the median over rounds of its
# time divided by the first build's in the same round. Per-round ratios
# cancel the machine's slow and fast phases, which on the development VMs
# move single runs by up to 2×: over 11–21 rounds they resolve about ±3 %.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2; }
[ $# -ge 3 ] || usage
rounds=$1; shift
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$1"); shift; done
[ $# -eq 0 ] || shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--workers 2 --no-store)
[ ${#bins[@]} -ge 2 ] || usage
read -r -a configs <<< "${CONFIGS:-}"
if [ ${#configs[@]} -gt 0 ] && [ ${#configs[@]} -ne ${#bins[@]} ]; then
    echo "CONFIGS has ${#configs[@]} words for ${#bins[@]} builds" >&2; exit 2
fi
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
time_bin=/usr/bin/time
[ -x "$time_bin" ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
packets=${PACKETS:-5000000}
bench_capture "$packets" "${bins[0]}" bench-ab

# One run of build $1: appends "seconds cpu_seconds minor_faults" to the
# file $tmp/$1. The capture is read first, untimed, so that every run
# finds it in the page cache (see scripts/bench-analyze.sh, `warm`).
run() {
    local i=$1 a t0 t1 used
    local -a call=()
    for a in "${args[@]}"; do call+=("${a//\{\}/${configs[$i]:-}}"); done
    cat "$file" > /dev/null
    t0=$(date +%s%N)
    used=$("$time_bin" -f '%U %S %R' "${bins[$i]}" analyze "$file" --format json --top 1 "${call[@]}" 2>&1 >/dev/null | tail -1)
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))e-6 $used" | awk '{print $1 + 0, $2 + $3, $4}' >> "$tmp/$i"
}

n=${#bins[@]}
for round in $(seq "$rounds"); do
    if (( round % 2 )); then order=$(seq 0 $((n - 1))); else order=$(seq $((n - 1)) -1 0); fi
    for i in $order; do run "$i"; done
    printf 'round %d:' "$round"
    for i in $(seq 0 $((n - 1))); do tail -1 "$tmp/$i" | awk '{printf " %.3f s", $1}'; done
    echo
done

col() { awk -v c="$2" '{print $c}' "$tmp/$1" | median; }
# Median over rounds of build $1's column $2 over the first build's.
# (Rounds where the first build's figure is 0, as CPU time of a tiny
# capture can be, are left out.)
ratio() { paste "$tmp/$1" "$tmp/0" | awk -v c="$2" '$(c + 3) > 0 {print $c / $(c + 3)}' | median; }
echo
echo "capture: $file ($packets packets), $(machine)"
echo "analyze arguments: ${args[*]}; medians of $rounds rounds; ÷ A = median of the per-round ratios to the first build"
printf '| %-3s | %-40s | %9s | %9s | %8s | %8s | %8s |\n' "" build wall CPU faults "wall ÷ A" "CPU ÷ A"
printf '|-----|%s|-----------|-----------|----------|----------|----------|\n' "$(printf -- '-%.0s' {1..42})"
letters=({A..Z})
for i in $(seq 0 $((n - 1))); do
    name=${bins[$i]}${configs[$i]:+ ($(basename "${configs[$i]}"))}
    (( ${#name} <= 40 )) || name=${name: -40}
    awk -v i="${letters[$i]}" -v b="$name" -v s="$(col "$i" 1)" -v c="$(col "$i" 2)" \
        -v f="$(col "$i" 3)" -v r="$(ratio "$i" 1)" -v q="$(ratio "$i" 2)" \
        'BEGIN {printf "| %-3s | %-40s | %7.3f s | %7.3f s | %6.1f k | %7.3f× | %7.3f× |\n", i, b, s, c, f / 1000, r, q}'
done
