#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests
# need when it is missing, then runs formatting, lint and every test.
# Usage: scripts/test.sh            (CI calls exactly this, see .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found. Install a Rust toolchain (1.85 or newer), e.g. with rustup, then rerun." >&2
    exit 1
fi

# C compiler for the bundled SQLite.
if ! command -v cc >/dev/null 2>&1; then
    log "installing a C compiler (build-essential)"
    apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
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
