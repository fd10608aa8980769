"""#99 item 3, end to end: a lost quorum pages once, naming its cause; a lost server once.
Three JetStream nats-servers (monitored), the broker on them as an operator runs it
(``mq9-dev-broker --store jetstream --metrics --nats-monitor``, its console with
``--console-metrics``), a real Prometheus scraping both with the shipped rules at the shipped
intervals (15 s), and a real Alertmanager with the shipped config.

Two of the three servers SIGKILLed: the one page is Mq9ClusterStoreNotAnswering; what it
explains (both servers down, the broker and the console not ready, no meta leader) fires too and
is held back. One of the three SIGKILLed: the one page is Mq9NatsServerDown, its peer's lag
held back, nothing else.

What it took from the kill to the page is printed (the issue asks for 90 s), never asserted.
"Nothing else paged" is read from order, as in test_one_page.py: once every alert of the
outage is in Alertmanager, an alert nothing holds back, sent after them, pages after any of
theirs would have."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving
from testbed.support.waiting import until_sync
from tests.cli.metrics.test_nats_servers_watched import MONITORED, _monitor
from tests.mcp.metrics.test_one_page import (
    ALERTMANAGER,
    MISSING,
    Alertmanager,
    Receiver,
    _pages_until,
)
from tests.platform.metrics.operator_support import (
    NO_PROMETHEUS,
    PROMETHEUS,
    Prometheus,
    metrics_url,
)

pytestmark = [
    pytest.mark.slow,  # three nats-servers, a broker, Prometheus, Alertmanager
    pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS),
    pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING),
]
ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "packaging" / "prometheus"
WAIT = 300  # seconds: a hang guard, never a timing assertion
CONTEXT = {"Mq9NatsServerDown", "Mq9ServerNotReady", "Mq9JetStreamMetaLeaderLost"}


def _config(broker: str, console: str, alertmanager: int) -> str:
    """The shipped prometheus.yml's intervals and rules, its targets the test's servers."""
    shipped = (SHIPPED / "prometheus.yml").read_text()
    head = shipped.split("scrape_configs:", 1)[0].replace("127.0.0.1:9093",
                                                         f"127.0.0.1:{alertmanager}")  # fmt: skip
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        for job, target in (("mq9-broker", broker), ("mq9-console", console))
    )
    return head + "scrape_configs:\n" + jobs


# each outage: how many of the three servers are killed, the one page it raises, and what must
# reach Alertmanager (held back) before the page of an alert sent after them shows no other
OUTAGES = {
    "quorum": (2, "Mq9ClusterStoreNotAnswering", CONTEXT),
    "server": (1, "Mq9NatsServerDown", {"Mq9JetStreamPeerBehind"}),
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_an_outage_pages_once_on_a_real_cluster(tmp_path, outage):
    killing, cause, context = OUTAGES[outage]
    receiver = Receiver()
    receiver.thread.start()
    (tmp_path / "mq9-alerts.yml").write_text((SHIPPED / "mq9-alerts.yml").read_text())
    try:
        with (
            JetStreamCluster(3, extra_config=MONITORED) as cluster,
            Alertmanager(tmp_path, receiver) as manager,
        ):
            monitors = ",".join(f"http://{_monitor(s.home)}" for s in cluster.servers)
            args = ["--nats", ",".join(cluster.urls), "--store", "jetstream", "--no-search",
                    "--metrics", "127.0.0.1:0", "--nats-monitor", monitors,
                    "--console", "127.0.0.1:0", "--console-metrics", "127.0.0.1:0"]  # fmt: skip
            with DevBroker(*args, env=_env()) as broker:
                wait_serving(broker)
                lines = [*broker.stdout, *broker.stderr]
                broker_at = metrics_url(lines, "mq9 dev broker").split("/")[2]
                console_at = _console_metrics(broker)
                config = _config(broker_at, console_at, manager.port)
                prometheus = Prometheus(tmp_path, {}, config_text=config)
                try:
                    prometheus.wait_for("min(mq9_broker_store_writes_answered)", 1)
                    prometheus.wait_for("min(mq9_console_ready)", 1)
                    assert not prometheus.query('ALERTS{alertstate="firing"}')
                    for server in cluster.servers[1 : 1 + killing]:
                        server.kill()
                    killed = time.monotonic()
                    first = _pages_until(receiver, "/page", cause)
                    paged_after = round(time.monotonic() - killed, 1)
                    assert first == [[cause]], first

                    def explained() -> bool:  # what the cause explains, in Alertmanager
                        return context <= set(manager.states())

                    until_sync(explained, timeout=WAIT, what="the outage's other alerts",
                               every=1, show=manager.states)  # fmt: skip
                    manager.fire({"alertname": "Mq9ServerDown", "job": "x", "instance": "x"})
                    pages = _pages_until(receiver, "/page", "Mq9ServerDown")
                    assert pages == [[cause], ["Mq9ServerDown"]], pages
                    states = manager.states()
                    held = {name: s for name, s in states.items()
                            if name not in (cause, "Mq9ServerDown")}  # fmt: skip
                    assert held and all(s == {"suppressed"} for s in held.values()), states
                    print(f"\n{killing} of 3 servers lost on a real cluster: one page ({cause}) "
                          f"{paged_after} s after the kill; held back: {sorted(held)}")  # fmt: skip
                finally:
                    prometheus.stop()
                broker.stop()
    finally:
        receiver.server.shutdown()


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "MQ9_CONSOLE_TOKEN": "t" * 32}


def _console_metrics(broker: DevBroker) -> str:
    """The console's metrics address, as the broker printed it."""

    def printed() -> str | None:
        for line in [*broker.stdout, *broker.stderr]:
            if "console metrics on " in line:
                return line.split(" metrics on ", 1)[1].split()[0].split("/")[2]
        return None

    return until_sync(printed, timeout=WAIT, what="the console's metrics line", every=0.2,
                      show=broker.output)  # fmt: skip
