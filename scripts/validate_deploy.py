#!/usr/bin/env python3
"""Checks of deploy/ that need no container runtime and no cluster.

Run by scripts/validate-deploy.sh inside its tool virtualenv (helm-python-sdk
for Helm's own template engine and linter, PyYAML, jsonschema). Renders the
chart into OUT_DIR (for kubernetes-validate, run by the shell script) and
checks:

- the chart: helm lint (strict), render with ci/test-values.yaml, every
  `.Values.x.y` a template uses exists in values.yaml and every value is
  used, values.yaml and values.schema.json describe the same keys, the
  schema accepts the defaults and rejects wrong types, unknown keys and
  unsafe passwords, rendering without the secrets fails, scaling and
  external servers render as they should;
- the chart and deploy/k8s produce the same objects (kind and component);
- every Secret value is a string; every ServiceMonitor selects Services
  with a `metrics` port; kustomization.yaml lists every manifest;
- the config copies (k8s ConfigMap, chart file) equal deploy/config/netspectra.yaml.

Usage: validate_deploy.py REPO_ROOT OUT_DIR
"""

import copy
import json
import os
import re
import sys

import jsonschema
import yaml
from helm_python import chart as helm

errors = []


def check(ok, message):
    if not ok:
        errors.append(message)
    return ok


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def component(doc):
    return doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name")


def value_paths(node, prefix=()):
    """Every path of values.yaml down to its leaves (free-form maps are leaves)."""
    if isinstance(node, dict) and node and prefix[-1:] not in (("resources",), ("nodeSelector",), ("labels",)):
        for key, value in node.items():
            yield from value_paths(value, prefix + (key,))
    else:
        yield prefix


def schema_paths(node, prefix=()):
    props = node.get("properties")
    if node.get("type") == "object" and props and prefix[-1:] != ("resources",):
        for key, sub in props.items():
            yield from schema_paths(sub, prefix + (key,))
    else:
        yield prefix


def main(root, out):
    chart_dir = os.path.join(root, "deploy/helm/netspectra")
    k8s_dir = os.path.join(root, "deploy/k8s")
    config = open(os.path.join(root, "deploy/config/netspectra.yaml")).read()
    values = yaml.safe_load(open(os.path.join(chart_dir, "values.yaml")))
    test_values = yaml.safe_load(open(os.path.join(chart_dir, "ci/test-values.yaml")))
    schema = json.load(open(os.path.join(chart_dir, "values.schema.json")))

    # --- One config everywhere.
    check(open(os.path.join(chart_dir, "files/netspectra.yaml")).read() == config,
          "deploy/helm/netspectra/files/netspectra.yaml differs from deploy/config/netspectra.yaml")
    k8s_docs = []
    for name in sorted(os.listdir(k8s_dir)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for d in docs_of(open(os.path.join(k8s_dir, name)).read()):
                d["_file"] = name
                k8s_docs.append(d)
    cms = [d for d in k8s_docs if d["kind"] == "ConfigMap"]
    check(len(cms) == 1 and cms[0]["data"]["netspectra.yaml"] == config,
          "deploy/k8s/configmap.yaml's netspectra.yaml differs from deploy/config/netspectra.yaml")

    # --- compose: every file it mounts exists (Grafana's and Prometheus'
    # come with the faces issue: until then their absence is only reported).
    compose_dir = os.path.join(root, "deploy/compose")
    compose = yaml.safe_load(open(os.path.join(compose_dir, "compose.yaml")))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                continue
            path = os.path.normpath(os.path.join(compose_dir, source))
            rel = os.path.relpath(path, root)
            if os.path.exists(path):
                continue
            if rel.startswith(("deploy/grafana", "deploy/prometheus")):
                print(f"validate_deploy: note: compose service {name} mounts {rel}, not present yet "
                      "(Grafana and Prometheus files of the faces issue)", file=sys.stderr)
            else:
                check(False, f"compose service {name} mounts {rel}, which does not exist")
        command = service.get("command", [])
        if service.get("image", "").startswith("${NETSPECTRA_IMAGE"):
            check(command[1:3] == ["--config", "/etc/netspectra/netspectra.yaml"],
                  f"compose service {name}: not started with the shared config")

    # --- kustomization lists every manifest, and only existing ones.
    kust = yaml.safe_load(open(os.path.join(k8s_dir, "kustomization.yaml")))
    files = sorted(n for n in os.listdir(k8s_dir) if n.endswith(".yaml") and n != "kustomization.yaml")
    check(sorted(kust["resources"]) == files,
          f"kustomization.yaml resources {sorted(kust['resources'])} != manifests {files}")

    # --- Chart: values used by templates exist, and every value is used.
    used = set()
    for dirpath, _, names in os.walk(os.path.join(chart_dir, "templates")):
        for name in names:
            text = open(os.path.join(dirpath, name)).read()
            for m in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
                path = tuple(m.group(1).strip(".").split("."))
                used.add(path)
                node = values
                for i, key in enumerate(path):
                    if not isinstance(node, dict) or key not in node:
                        check(False, f"templates/{name}: .Values.{'.'.join(path)} is not in values.yaml "
                                     f"(missing at `{'.'.join(path[:i + 1])}`)")
                        break
                    node = node[key]
    for path in value_paths(values):
        check(any(path[:len(u)] == u or u[:len(path)] == path for u in used),
              f"values.yaml: `{'.'.join(path)}` is used by no template")

    # --- values.yaml and the schema describe the same keys.
    vp, sp = set(value_paths(values)), set(schema_paths(schema))
    check(vp == sp, f"values.yaml and values.schema.json differ: only in values {sorted(vp - sp)}, "
                    f"only in schema {sorted(sp - vp)}")
    jsonschema.validate(values, schema)
    merged = copy.deepcopy(values)
    for k, v in test_values.items():
        merged[k] = {**merged[k], **v} if isinstance(v, dict) else v
    jsonschema.validate(merged, schema)
    ch = helm.Chart.load(chart_dir)
    ch.validate_schema(test_values)
    for bad in ({"engine": {"replicas": "two"}}, {"engine": {"replica": 2}}, {"enginee": {}},
                {"secrets": {"clickhousePassword": "p@ss/word"}}, {"probe": {"metricsPort": 70000}}):
        try:
            ch.validate_schema(bad)
            check(False, f"values.schema.json accepts {bad}")
        except Exception:
            pass

    # --- helm lint (strict) and render.
    report = helm.lint(chart_dir, test_values, strict=True)
    for m in report.get("messages", []):
        # Severity 1 is informational ("icon is recommended").
        check(m["severity"] < 2, f"helm lint: {m['path']}: {m['error']}")
    check(not report.get("errors"), f"helm lint errors: {report.get('errors')}")

    def render(vals, release="netspectra"):
        out_docs = []
        for path, text in sorted(ch.render(vals, name=release, namespace="netspectra").items()):
            if path.endswith(".yaml"):
                check("<no value>" not in text, f"{path}: renders `<no value>`")
                out_docs += docs_of(text)
        return out_docs

    chart_docs = render(test_values)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "chart.yaml"), "w") as f:
        yaml.safe_dump_all(chart_docs, f, sort_keys=False)
    try:
        render({})
        check(False, "the chart renders without secrets.clickhousePassword / secrets.apiToken")
    except Exception as e:
        check("secrets.clickhousePassword is required" in str(e), f"unexpected render error without secrets: {e}")

    # Scaling and pointing at existing servers.
    scaled = render({**test_values, "engine": {"replicas": 5}})
    check([d["spec"]["replicas"] for d in scaled if d["kind"] == "StatefulSet" and component(d) == "engine"] == [5],
          "engine.replicas=5 does not give a StatefulSet of 5")
    external = render({**test_values, "nats": {"enabled": False, "url": "nats://nats.example:4222"},
                       "clickhouse": {"enabled": False, "host": "ch.example"}})
    check(not [d for d in external if component(d) in ("nats", "clickhouse")],
          "nats/clickhouse objects rendered while disabled")
    text = yaml.safe_dump_all(external)
    check("nats://nats.example:4222" in text and "ch.example" in text, "external NATS/ClickHouse not used")
    try:
        render({**test_values, "nats": {"enabled": False}})
        check(False, "nats.enabled=false without nats.url renders")
    except Exception:
        pass

    # --- The chart and deploy/k8s give the same objects.
    def objects(docs):
        return sorted((d["kind"], component(d) or "-") for d in docs if d["kind"] != "Namespace")
    check(objects(chart_docs) == objects(k8s_docs),
          f"chart objects {objects(chart_docs)} != deploy/k8s objects {objects(k8s_docs)}")

    # --- Secrets: string values only; ServiceMonitors select metrics ports.
    for where, docs in (("deploy/k8s", k8s_docs), ("chart", chart_docs)):
        for d in docs:
            if d["kind"] == "Secret":
                for field in ("stringData", "data"):
                    for key, value in (d.get(field) or {}).items():
                        check(isinstance(value, str), f"{where}: Secret {d['metadata']['name']}: {key} is not a string")
            if d["kind"] == "ServiceMonitor":
                want = d["spec"]["selector"]["matchLabels"]
                ports = {e["port"] for e in d["spec"]["endpoints"]}
                selected = [s for s in docs if s["kind"] == "Service"
                            and want.items() <= s["metadata"].get("labels", {}).items()
                            and ports & {p.get("name") for p in s["spec"]["ports"]}]
                check({component(s) for s in selected} >= {"engine", "probe"},
                      f"{where}: the ServiceMonitor selects {[component(s) for s in selected]}, not engine and probe")
            # Every container of ours has the shared config and, where it
            # serves HTTP, probes on /healthz and /readyz.
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if not str(c.get("image", "")).startswith("netspectra"):
                    continue
                check(c["args"][1:3] == ["--config", "/etc/netspectra/netspectra.yaml"],
                      f"{where}: {d['kind']} {d['metadata']['name']}: not started with the shared config")
                role = c["args"][0]
                check(role in ("probe", "engine", "api", "alert", "ai"), f"{where}: unknown role {role}")
                if role != "alert":
                    check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
                          and c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
                          f"{where}: {role}: probes are not /healthz and /readyz")
                check("limits" in c.get("resources", {}) and "requests" in c["resources"],
                      f"{where}: {role}: no resource requests and limits")
                sec = c.get("securityContext", {})
                check(sec.get("capabilities", {}).get("drop") == ["ALL"] and sec.get("allowPrivilegeEscalation") is False,
                      f"{where}: {role}: capabilities not dropped")
                if role == "probe":
                    check(sec["capabilities"].get("add") == ["NET_RAW", "NET_ADMIN"] and spec.get("hostNetwork"),
                          f"{where}: probe: not hostNetwork with NET_RAW/NET_ADMIN")
                else:
                    pod_sec = spec.get("securityContext", {})
                    check(pod_sec.get("runAsNonRoot") is True and not sec.get("capabilities", {}).get("add"),
                          f"{where}: {role}: not non-root without capabilities")

    for e in errors:
        print(f"validate_deploy: {e}", file=sys.stderr)
    print(f"validate_deploy: {len(chart_docs)} chart objects, {len(k8s_docs)} manifests checked, "
          f"{len(errors)} problem(s)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
