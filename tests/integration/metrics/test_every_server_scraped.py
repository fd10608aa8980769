"""Every server an operator runs, with ``--metrics 127.0.0.1:0``, scraped by one real
Prometheus (#73): mq9-dev-broker, mq9-wake, mq9-a2a-gateway, mq9-mcp over HTTP and the
console. Each answers on the operator's address only (its tenants' port has no /metrics), each
is up in Prometheus, the calls made through the gateway and MCP are counted by method and tool,
and every query of the Grafana dashboard in docs/ names a metric these servers export."""

from __future__ import annotations

import json
import re
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync
from tests.platform.metrics.operator_support import (
    NO_PROMETHEUS,
    PROMETHEUS,
    WAKE,
    Prometheus,
    Server,
    exported,
    scrape,
)

pytestmark = pytest.mark.slow  # processes: five servers and prometheus

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\bmq9_[a-z0-9_]+")


def dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = set(METRIC.findall(target["expr"]))
            # (Prometheus' own up{job=...}: whether it scraped each server)
            assert found or target["expr"].startswith("up{"), f"{panel['title']}: no metric"
            names |= found
    return names


def _post(url: str, body: dict, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Stay(urllib.request.HTTPRedirectHandler):
    """A redirect is the answer (the console sends a person without a session to its login
    page: that page is no /metrics)."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_Stay)


def _get_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers or {}),
                          timeout=60) as answer:  # fmt: skip
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_status(url: str, want: int, headers: dict[str, str] | None = None) -> None:
    until_sync(
        lambda: _get_status(url, headers) == want,
        timeout=120,
        what=f"{url} answering {want}",
        every=0.2,
        ignoring=(OSError,),
    )


@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_one_prometheus_scrapes_every_server_and_the_dashboard_names_what_they_export(tmp_path):
    servers: list[Server] = []
    prometheus = None
    try:
        nats_port = unclaimed_port()
        broker = Server([sys.executable, "-m", "mq9_broker", "--announce",
                         "--port", str(nats_port), "--metrics", "127.0.0.1:0"])  # fmt: skip
        servers.append(broker)
        urls = {"mq9-broker": broker.metrics_url()}
        _wait_status(urls["mq9-broker"].replace("/metrics", "/readyz"), 200)
        nats = f"nats://127.0.0.1:{nats_port}"

        waker = Server([*WAKE, "--server", nats, "--metrics", "127.0.0.1:0"])
        servers.append(waker)
        urls["mq9-wake"] = waker.metrics_url()

        token = secrets.token_hex(16)
        (tmp_path / "tokens.json").write_text(json.dumps({"app": token}))
        gateway_port = unclaimed_port()
        gateway = Server([sys.executable, "-m", "mq9_platform.a2a.gateway.cli", "--server", nats,
                          "--agent", "agent.echo", "--listen", f"127.0.0.1:{gateway_port}",
                          "--tokens-file", str(tmp_path / "tokens.json"), "--send-wait", "0.5",
                          "--metrics", "127.0.0.1:0"])  # fmt: skip
        servers.append(gateway)
        urls["mq9-gateway"] = gateway.metrics_url()

        mcp_port = unclaimed_port()
        mcp = Server([sys.executable, "-m", "mq9_mcp", "--server", nats, "--transport",
                      "http", "--port", str(mcp_port), "--metrics", "127.0.0.1:0"])  # fmt: skip
        servers.append(mcp)
        urls["mq9-mcp"] = mcp.metrics_url()

        console_port = unclaimed_port()
        console = Server([sys.executable, "-m", "mq9_cli", "--server", nats, "console",
                          "--port", str(console_port), "--metrics", "127.0.0.1:0"])  # fmt: skip
        servers.append(console)
        urls["mq9-console"] = console.metrics_url()

        # traffic: an A2A call through the gateway, an MCP session and a tool call, a page
        agent = f"http://127.0.0.1:{gateway_port}/a2a/agent.echo"
        auth = {"Authorization": f"Bearer {token}", "A2A-Version": "1.0"}
        _wait_status(agent + "/.well-known/agent-card.json", 200, auth)
        status, answer = _post(agent, {
            "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"messageId": "m1", "role": "ROLE_USER",
                                   "parts": [{"text": "hi"}]}},
        }, auth)  # fmt: skip
        assert status == 200 and b"TASK_STATE_SUBMITTED" in answer, answer
        mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
        accept = {"Accept": "application/json, text/event-stream"}
        status, _ = _post(mcp_url, {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "1"}},
        }, accept)  # fmt: skip
        assert status == 200
        assert _get_status(f"http://127.0.0.1:{console_port}/login") == 200

        # the tenants' ports serve no /metrics: only the operator's address does
        assert _get_status(f"http://127.0.0.1:{gateway_port}/metrics", auth) == 404
        assert _get_status(f"http://127.0.0.1:{console_port}/metrics") in (303, 401, 404)
        for url in urls.values():
            _wait_status(url.replace("/metrics", "/readyz"), 200)

        prometheus = Prometheus(tmp_path, urls)
        for job in urls:
            assert prometheus.wait_for(f'up{{job="{job}"}}', 1) == 1
        assert prometheus.wait_for(
            'mq9_gateway_rpc_calls_total{method="SendMessage"}', 1) >= 1  # fmt: skip
        assert prometheus.wait_for(
            'mq9_gateway_task_states_total{state="TASK_STATE_SUBMITTED"}', 1) >= 1  # fmt: skip
        assert prometheus.wait_for('mq9_mcp_rpc_calls_total{method="initialize"}', 1) >= 1
        assert prometheus.wait_for('mq9_console_http_requests_total{route="login"}', 1) >= 1
        assert prometheus.wait_for("mq9_mcp_sessions", 1) >= 1

        names: set[str] = set()
        for url in urls.values():
            names |= exported(scrape(url))
        # (the nats-servers as a broker given --nats-monitor reads them: scraped from a
        # 3-node cluster's brokers in test_nats_servers_watched.py)
        missing = {n for n in dashboard_metrics() - names if not n.startswith("mq9_nats_")}
        assert not missing, f"the dashboard names metrics nobody exports: {sorted(missing)}"
        # and Prometheus itself knows each of them (it scraped them)
        found = prometheus.query('count by (__name__) ({__name__=~"mq9_.+"})')
        known = {series["metric"]["__name__"] for series in found}
        assert known and known <= names, sorted(known - names)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for server in reversed(servers):
            server.stop()


def test_every_dashboard_query_names_an_mq9_metric():
    assert len(dashboard_metrics()) >= 20


@pytest.mark.parametrize(
    "argv, said",
    [
        ([sys.executable, "-m", "mq9_platform.a2a.gateway.cli", "--server", "nats://127.0.0.1:1",
          "--agent", "a", "--metrics", "nohost:"], "mq9-a2a-gateway: --metrics 'nohost:'"),
        ([sys.executable, "-m", "mq9_mcp", "--server", "nats://127.0.0.1:1", "--transport",
          "http", "--port", str(unclaimed_port()), "--metrics", "1:99999"],
         "mq9-mcp: --metrics '1:99999'"),
        ([sys.executable, "-m", "mq9_cli", "--server", "nats://127.0.0.1:1", "console",
          "--metrics", "x:y"], "--metrics 'x:y': [HOST:]PORT"),
    ],
)  # fmt: skip
def test_a_wrong_metrics_address_is_one_line_on_every_http_server(argv, said):
    import subprocess

    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, out
    assert said in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len([line for line in out.stderr.splitlines() if "--metrics" in line]) == 1
