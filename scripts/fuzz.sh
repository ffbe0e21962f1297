#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time and
# prints, per target, executions, coverage (libFuzzer's `cov` edges and
# `ft` features) and corpus size. Any crash fails the run; its input is in
# fuzz/artifacts/<target>/ (minimize it with `cargo +nightly fuzz tmin`,
# add it to fuzz/seeds/<target>/ and write a regression test).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20 s, every target)
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz when missing. The fuzz build has its own target directory
# (FUZZ_TARGET_DIR, default /var/tmp/netspectra-fuzz-target): its flags
# differ from the normal build's, sharing one would rebuild both each time.
# Seeds (committed) are in fuzz/seeds/<target>; what the fuzzer finds grows
# fuzz/corpus/<target> (not committed). Results also go to fuzz/stats.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "error: SECONDS_PER_TARGET must be a positive integer, not \`$secs\`" >&2
    exit 2
fi
log() { printf '==> %s\n' "$*" >&2; }

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: no nightly toolchain; install one with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install -q cargo-fuzz --locked
fi

target_dir=${FUZZ_TARGET_DIR:-/var/tmp/netspectra-fuzz-target}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

log "building the fuzz targets (nightly, sanitizer instrumentation)"
cargo +nightly fuzz build --target-dir "$target_dir"

stats=fuzz/stats.txt
printf '%-15s %6s %12s %9s %7s %7s %7s  %s\n' target seconds executions exec/s cov ft corpus result > "$stats"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    out="fuzz/artifacts/$t/last-run.log"
    log "fuzzing $t for $secs s"
    status=ok
    # -timeout: one input may take 10 s at most (a hang is a finding);
    # -rss_limit_mb: memory blow-ups are findings too.
    if ! cargo +nightly fuzz run --target-dir "$target_dir" "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$out" 2>&1; then
        status=CRASH
        failed+=("$t")
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$out" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$out" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' "$out" | tail -1 | grep -o '[0-9]*')
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    printf '%-15s %6s %12s %9s %7s %7s %7s  %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$corpus" "$status" >> "$stats"
    if [ "$status" != ok ]; then
        grep -E 'ERROR|panicked|Test unit written|SUMMARY' "$out" | head -20 >&2 || true
    fi
done
cat "$stats"
if [ ${#failed[@]} -gt 0 ]; then
    echo "error: crashes in: ${failed[*]} (inputs under fuzz/artifacts/<target>/)" >&2
    exit 1
fi
