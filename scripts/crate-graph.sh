#!/usr/bin/env bash
# Prints the workspace's crate graph (from `cargo metadata`) as the text
# block docs/ARCHITECTURE.md shows between its `crate-graph` markers;
# `--write` replaces that block in the file. A test (crates/cli/tests/it/docs.rs)
# fails when the file is stale: rerun `scripts/crate-graph.sh --write`.
set -euo pipefail
cd "$(dirname "$0")/.."
graph=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null || cargo metadata --no-deps --format-version 1)
block=$(python3 -c '
import json, sys
meta = json.load(sys.stdin)
ours = {p["name"] for p in meta["packages"]}
short = lambda n: n.removeprefix("netspectra-")
lines = []
for p in sorted(meta["packages"], key=lambda p: p["name"]):
    deps = sorted({short(d["name"]) for d in p["dependencies"]
                   if d["name"] in ours and d.get("kind") is None})
    name = short(p["name"])
    lines.append(name.ljust(9) + " → " + (", ".join(deps) if deps else "(none)"))
print("\n".join(lines))
' <<<"$graph")
if [ "${1:-}" = "--write" ]; then
    python3 - "$block" <<'PY'
import re, sys
path = "docs/ARCHITECTURE.md"
text = open(path).read()
new = "<!-- crate-graph:start -->\n```text\n" + sys.argv[1] + "\n```\n<!-- crate-graph:end -->"
text, n = re.subn(r"<!-- crate-graph:start -->.*?<!-- crate-graph:end -->", new, text, flags=re.S)
if n != 1:
    sys.exit("docs/ARCHITECTURE.md has no crate-graph markers")
open(path, "w").write(text)
PY
else
    printf '%s\n' "$block"
fi
