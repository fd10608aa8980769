"""#107 item 7, end to end: the last broker lost is one page, naming it, first. A JetStream
nats-server, two brokers on it (``mq9-dev-broker --store jetstream --metrics``) and the console
(``mq9 console --metrics``), scraped by a real Prometheus with the shipped prometheus.yml (its
targets these servers': its own intervals, rules and alerting) and paging through a real
Alertmanager with the shipped config, as docs/deploy.md's operator typed them in round 9.

The first broker stopped: its Mq9ServerDown pages. Then the last one: Mq9NoBrokerServing pages
(round 9: the console's Mq9ServerNotReady paged first, at 89 s, and the cause, the last broker's
Mq9ServerDown, only at 254 s, when the group the first broker's page had made was flushed
again). The console's readiness and the last broker's Mq9ServerDown reach Alertmanager and are
held back, also once that group has been flushed again with both brokers in it (Alertmanager's
debug log says when). Then the last broker started again: Mq9NoBrokerServing's resolved notice.

What each page took, and the resolved notice, are printed, never asserted. "Nothing else
paged" is read from order, as in test_one_page.py."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from testbed.ports import unclaimed_port
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving
from testbed.support.waiting import until_sync
from tests.mcp.metrics.test_one_page import (
    ALERTMANAGER,
    MISSING,
    Alertmanager,
    Receiver,
    _flushed,
    _pages_until,
)
from tests.platform.metrics.operator_support import (
    NO_PROMETHEUS,
    PROMETHEUS,
    Prometheus,
    Server,
    metrics_url,
)

pytestmark = [
    pytest.mark.slow,  # a nats-server, two brokers, the console, Prometheus, Alertmanager
    pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS),
    pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING),
]
ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "packaging" / "prometheus"
WAIT = 300  # seconds: a hang guard, never a timing assertion


def _config(brokers: list[str], console: str, alertmanager: int) -> str:
    """The shipped prometheus.yml, its targets the test's servers (the first broker's the
    walk-through's, the second added as its comment says)."""
    shipped = (SHIPPED / "prometheus.yml").read_text()
    for old, new in (
        ('["127.0.0.1:9464"]', str(brokers)),
        ("127.0.0.1:9468", console),
        ("127.0.0.1:9093", f"127.0.0.1:{alertmanager}"),
    ):
        assert shipped.count(old) == 1, old
        shipped = shipped.replace(old, new)
    return shipped


def _broker(url: str, metrics: str) -> DevBroker:
    args = ["--nats", url, "--store", "jetstream", "--no-search", "--metrics", metrics]
    broker = DevBroker(*args, wait=False)
    wait_serving(broker, WAIT)
    return broker


def _resolved(receiver: Receiver, name: str) -> bool:
    return any(
        n["status"] == "resolved" and name in {a["labels"]["alertname"] for a in n["alerts"]}
        for p, n in list(receiver.got)
        if p == "/page"
    )


def test_the_last_broker_lost_pages_once_naming_it_on_real_servers(tmp_path):
    receiver = Receiver()
    receiver.thread.start()
    (tmp_path / "mq9-alerts.yml").write_text((SHIPPED / "mq9-alerts.yml").read_text())
    brokers: list[DevBroker] = []
    console = None
    prometheus = None
    try:
        with (
            JetStreamCluster(1) as cluster,
            Alertmanager(tmp_path, receiver, "--log.level=debug") as manager,
        ):
            url = cluster.urls[0]
            at = [f"127.0.0.1:{unclaimed_port()}" for _ in range(2)]
            brokers += [_broker(url, at[0]), _broker(url, at[1])]
            for broker, metrics in zip(brokers, at, strict=True):
                assert metrics in metrics_url([*broker.stdout, *broker.stderr], "mq9 dev broker")
            console = Server(
                [sys.executable, "-m", "mq9_cli", "--server", url, "console", "--port",
                 str(unclaimed_port()), "--metrics", "127.0.0.1:0"],
                env={"MQ9_CONSOLE_TOKEN": "t" * 32},
            )  # fmt: skip
            console_at = console.metrics_url().split("/")[2]
            config = _config(at, console_at, manager.port)
            prometheus = Prometheus(tmp_path, {}, config_text=config)
            prometheus.wait_for("count(mq9_broker_serving == 1)", 2)
            prometheus.wait_for("min(mq9_console_ready)", 1)
            assert not prometheus.query('ALERTS{alertstate="firing"}')

            brokers[0].stop()  # the first broker: its own page
            first = _pages_until(receiver, "/page", "Mq9ServerDown")
            assert first == [["Mq9ServerDown"]], first
            brokers[1].stop()  # the last one
            stopped = time.monotonic()
            pages = _pages_until(receiver, "/page", "Mq9NoBrokerServing")
            paged_after = round(time.monotonic() - stopped, 1)
            assert pages == [["Mq9ServerDown"], ["Mq9NoBrokerServing"]], pages

            def explained() -> bool:  # the console's readiness, the last broker's loss
                states = manager.states()
                return states.get("Mq9ServerNotReady") == {"suppressed"} and _flushed(
                    manager.log, "Mq9ServerDown", 2
                )

            until_sync(explained, timeout=WAIT, what="what the cause explains, held back",
                       every=1, show=manager.states)  # fmt: skip
            manager.fire({"alertname": "Mq9NatsServerDown", "job": "x", "server": "x"})
            pages = _pages_until(receiver, "/page", "Mq9NatsServerDown")
            assert pages == [["Mq9ServerDown"], ["Mq9NoBrokerServing"], ["Mq9NatsServerDown"]]
            states = manager.states()
            assert states["Mq9ServerDown"] == {"suppressed"}, states
            said = "the console's readiness and its Mq9ServerDown held back"
            print(f"\nthe last broker lost: one page (Mq9NoBrokerServing) {paged_after} s "
                  f"after it stopped; {said}")  # fmt: skip

            brokers.append(_broker(url, at[1]))  # the fix: the last one serving again
            started = time.monotonic()
            until_sync(lambda: _resolved(receiver, "Mq9NoBrokerServing"), timeout=WAIT,
                       what="Mq9NoBrokerServing's resolved notice", every=0.5,
                       show=lambda: receiver.got)  # fmt: skip
            resolved_after = round(time.monotonic() - started, 1)
            print(f"resolved {resolved_after} s after it served again; "
                  f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    finally:
        if prometheus is not None:
            prometheus.stop()
        if console is not None:
            console.stop()
        for broker in brokers:
            broker.kill()
        receiver.server.shutdown()
