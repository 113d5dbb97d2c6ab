"""The deploy kit without a cluster: the kustomize base and example overlay render (``kubectl
kustomize``) and every object validates against its schema (Kubernetes', or the vendored CRDs'),
the pods are locked down and probed, migrations run first, a config change rolls the pods, the
autoscaler, monitors, budgets and network policy point at the right pods; the compose file
matches the Compose Specification. The PromQL is checked against live servers in
``test_deploy_promql.py``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from helpers.deploy_kit import (
    BASE,
    DASHBOARD,
    KUBERNETES_VERSION,
    OVERLAY,
    ROOT,
    compose_validator,
    crd_validators,
    dashboard,
    metric_names,
    objects,
    one,
    panel_expressions,
    pod_specs,
    render,
    rule_expressions,
)
from segment_worker.cli.main import main
from segment_worker.config import Settings

KITS = [pytest.param(BASE, id="base"), pytest.param(OVERLAY, id="overlay")]
# Read by the CLI group rather than Settings.
_CLI_ONLY_VARIABLES = {"SEGMENT_WORKER_LOG_LEVEL"}
_PROJECT_SERVICES = ("migrate", "worker", "api")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _known_variables() -> set[str]:
    return {f"SEGMENT_WORKER_{name.upper()}" for name in Settings.model_fields} | _CLI_ONLY_VARIABLES


def _settings_map(path: Path) -> dict[str, Any]:
    (cm,) = [c for c in objects(path, "ConfigMap") if c["metadata"]["name"].startswith("segment-worker-")
             and "grafana_dashboard" not in c["metadata"].get("labels", {})]
    return cm


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- docker-compose.yml -----------------------------------------------------------------------


def test_compose_matches_the_spec_pins_its_images_and_binds_localhost_only() -> None:
    doc = _compose()
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in compose_validator().iter_errors(doc)]
    assert errors == []
    services = doc["services"]
    assert set(services) == {"kafka", "postgres", "redis", *_PROJECT_SERVICES}
    for name in ("kafka", "postgres", "redis"):
        # An exact version (major.minor at least), never a moving tag such as `latest` or `16`.
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?", services[name]["image"]), services[name]["image"]
        assert "build" not in services[name]
    for name in _PROJECT_SERVICES:
        assert services[name]["build"] == "." and services[name]["pull_policy"] == "build", name
        assert services[name]["read_only"] is True and "/tmp" in services[name]["tmpfs"], name
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_compose_runs_each_role_after_its_migrations_with_health_checks() -> None:
    services = _compose()["services"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["migrate"]["command"] == ["migrate"]
    worker = services["worker"]
    assert worker["command"][0] == "run" and worker["deploy"]["replicas"] > 1
    assert services["api"]["command"][:3] == ["api", "--host", "0.0.0.0"]
    for role in ("worker", "api"):
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The worker's health check asks /healthz on the port it serves metrics on (python: no curl).
    port = worker["command"][worker["command"].index("--metrics-port") + 1]
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and f"127.0.0.1:{port}/healthz" in test[3]
    compile(test[3], "healthcheck", "exec")  # the one-liner is valid Python


# -- the Kubernetes kit -----------------------------------------------------------------------


@pytest.mark.parametrize("path", KITS)
def test_every_rendered_object_validates_against_its_schema(path: Path) -> None:
    crds = crd_validators()
    kinds = set()
    for obj in render(path):
        kinds.add(obj["kind"])
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        validator = crds.get((obj["apiVersion"], obj["kind"]))
        if validator is not None:
            errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
            assert errors == [], where
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}") from None
    assert {
        "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
        "ScaledObject", "PodMonitor", "ServiceMonitor", "PrometheusRule",
    } <= kinds


def test_the_validation_catches_a_misspelt_field() -> None:
    """The strict schemas do reject what the API server would (or a CRD would prune)."""
    dep = one(BASE, "Deployment", "segment-worker")
    bad = {**dep, "spec": {**dep["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)
    so = one(BASE, "ScaledObject", "segment-worker")
    validator = crd_validators()[(so["apiVersion"], "ScaledObject")]
    assert list(validator.iter_errors({**so, "spec": {**so["spec"], "maxReplicas": 6}}))


@pytest.mark.parametrize("path", KITS)
def test_pods_are_locked_down_probed_and_have_a_writable_tmp(path: Path) -> None:
    probes = {"segment-worker": "metrics", "segment-worker-api": "http"}
    seen = set()
    for name, spec in pod_specs(path):
        seen.add(name)
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] == "segment-worker", name
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], (name, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (name, c["name"])
        (main_container,) = spec["containers"]
        ports = {p["name"] for p in main_container["ports"]}
        port = probes[name]
        assert port in ports
        assert main_container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert main_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert main_container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert seen == set(probes)
    assert one(path, "ServiceAccount", "segment-worker")["automountServiceAccountToken"] is False


@pytest.mark.parametrize("path", KITS)
def test_migrations_run_in_each_pod_before_its_process_with_the_same_image_and_settings(path: Path) -> None:
    for name, spec in pod_specs(path):
        (migrate,) = spec["initContainers"]
        (container,) = spec["containers"]
        assert migrate["args"] == ["migrate"], name
        assert migrate["image"] == container["image"], name
        assert migrate["envFrom"] == container["envFrom"], name


@pytest.mark.parametrize("path", KITS)
def test_pods_read_the_generated_settings_and_the_secret(path: Path) -> None:
    settings = _settings_map(path)["metadata"]["name"]
    assert re.fullmatch(r"segment-worker-[a-z0-9]{10}", settings), settings  # hash-suffixed
    for name, spec in pod_specs(path):
        for c in _containers(spec):
            refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in c["envFrom"]}
            assert refs["configMapRef"] == settings, name
            assert refs["secretRef"].startswith("segment-worker"), name
    names = set(_settings_map(path)["data"])
    for secret in objects(path, "Secret"):
        names |= set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    names |= {k for service in _PROJECT_SERVICES for k in _compose()["services"][service]["environment"]}
    assert names - _known_variables() == set()


def test_a_settings_change_gives_the_pods_a_new_config_map(tmp_path: Path) -> None:
    before = _settings_map(OVERLAY)["metadata"]["name"]
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    env = copy / "overlays" / "example" / "settings.env"
    env.write_text(env.read_text() + "SEGMENT_WORKER_TICK_SECONDS=10\n")
    after = _settings_map(copy / "overlays" / "example")
    assert after["data"]["SEGMENT_WORKER_TICK_SECONDS"] == "10"
    assert after["metadata"]["name"] != before
    for _, spec in pod_specs(copy / "overlays" / "example"):
        assert spec["containers"][0]["envFrom"][0]["configMapRef"]["name"] == after["metadata"]["name"]


@pytest.mark.parametrize("path", KITS)
def test_the_autoscaler_watches_the_workers_group_and_stops_at_partitions_per_lane(path: Path) -> None:
    settings = _settings_map(path)["data"]
    so = one(path, "ScaledObject", "segment-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == "segment-worker"
    assert "replicas" not in one(path, "Deployment", "segment-worker")["spec"]  # KEDA owns the count
    partitions = int(settings["SEGMENT_WORKER_INPUT_PARTITIONS"])
    lanes = int(settings["SEGMENT_WORKER_LANES"])
    assert so["spec"]["maxReplicaCount"] == partitions // lanes == 6
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == settings["SEGMENT_WORKER_KAFKA_BOOTSTRAP"]
    assert meta["consumerGroup"] == settings["SEGMENT_WORKER_CONSUMER_GROUP"]
    assert meta["topic"] == settings["SEGMENT_WORKER_TOPIC_EVENTS"]
    assert int(meta["lagThreshold"]) > 0


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("path", KITS)
def test_budgets_monitors_and_policy_select_the_right_pods_and_ports(path: Path) -> None:
    pods = {
        d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
        for d in objects(path, "Deployment")
    }
    worker_labels, worker = pods["segment-worker"]
    api_labels, _ = pods["segment-worker-api"]
    budgets = {b["metadata"]["name"]: b["spec"]["selector"] for b in objects(path, "PodDisruptionBudget")}
    assert _selects(budgets["segment-worker"], worker_labels)
    assert not _selects(budgets["segment-worker"], api_labels)
    assert _selects(budgets["segment-worker-api"], api_labels)
    service = one(path, "Service", "segment-worker-api")
    assert service["spec"]["selector"].items() <= api_labels.items()
    pod_monitor = one(path, "PodMonitor", "segment-worker")
    assert _selects(pod_monitor["spec"]["selector"], worker_labels)
    worker_ports = {p["name"] for p in worker["containers"][0]["ports"]}
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= worker_ports
    service_monitor = one(path, "ServiceMonitor", "segment-worker-api")
    assert _selects(service_monitor["spec"]["selector"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} <= service_ports
    (policy,) = objects(path, "NetworkPolicy")
    assert _selects(policy["spec"]["podSelector"], worker_labels)
    assert _selects(policy["spec"]["podSelector"], api_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    allowed_in = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert {9100, 8080} <= allowed_in
    allowed_out = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 6379, 9092} <= allowed_out


@pytest.mark.parametrize("path", KITS)
def test_the_dashboard_ships_as_a_labelled_config_map_equal_to_the_file(path: Path) -> None:
    cm = one(path, "ConfigMap", "segment-worker-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"segment-worker.json": DASHBOARD.read_text()}
    assert dashboard()["uid"] == "segment-worker"


def _command_lines() -> list[list[str]]:
    services = _compose()["services"]
    lines = [services[name]["command"] for name in _PROJECT_SERVICES]
    for path in (BASE, OVERLAY):
        for _, spec in pod_specs(path):
            lines += [c["args"] for c in _containers(spec)]
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r'^CMD (\[.*\])$', dockerfile, re.M)
    assert cmd is not None and re.search(r'^ENTRYPOINT \["segment-worker"\]$', dockerfile, re.M)
    lines.append(yaml.safe_load(cmd.group(1)))
    return lines


@pytest.mark.parametrize("command", ["migrate", "run", "api"])
def test_deployed_command_lines_match_the_cli(command: str) -> None:
    lines = [line for line in _command_lines() if line[0] == command]
    assert lines, f"no deployment runs {command!r}"
    cmd = main.commands[command]
    known = {opt for p in cmd.params if isinstance(p, click.Option) for opt in p.opts}
    for line in lines:
        used = {arg for arg in line[1:] if arg.startswith("--")}
        assert used <= known, (line, known)


# -- alerts, dashboard and their documentation ------------------------------------------------

_OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
# What the alerts must watch (issue 14): a metric of each.
_ALERTED = {
    "lag growing": "segment_worker_consumer_lag",
    "DLQ rate": "segment_worker_dlq_records_total",
    "oldest unsent outbox row": "segment_worker_outbox_oldest_unsent_seconds",
    "stuck partition": "segment_worker_stuck_partitions",
    "stalled batch loop": "segment_worker_batch_duration_seconds_count",
    "failed ticks": "segment_worker_tick_failures_total",
    "Redis rebuilt": "segment_worker_redis_rebuilds_total",
    "API 5xx rate": "segment_worker_api_requests_total",
}
# What the dashboard must show: a metric of each, in a panel whose title says so.
_PANELS = {
    "Throughput": "segment_worker_events_processed_total",
    "lag": "segment_worker_consumer_lag",
    "End-to-end latency": "segment_worker_end_to_end_seconds_bucket",
    "Transitions by cause": "segment_worker_transitions_total",
    "Dead letters by reason": "segment_worker_dlq_records_total",
    "Batch duration": "segment_worker_batch_duration_seconds_bucket",
    "oldest unsent": "segment_worker_outbox_oldest_unsent_seconds",
    "Ticks": "segment_worker_ticks_total",
    "API latency by route": "segment_worker_api_request_duration_seconds_bucket",
}


def test_the_alerts_cover_the_failures_and_each_has_a_runbook_entry() -> None:
    rules = rule_expressions(BASE)
    used = {n for expr in rules.values() for n in metric_names(expr)}
    assert {what: m for what, m in _ALERTED.items() if m not in used} == {}
    doc = _OPERATIONS.read_text()
    headings = set(re.findall(r"^### (\S+)$", doc, re.M))
    (rule_set,) = objects(BASE, "PrometheusRule")
    for rule in rule_set["spec"]["groups"][0]["rules"]:
        name = rule["alert"]
        assert name in headings, f"no runbook entry for {name} in docs/OPERATIONS.md"
        assert rule["annotations"]["runbook"] == f"docs/OPERATIONS.md#{name.lower()}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_the_dashboard_has_the_panels_and_operations_md_shows_their_promql() -> None:
    panels = panel_expressions(dashboard())
    for title_part, metric in _PANELS.items():
        matching = [t for t in panels if title_part.lower() in t.lower()]
        assert matching, f"no panel titled like {title_part!r}"
        assert any(metric in metric_names(e) for t in matching for e in panels[t]), title_part
    doc = _OPERATIONS.read_text()
    for title, exprs in panels.items():
        assert f"**{title}**" in doc, title
        for expr in exprs:
            assert f"\n{expr}\n" in doc, f"{title}: {expr} is not in docs/OPERATIONS.md"
