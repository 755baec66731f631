"""infra/: alert rules, the Grafana dashboard, Kubernetes and KEDA manifests, docker compose.

Every metric the rules and the dashboard name must be one the exporter serves
(streams/telemetry/metrics.py), and every llmops_* family must be on the dashboard: they cannot
drift apart. PromQL is parsed with promql-parser (promtool is not available here). KEDA objects are
CRDs, outside kubernetes-validate's schemas (`make lint` validates the rest): a JSON schema with the
fields of KEDA v2's ScaledObject and TriggerAuthentication that we use checks them here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
import yaml

from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.telemetry.metrics import METRIC_FAMILIES, sample_names
from streams.worker_process import ALL_AGENTS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "llmops.json"
K8S = ROOT / "infra" / "k8s"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (it must parse as PromQL)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()
    promql_parser.walk(
        promql_parser.parse(expr),
        lambda node: names.add(node.name) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def test_the_metric_names_parse_out_of_promql() -> None:
    assert metric_names("sum by (stage) (rate(a_total[$__rate_interval])) / on (stage) group_left b") == {
        "a_total",
        "b",
    }
    with pytest.raises(ValueError):
        metric_names("0.05 * on (stage) group_left sum(rate(a_total[5m]))")  # scalar with vector matching


def test_alert_rules_are_well_formed_and_name_exported_metrics() -> None:
    exported = sample_names()
    assert {rule["alert"] for rule in rules()} >= {
        "LlmopsConsumerLagGrowing",
        "LlmopsDeadLetterRate",
        "LlmopsWorkerNotReady",
        "LlmopsDriftAboveThreshold",
        "LlmopsRequestLatencyP99",
    }
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        names = metric_names(rule["expr"])
        assert names and names <= exported, (rule["alert"], names - exported)


def test_the_dashboard_names_exported_metrics_and_shows_every_family() -> None:
    exported = sample_names()
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names and names <= exported, (expr, names - exported)
        used |= names
    families = {name for name in METRIC_FAMILIES if name.startswith("llmops_")}
    shown = {family for family in families if any(name.startswith(family) for name in used)}
    assert shown == families
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)


def test_one_deployment_per_agent_group_with_probes_on_the_sre_port() -> None:
    port = Settings.model_fields["sre_port"].default
    deployments = {doc["metadata"]["name"]: doc for doc in documents("workers.yaml")}
    assert set(deployments) == {f"llmops-{group}" for group in ALL_AGENTS}
    for group in ALL_AGENTS:
        pod = deployments[f"llmops-{group}"]["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["args"] == ["worker", "--agents", group]
        assert container["ports"] == [{"name": "sre", "containerPort": port, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "sre"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "sre"}
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    config = {doc["kind"]: doc for doc in documents("config.yaml")}
    assert config["ConfigMap"]["data"]["LLMOPS_SRE_PORT"] == str(port)
    assert {"LLMOPS_BOOTSTRAP_SERVERS", "LLMOPS_MILVUS_URI"} <= config["ConfigMap"]["data"].keys()
    assert "PLACEHOLDER" in (K8S / "config.yaml").read_text()
    assert set(config["Secret"]["stringData"].values()) <= {"change-me", "scram_sha512", "enable"}


SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "kafka"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                            # KEDA's Kafka scaler: every metadata value is a string.
                            "metadata": {
                                "type": "object",
                                "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"],
                                "additionalProperties": {"type": "string"},
                                "propertyNames": {
                                    "enum": [
                                        "bootstrapServers",
                                        "consumerGroup",
                                        "topic",
                                        "lagThreshold",
                                        "activationLagThreshold",
                                        "offsetResetPolicy",
                                        "allowIdleConsumers",
                                        "excludePersistentLag",
                                        "limitToPartitionsWithLag",
                                    ]
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "spec": {
            "type": "object",
            "required": ["secretTargetRef"],
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {
                            "parameter": {"enum": ["sasl", "username", "password", "tls", "ca", "cert", "key"]},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                }
            },
        },
    },
}


def test_keda_scales_each_consumer_group_on_its_own_lag() -> None:
    docs = documents("keda.yaml")
    live = Topics("")
    secret = next(doc for doc in documents("config.yaml") if doc["kind"] == "Secret")
    config = next(doc for doc in documents("config.yaml") if doc["kind"] == "ConfigMap")["data"]
    (auth,) = [doc for doc in docs if doc["kind"] == "TriggerAuthentication"]
    jsonschema.validate(auth, TRIGGER_AUTHENTICATION)
    assert {ref["key"] for ref in auth["spec"]["secretTargetRef"]} <= secret["stringData"].keys()
    expected = {
        "ingest": (live.app_id("ingest"), live.docs_raw),
        "embed": (live.app_id("embed"), live.docs_clean),
        "index": (live.app_id("index"), live.docs_embeddings),
        "infer": (live.requests_group("infer"), live.inference_requests),
    }
    scaled = [doc for doc in docs if doc["kind"] == "ScaledObject"]
    assert len(scaled) + 1 == len(docs)
    seen = {}
    for doc in scaled:
        jsonschema.validate(doc, SCALED_OBJECT)
        (trigger,) = doc["spec"]["triggers"]
        group = doc["spec"]["scaleTargetRef"]["name"].removeprefix("llmops-")
        seen[group] = (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"])
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert trigger["metadata"]["bootstrapServers"] == config["LLMOPS_BOOTSTRAP_SERVERS"]
        assert doc["spec"]["maxReplicaCount"] == int(config["LLMOPS_PARTITIONS"])
    assert seen == expected  # monitor: one worker per namespace, never scaled out


def test_a_keda_object_with_a_typo_fails_the_schema() -> None:
    doc = next(doc for doc in documents("keda.yaml") if doc["kind"] == "ScaledObject")
    doc["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCALED_OBJECT)


def test_compose_runs_every_agent_group_with_a_healthcheck_on_healthz() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())["services"]
    workers = {name: spec for name, spec in services.items() if spec.get("command", [None])[0] == "worker"}
    assert sorted(spec["command"][2] for spec in workers.values()) == sorted(ALL_AGENTS)
    for name, spec in workers.items():
        assert "/healthz" in " ".join(spec["healthcheck"]["test"]), name
