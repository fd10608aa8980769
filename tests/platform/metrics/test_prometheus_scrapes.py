"""A real Prometheus scrapes ``mq9-dev-broker --metrics`` and ``mq9-wake --metrics`` under
traffic, and the figures are read back through its HTTP API (#73): the SENDs counted, a
refusal by its reason, a wake by target and outcome with its lag from arrival recorded, the
mailboxes, messages and a group's pending count the broker holds."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest
from operator_support import (
    NO_PROMETHEUS,
    PROMETHEUS,
    WAKE,
    Prometheus,
    metrics_url,
    scrape,
    start_waker,
    stop,
)

from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import MailboxNotFound
from testbed.ports import unclaimed_port
from testbed.support.devbroker_helpers import DevBroker

pytestmark = pytest.mark.slow  # processes: the dev broker, a waker, prometheus

SENDS = 25
TRUE = shutil.which("true") or "/bin/true"


def _wake_rule(url: str) -> None:
    added = subprocess.run(
        [*WAKE, "--server", url, "rules", "add", "agent.watched", "--min-interval", "0",
         "--command", TRUE],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


async def _traffic(url: str) -> None:
    async with Mq9Client(url) as client:
        await client.mailbox_create(name="agent.busy")
        for i in range(SENDS):
            await client.send("agent.busy", f"job {i}")
        await client.send("agent.watched", "wake up")
        with pytest.raises(MailboxNotFound):
            await client.send("agent.nobody", "lost")
        taken = await client.fetch(
            "agent.busy", group_name="workers", deliver="earliest", num_msgs=5, max_wait_ms=0
        )
        await client.ack("agent.busy", "workers", taken[-1].msg_id)


@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_prometheus_scrapes_a_broker_and_a_waker_under_traffic(tmp_path):
    broker = DevBroker("--announce", "--port", "0", "--metrics", "127.0.0.1:0")
    waker = prometheus = None
    try:
        broker_metrics = metrics_url(broker.stdout, "mq9 dev broker")
        assert broker_metrics.startswith("http://127.0.0.1:")
        asyncio.run(_create(broker.url))
        _wake_rule(broker.url)
        waker, waker_metrics = start_waker(broker.url, "--allow-command", TRUE)
        prometheus = Prometheus(tmp_path, {"broker": broker_metrics, "waker": waker_metrics})
        asyncio.run(_traffic(broker.url))

        sends = prometheus.wait_for(
            'mq9_broker_requests_total{job="broker",command="SEND",outcome="ok"}', SENDS + 1
        )
        assert sends >= SENDS + 1  # the waker's own state records are SENDs too
        # (the waker's first look at a mailbox it has no state for may be refused so too)
        assert (
            prometheus.wait_for(
                'mq9_broker_refusals_total{command="SEND",reason="mailbox_not_found"}', 1
            )
            >= 1
        )
        assert prometheus.value(
            'mq9_broker_requests_total{command="SEND",outcome="refused"}'
        ) == prometheus.value('sum(mq9_broker_refusals_total{command="SEND"})')
        assert prometheus.wait_for('mq9_broker_mailboxes{job="broker"}', 2) >= 2
        assert prometheus.wait_for("mq9_broker_messages", SENDS + 1) >= SENDS + 1
        assert prometheus.wait_for("mq9_broker_group_pending_messages", SENDS - 5) >= SENDS - 5
        assert (
            prometheus.wait_for(
                'mq9_broker_request_duration_seconds_count{command="SEND"}', SENDS + 1
            )
            >= SENDS + 1
        )
        assert (
            prometheus.wait_for(
                'mq9_wake_wakes_total{job="waker",target="command",outcome="delivered"}', 1
            )
            >= 1
        )
        assert prometheus.wait_for('mq9_wake_lag_seconds_count{target="command"}', 1) >= 1
        lag = prometheus.value('mq9_wake_lag_seconds_sum{target="command"}')
        assert lag is not None and 0 <= lag < 3600  # recorded, from the message's arrival
        assert prometheus.value('up{job="broker"}') == 1
        assert prometheus.value('up{job="waker"}') == 1
        assert prometheus.value("mq9_wake_broker_connected") == 1
        # readiness as a load balancer reads it
        assert scrape(broker_metrics.replace("/metrics", "/readyz")) == "ready\n"
        assert scrape(waker_metrics.replace("/metrics", "/readyz")) == "ready\n"
    finally:
        if prometheus is not None:
            prometheus.stop()
        if waker is not None:
            stop(waker)
        broker.stop()


async def _create(url: str) -> None:
    async with Mq9Client(url) as client:
        await client.mailbox_create(name="agent.watched")


def test_bad_metrics_options_are_one_line(tmp_path):
    busy = unclaimed_port()
    with DevBroker("--port", "0", "--metrics", f"127.0.0.1:{busy}") as holder:
        for argv, said in (
            (["--metrics", "127.0.0.1:99999"], "--metrics '127.0.0.1:99999': [HOST:]PORT"),
            (["--metrics", f"127.0.0.1:{busy}"], "cannot listen there"),
        ):
            refused = DevBroker("--port", "0", *argv, wait=False)
            assert refused.wait_exit() == 1
            last = refused.stderr[-1]
            assert last.startswith("mq9-dev-broker: error: --metrics"), refused.output()
            assert said in refused.stderr[-1] and "Traceback" not in refused.output()
        for argv, said in (
            (["--metrics", "nohost:"], "[HOST:]PORT"),
            (["--metrics", f"127.0.0.1:{busy}"], "cannot listen there"),
        ):
            out = subprocess.run(
                [*WAKE, "--server", holder.url, *argv], capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert out.returncode == 1, out
            assert out.stderr.startswith("mq9-wake: error: --metrics") and said in out.stderr
            assert out.stderr.count("\n") == 1, out.stderr


def test_without_the_extra_each_server_says_so_in_one_line(tmp_path):
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for argv, prog in (
        ([sys.executable, "-m", "mq9_broker", "--port", "0",
          "--metrics", "0"], "mq9-dev-broker"),
        ([*WAKE, "--server", "nats://127.0.0.1:1", "--metrics", "0"], "mq9-wake"),
    ):  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 1, out
        assert out.stderr.startswith(f"{prog}: error: --metrics needs mq9-wire's 'metrics'")
        assert "./wire[metrics]" in out.stderr  # the wire's extra, which every install holds
        assert out.stderr.count("\n") == 1, out.stderr
