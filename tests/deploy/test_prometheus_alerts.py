"""deploy/prometheus/agentd-alerts.yml names only metrics agentd exports (a renamed or removed
metric, like agentd_decisions_per_second, must not leave an alert that never fires)."""

from __future__ import annotations

import re

import yaml
from prometheus_client import Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentd.metrics import AgentdMetrics
from tests.harness import REPO

ALERTS = REPO / "deploy" / "prometheus" / "agentd-alerts.yml"


def exported() -> set[str]:
    """Every sample name agentd's registry can export (histogram parts and all)."""
    metrics = AgentdMetrics()
    # one child per labelled metric, so that every family shows its samples
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Histogram):
            metric.labels(*["x"] * len(metric._labelnames))
    metrics.observe_fleet([{"agent": "a", "desired": 1, "replicas": [{"state": "running"}]}])
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_metric_an_alert_names_exists() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)
    names = exported()
    used = {m for r in rules for m in re.findall(r"\bagentd_[a-z_]+", r["expr"])}
    assert used, "no agentd metric in the alerts"
    assert used <= names, f"alerts name metrics agentd does not export: {sorted(used - names)}"
