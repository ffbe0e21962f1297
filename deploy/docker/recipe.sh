#!/bin/sh
# Writes the dependency recipe of the workspace into DIR: the root manifest,
# Cargo.lock, every crate's Cargo.toml, and an empty stand-in for each of its
# targets (src/lib.rs, src/main.rs, build.rs, benches, tests, examples).
# The Dockerfile builds the recipe first: that layer holds every compiled
# dependency and stays cached until a manifest or the lock file changes.
# Usage (from the workspace root): deploy/docker/recipe.sh DIR
set -eu
out=${1:?usage: recipe.sh DIR}
mkdir -p "$out"
cp Cargo.toml Cargo.lock "$out/"
for manifest in crates/*/Cargo.toml; do
    dir=${manifest%/Cargo.toml}
    mkdir -p "$out/$dir"
    cp "$manifest" "$out/$dir/"
    for f in "$dir"/src/lib.rs "$dir"/src/main.rs "$dir"/build.rs "$dir"/src/bin/*.rs \
        "$dir"/benches/*.rs "$dir"/examples/*.rs "$dir"/tests/*.rs "$dir"/tests/*/main.rs; do
        [ -f "$f" ] || continue
        mkdir -p "$out/$(dirname "$f")"
        case $f in
            */src/lib.rs) : >"$out/$f" ;;
            *) echo 'fn main() {}' >"$out/$f" ;;
        esac
    done
done
