"""The Prometheus files shipped in packaging/prometheus/ (#78): the scrape config and the
alerting rules pass ``promtool check``, the rules' own tests pass ``promtool test rules`` (each
alert fires on what should fire it and stays quiet beside it), and the config scrapes every
server docs/deploy.md's walk-through under systemd installs, on the port its unit gives it (the
others commented out), each alert on a metric a server exports. promtool comes with Debian's
prometheus package; without it these skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.mcp.metrics.walk_through import metrics_port, walk_through
from tests.platform.metrics.operator_support import every_server

pytestmark = pytest.mark.slow  # promtool, a process

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "packaging" / "prometheus"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is missing (Debian's prometheus package ships it)"
# the documented deployment: each server's job and its --metrics ports (docs/deploy.md: the
# second broker's, 9469, on the machine of the first)
PORTS = {
    "mq9-broker": [9464, 9469],
    "mq9-wake": [9465],
    "mq9-gateway": [9466],
    "mq9-mcp": [9467],
    "mq9-console": [9468],
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=SHIPPED, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "mq9-alerts.yml"),
        ("test", "rules", "mq9-alerts.test.yml"),
    ],
)
def test_promtool_passes_the_shipped_files(args):
    out = _promtool(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def _jobs(text: str) -> dict[str, list[int]]:
    """Each job of a prometheus.yml and its targets' ports."""
    return {
        job["job_name"]: [
            int(target.rsplit(":", 1)[1])
            for static in job["static_configs"]
            for target in static["targets"]
        ]
        for job in yaml.safe_load(text)["scrape_configs"]
    }


def test_the_scrape_config_scrapes_what_the_walk_through_installs():
    """(#107) the jobs scraped are the ports of the units docs/deploy.md's walk-through
    installs, no more (round 9: the waker, the gateway and MCP, never installed, paged by 85 s,
    and a second broker no unit ships was scraped); those of its optional block are there
    commented out, and uncommented as their comment says (with the second broker on the same
    machine added) the file scrapes every server of the documented deployment."""
    done = walk_through()
    installed: dict[str, list[int]] = {}
    optional: dict[str, list[int]] = {}
    for units, into in ((done.installed, installed), (done.optional, optional)):
        for unit in units - {"nats-server@.service"}:  # the brokers read the nats-servers
            job, port = metrics_port(unit)
            into.setdefault(job, []).append(port)
    shipped = (SHIPPED / "prometheus.yml").read_text()
    assert _jobs(shipped) == installed == {"mq9-broker": [9464], "mq9-console": [9468]}
    every = _jobs(every_server(shipped))
    assert {job: every[job] for job in optional} == optional
    assert every == PORTS
    pages = ("deploy.md", "deploy-systemd.md")
    deploy = "".join((ROOT / "docs" / page).read_text() for page in pages)
    for job, ports in PORTS.items():
        for port in ports:
            assert f"--metrics {port}" in deploy, f"deploy.md does not give {job} port {port}"


def test_every_alert_reads_a_metric_the_servers_export():
    from tests.integration.metrics.test_every_server_scraped import (
        dashboard_metrics,  # what the servers export, held
    )

    rules = yaml.safe_load((SHIPPED / "mq9-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} >= {
        "Mq9ServerDown", "Mq9BrokerNotServing", "Mq9ServerNotReady",
        "Mq9ClusterStoreNotAnswering", "Mq9WakesSetAside", "Mq9DeadLettersGrowing",
        "Mq9RefusalsSpiking", "Mq9McpSessionsTurnedAway",
    }  # fmt: skip
    tested = (SHIPPED / "mq9-alerts.test.yml").read_text()
    exported = (
        dashboard_metrics()
        | {f"mq9_{server}_ready" for server in ("broker", "wake", "gateway", "mcp", "console")}
        | {"mq9_broker_store_answered", "mq9_broker_store_writes_answered"}  # jetstream store
    )
    for rule in alerts:
        assert f"alertname: {rule['alert']}" in tested, f"{rule['alert']} has no test"
        named = set(re.findall(r"\bmq9_[a-z0-9_]+", rule["expr"])) - {"mq9_"}
        named = {name.removesuffix("_total") for name in named}
        for name in named:
            if "(" in name or name.endswith("_"):
                continue
            assert name in {n.removesuffix("_total") for n in exported}, (rule["alert"], name)
