#!/usr/bin/python3
"""The Helm chart helm/cdcd: `helm lint --strict` and `helm template` for several values files, every
rendered object validated twice (npm kubernetes-models' JSON schemas, including the prometheus-operator
CRDs; Debian's python3-kubernetes models walked strictly for unknown fields), assertions on the
rendered output, every bad values file refused with its message, and mutations of the chart caught.
Usage: test_helm_chart.py CDCD_BINARY (used to `cdcd validate` the rendered configuration files)."""
import copy
import glob
import hashlib
import json
import os
import re
import shutil
import sys

import yaml
from kubernetes import client

from opslib import (CHART, DASHBOARD, HELM, NODE_MODULES, RULES, TOOLS, CheckFailed, check, main,
                    must_fail, require_tools, run, temp_dir)

HERE = os.path.dirname(os.path.abspath(__file__))
VALUES = os.path.join(HERE, "values")
CRDS = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
HELM_ENV = dict(os.environ, HELM_CACHE_HOME=os.path.join(TOOLS, ".helm", "cache"),
                HELM_CONFIG_HOME=os.path.join(TOOLS, ".helm", "config"),
                HELM_DATA_HOME=os.path.join(TOOLS, ".helm", "data"))
PYTHON_MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Service"): "V1Service",
                 ("v1", "ServiceAccount"): "V1ServiceAccount", ("apps/v1", "Deployment"): "V1Deployment",
                 ("apps/v1", "StatefulSet"): "V1StatefulSet",
                 ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget"}


def helm(*args, expect_ok=True):
    return run([HELM, *args], expect_ok=expect_ok, env=HELM_ENV)


def render(chart, values_file=None, crds=False):
    """helm template; returns (text, objects)."""
    args = ["template", "shop", chart, "--namespace", "cdc", "--kube-version", "1.30.0"]
    if values_file:
        args += ["-f", values_file]
    if crds:
        args += CRDS
    text = helm(*args).stdout
    objects = [o for o in yaml.safe_load_all(text) if o]
    return text, objects


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind):
    found = by_kind(objects, kind)
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0]


# --- schema validation -------------------------------------------------------------------------

def validate_with_kubernetes_models(objects, work):
    path = os.path.join(work, "objects.json")
    with open(path, "w") as f:
        json.dump(objects, f)
    result = run(["node", os.path.join(HERE, "validate_manifests.mjs"), NODE_MODULES, path], expect_ok=False)
    failures = [line for line in result.stdout.splitlines() if not line.startswith("ok ")]
    check(result.returncode == 0, "kubernetes-models schema validation failed:\n" + "\n".join(failures) + result.stderr)


PRIMITIVES = {"str": (str, int, float), "int": (int,), "bool": (bool,), "float": (int, float),
              "object": (object,), "datetime": (str,), "date": (str,)}


def strict_walk(data, type_name, path):
    """Fails on a field the python3-kubernetes model does not know, or a value of the wrong type."""
    if type_name.startswith("list["):
        check(isinstance(data, list), f"{path}: expected a list")
        for i, item in enumerate(data):
            strict_walk(item, type_name[5:-1], f"{path}[{i}]")
    elif type_name.startswith("dict("):
        check(isinstance(data, dict), f"{path}: expected a map")
        value_type = type_name[5:-1].split(", ", 1)[1]
        for key, value in data.items():
            strict_walk(value, value_type, f"{path}.{key}")
    elif type_name in PRIMITIVES:
        ok = isinstance(data, PRIMITIVES[type_name]) and not (type_name == "int" and isinstance(data, bool))
        check(ok, f"{path}: expected {type_name}, got {data!r}")
    else:
        model = getattr(client.models, type_name)
        check(isinstance(data, dict), f"{path}: expected a {type_name} object")
        fields = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
        for key, value in data.items():
            check(key in fields, f"{path}: unknown field {key!r} in {type_name}")
            strict_walk(value, model.openapi_types[fields[key]], f"{path}.{key}")


def validate_with_python_kubernetes(objects):
    api = client.ApiClient()
    for o in objects:
        key = (o["apiVersion"], o["kind"])
        if key[0].startswith("monitoring.coreos.com/"):
            continue  # no python model; the CRD schemas of the npm package checked them
        check(key in PYTHON_MODELS, f"no python3-kubernetes model for {key}")
        strict_walk(o, PYTHON_MODELS[key], f"{o['kind']}/{o['metadata']['name']}")
        try:  # the models' constructors check required fields
            api._ApiClient__deserialize(o, PYTHON_MODELS[key])
        except ValueError as error:
            raise CheckFailed(f"{o['kind']}/{o['metadata']['name']}: {error}")


def validate(objects, work):
    validate_with_kubernetes_models(objects, work)
    validate_with_python_kubernetes(objects)


# --- assertions on the rendered output ---------------------------------------------------------

def workload(objects):
    found = by_kind(objects, "StatefulSet") + by_kind(objects, "Deployment")
    check(len(found) == 1, f"expected one StatefulSet or Deployment, found {len(found)}")
    return found[0]


def container(objects):
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    check(len(containers) == 1 and containers[0]["name"] == "cdcd", "one container named cdcd")
    return containers[0]


def assert_pod(objects, port):
    w = workload(objects)
    pod = w["spec"]["template"]["spec"]
    c = container(objects)
    check(w["spec"]["replicas"] == 1, "one pod: a replication slot has one reader")
    check(c["args"] == ["run", "--config", "/etc/cdcd/cdcd.yaml"], f"container args: {c['args']}")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"metrics": port}, f"container ports: {ports}")
    check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"},
          f"liveness probe: {c['livenessProbe']}")
    check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"},
          f"readiness probe: {c['readinessProbe']}")
    security = c["securityContext"]
    check(security.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    check(security.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    check(security.get("capabilities", {}).get("drop") == ["ALL"] and not security["capabilities"].get("add"),
          f"capabilities: {security.get('capabilities')}")
    check(pod["securityContext"].get("runAsNonRoot") is True and pod["securityContext"].get("runAsUser", 0) != 0,
          f"non-root pod: {pod['securityContext']}")
    check(pod["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, "seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, "no service account token in the pod")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    check(mounts["config"]["mountPath"] == "/etc/cdcd" and mounts["config"].get("readOnly"), "config mount")
    check(mounts["tmp"]["mountPath"] == "/tmp", "a writable /tmp")
    if w["kind"] == "Deployment":
        check(w["spec"]["strategy"] == {"type": "Recreate"}, "a Deployment stops the old pod before the new one")
    service = one(objects, "Service")
    labels = w["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in service["spec"]["selector"].items()), "Service selects the pod")
    check(w["spec"]["selector"]["matchLabels"].items() <= labels.items(), "workload selects its pods")
    check(service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}],
          f"Service ports: {service['spec']['ports']}")
    return w, c


def config_file(objects):
    return one([o for o in objects if o["kind"] == "ConfigMap" and "cdcd.yaml" in o.get("data", {})],
               "ConfigMap")["data"]["cdcd.yaml"]


def assert_config_validates(cdcd, text, work, env):
    path = os.path.join(work, "cdcd.yaml")
    with open(path, "w") as f:
        f.write(text)
    result = run([cdcd, "validate", "--config", path], expect_ok=False, env=dict(os.environ, **env))
    check(result.returncode == 0, f"cdcd validate refuses the rendered config:\n{result.stdout}{result.stderr}")


def assert_checksum_follows_config(chart, values_file):
    """The pod template's checksum annotation changes with the configuration (so the pod rolls)."""
    _, objects = render(chart, values_file)
    before = workload(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    check(re.fullmatch(r"[0-9a-f]{64}", before), f"checksum/config: {before}")
    with temp_dir() as work:
        with open(values_file or os.path.join(chart, "values.yaml")) as f:
            values = yaml.safe_load(f) or {}
        with open(os.path.join(chart, "values.yaml")) as f:
            config = values.get("config") or yaml.safe_load(f)["config"]
        values["config"] = config.replace("interval: 1s", "interval: 2s") if "interval: 1s" in config \
            else config + "shutdown_timeout: 20s\n"
        changed = os.path.join(work, "values.yaml")
        with open(changed, "w") as f:
            yaml.safe_dump(values, f)
        _, objects = render(chart, changed)
    after = workload(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    check(after != before, "checksum/config did not change with the configuration")


def assert_monitoring(text, objects, rules_text, dashboard_text):
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    check(monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(),
          "ServiceMonitor selects the Service")
    endpoint = monitor["spec"]["endpoints"][0]
    check(endpoint["port"] == "metrics" and endpoint["path"] == "/metrics", f"ServiceMonitor endpoint {endpoint}")
    check({"action": "replace", "targetLabel": "job", "replacement": "cdcd"} in endpoint["relabelings"],
          "the scrape job is named cdcd, as the rules and dashboard expect")
    rule = one(objects, "PrometheusRule")
    check(rule["spec"] == yaml.safe_load(rules_text), "PrometheusRule spec differs from files/cdcd-alerts.yml")
    # helm's `indent 2` prefixes every line, blank ones included: compare lines exactly.
    embedded = "\n".join("  " + line for line in rules_text.split("\n")[:-1]) + "\n"
    check(rules_text.endswith("\n") and embedded in text,
          "files/cdcd-alerts.yml is not embedded byte for byte (indented by 2) in the PrometheusRule")
    dashboards = [o for o in objects if o["kind"] == "ConfigMap" and "cdcd-dashboard.json" in o.get("data", {})]
    check(len(dashboards) == 1, "one dashboard ConfigMap")
    check(dashboards[0]["data"]["cdcd-dashboard.json"] == dashboard_text,
          "the dashboard ConfigMap does not hold files/cdcd-dashboard.json byte for byte")
    check(dashboards[0]["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard labelled for Grafana's sidecar")


# --- the test ----------------------------------------------------------------------------------

def check_values_file(name, values_file, crds, chart=CHART, lint=True):
    """Lints, renders and validates one values file; returns the rendering."""
    if lint:
        helm("lint", "--strict", chart, *(["-f", values_file] if values_file else []))
    text, objects = render(chart, values_file, crds)
    with temp_dir() as work:
        validate(objects, work)
    kinds = sorted(o["kind"] for o in objects)
    print(f"  {name}{' (CRDs present)' if crds else ''}: {', '.join(kinds)}")
    return text, objects


def test(cdcd):
    require_tools()
    with open(RULES) as f:
        rules_text = f.read()
    with open(DASHBOARD) as f:
        dashboard_text = f.read()
    run(["yamllint", "--strict", "-c", os.path.join(HERE, "yamllint.yml"), os.path.join(CHART, "values.yaml"),
         os.path.join(CHART, "Chart.yaml"), *glob.glob(os.path.join(VALUES, "*.yaml"))])

    print("defaults: StatefulSet with a volume for the file checkpoints, no CRDs in the cluster")
    _, objects = check_values_file("defaults", None, False)
    w, c = assert_pod(objects, 9187)
    check(w["kind"] == "StatefulSet", "file checkpoints run in a StatefulSet")
    check(not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "PrometheusRule"),
          "no ServiceMonitor/PrometheusRule without their CRDs")
    check(by_kind(objects, "ServiceAccount")[0]["automountServiceAccountToken"] is False, "service account token")
    claim = w["spec"]["volumeClaimTemplates"][0]
    check(claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "1Gi", "PVC")
    check({"name": "data", "mountPath": "/var/lib/cdcd"} in c["volumeMounts"], "the volume holds the checkpoints")
    config = config_file(objects)
    check(yaml.safe_load(config)["metrics"] == {"listen": "0.0.0.0:9187"}, "the chart sets metrics.listen")
    with temp_dir() as work:
        assert_config_validates(cdcd, config, work, {"PGPASSWORD": "x"})
    assert_checksum_follows_config(CHART, None)

    print("everything on, CRDs present")
    values = os.path.join(VALUES, "everything-on.yaml")
    text, objects = check_values_file("everything-on", values, True)
    w, c = assert_pod(objects, 9300)
    pod = w["spec"]["template"]["spec"]
    check(pod["nodeSelector"] == {"kubernetes.io/os": "linux"}, "nodeSelector")
    check(pod["tolerations"][0]["key"] == "dedicated", "tolerations")
    check("nodeAffinity" in pod["affinity"], "affinity")
    check(pod["priorityClassName"] == "high-priority", "priorityClassName")
    check(pod["imagePullSecrets"] == [{"name": "registry-credentials"}], "imagePullSecrets")
    check(pod["serviceAccountName"] == "cdcd-shop", "service account name")
    check(c["image"] == "registry.example.com/cdcd:0.1.0" and c["imagePullPolicy"] == "Always", "image")
    check(c["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}, "resources")
    check(c["envFrom"] == [{"secretRef": {"name": "cdcd-secrets"}}, {"configMapRef": {"name": "cdcd-extra-env"}}],
          f"envFrom: {c['envFrom']}")
    check(c["env"][0]["name"] == "CDCD_KAFKA_BROKERS", "env")
    check(c["workingDir"] == "/data", "relative checkpoint dirs resolve on the volume")
    check(w["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd", "storage class")
    check(one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1, "PodDisruptionBudget")
    check(one(objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack", "monitor labels")
    assert_monitoring(text, objects, rules_text, dashboard_text)
    dashboards = [o for o in objects if o["metadata"]["name"].endswith("-dashboard")]
    check(dashboards[0]["metadata"]["namespace"] == "monitoring", "dashboard namespace")
    with temp_dir() as work:
        assert_config_validates(cdcd, config_file(objects), work,
                                {"PGPASSWORD": "x", "CDCD_KAFKA_BROKERS": "k:9092"})

    print("existing ConfigMap and Secret")
    values = os.path.join(VALUES, "existing-configmap.yaml")
    _, objects = check_values_file("existing-configmap", values, True)
    w, c = assert_pod(objects, 9187)
    check(w["kind"] == "Deployment" and "volumeClaimTemplates" not in w["spec"], "Deployment without a volume")
    check(not [o for o in objects if o["kind"] == "ConfigMap" and "cdcd.yaml" in o.get("data", {})],
          "no ConfigMap of its own")
    volume = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    check(volume["configMap"]["name"] == "shop-cdcd-config", "mounts the existing ConfigMap")
    check(c["envFrom"] == [{"secretRef": {"name": "shop-cdcd-secrets"}}], "environment from the existing Secret")
    check("checksum/config" not in (w["spec"]["template"]["metadata"].get("annotations") or {}),
          "no checksum of a ConfigMap the chart does not render")
    check(not by_kind(objects, "ServiceAccount") and w["spec"]["template"]["spec"]["serviceAccountName"] == "default",
          "serviceAccount.create false")

    print("postgres checkpoints inline")
    values = os.path.join(VALUES, "postgres-checkpoints.yaml")
    _, objects = check_values_file("postgres-checkpoints", values, False)
    w, _ = assert_pod(objects, 9187)
    check(w["kind"] == "Deployment", "postgres checkpoints run in a Deployment")
    with open(values) as f:
        inline = yaml.safe_load(f)["config"]
    check(config_file(objects).startswith(inline), "the configuration is kept as written (comments included)")
    with temp_dir() as work:
        assert_config_validates(cdcd, config_file(objects), work, {"SHOP_DSN": "host=db"})
    assert_checksum_follows_config(CHART, values)

    print("bad values files are refused with their message")
    for bad in sorted(glob.glob(os.path.join(VALUES, "bad-*.yaml"))):
        with open(bad) as f:
            expected = f.readline().removeprefix("# expect:").strip()
        result = helm("template", "shop", CHART, "-f", bad, expect_ok=False)
        check(result.returncode != 0, f"{os.path.basename(bad)} rendered")
        check(expected in result.stderr, f"{os.path.basename(bad)}: expected {expected!r} in:\n{result.stderr}")
        print(f"  {os.path.basename(bad)}: {expected}")

    print("mutations of the chart are caught")
    with temp_dir() as work:
        everything = os.path.join(VALUES, "everything-on.yaml")

        def mutated_chart(path, old, new):
            chart = os.path.join(work, "cdcd")
            shutil.rmtree(chart, ignore_errors=True)
            shutil.copytree(CHART, chart)
            target = os.path.join(chart, path)
            with open(target) as f:
                content = f.read()
            check(content.count(old) >= 1, f"mutation anchor {old!r} not in {path}")
            with open(target, "w") as f:
                f.write(content.replace(old, new, 1))
            return chart

        def full_check(chart):
            text, objects = check_values_file("mutated", everything, True, chart, lint=False)
            assert_pod(objects, 9300)
            assert_monitoring(text, objects, rules_text, dashboard_text)

        for what, path, old, new in [
            ("readiness probe on /healthz", "values.yaml", "path: /readyz", "path: /healthz"),
            ("writable root filesystem", "values.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
            ("unknown field in the pod spec", "templates/workload.yaml", "automountServiceAccountToken: false",
             "automountServiceAcountToken: false"),
            ("container port as a string", "templates/workload.yaml", "containerPort: {{ .Values.metrics.port }}",
             "containerPort: \"{{ .Values.metrics.port }}\""),
            ("ServiceMonitor interval not a duration", "templates/servicemonitor.yaml", "interval: {{ .Values.serviceMonitor.interval }}",
             "interval: every-{{ .Values.serviceMonitor.interval }}"),
            ("rules re-serialised instead of embedded", "templates/prometheusrule.yaml",
             '{{ .Files.Get "files/cdcd-alerts.yml" | indent 2 }}',
             '{{ .Files.Get "files/cdcd-alerts.yml" | fromYaml | toYaml | indent 2 }}'),
            ("dashboard without its sidecar label", "values.yaml", 'grafana_dashboard: "1"', 'grafana_dashboards: "1"'),
        ]:
            must_fail(what, full_check, mutated_chart(path, old, new))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(lambda: test(os.path.abspath(sys.argv[1])))
