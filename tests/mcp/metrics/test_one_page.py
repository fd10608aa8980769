"""#99 item 3: one cause, one page. packaging/prometheus/alertmanager.yml passes ``amtool
check-config``, every alert of mq9-alerts.yml has a runbook saying what to do (and
docs/deploy.md a section of it), and a real Alertmanager (Debian's prometheus-alertmanager)
with the shipped config, its receivers' URLs put to a webhook of the test's, turns the alerts
of an outage into one page naming the cause:

- a lost quorum (2 of 3 nats-servers killed: round 3 paged 10 times) as mq9-alerts.yml raises
  it: the cause, Mq9ClusterStoreNotAnswering, first (its 30 s, before the others' 1 m:
  mq9-alerts.test.yml's last case), then what it explains: both servers down, six servers not
  ready, no meta leader, the survivor unhealthy. One page, the cause's; the rest held back
  (Alertmanager's API says each is suppressed, inhibited by the cause);
- a lost server: Mq9NatsServerDown pages, its peer's lag and the others' health are held back;
- (#107) the last broker lost, the first one's Mq9ServerDown paged before: Mq9NoBrokerServing
  pages, once; the servers' readiness and the last broker's Mq9ServerDown are held back, also
  when the first broker's group, which the last one's joins, is flushed again (round 9: that
  flush paged Mq9ServerDown a second time, 165 s after the readiness page).

"Nothing else paged" is read from order, not time: an alert no rule holds back, sent after the
outage's, pages after them (its own group_wait, started later), so once its page came, any
page of the outage's would have come before it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

pytestmark = pytest.mark.slow  # Alertmanager and amtool, processes

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "packaging" / "prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")
MISSING = (
    "needs Debian's prometheus-alertmanager (alertmanager and amtool): "
    "apt-get install prometheus-alertmanager (.ci/run does, as root)"
)
WAIT = 120  # seconds: a hang guard, never a timing assertion


def _rules() -> dict[str, dict]:
    rules = yaml.safe_load((SHIPPED / "mq9-alerts.yml").read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def test_every_alert_says_what_to_do():
    watching = (ROOT / "docs" / "broker-watching.md").read_text()
    runbooks = watching.split("\n## When an alert fires\n", 1)[1].split("\n## ", 1)[0]
    for name, rule in _rules().items():
        annotations = rule["annotations"]
        assert len(annotations.get("runbook", "")) > 40, name
        assert f"**`{name}`**" in runbooks, f"docs/broker-watching.md has no runbook for {name}"
        assert rule["labels"]["severity"] in ("critical", "warning"), name


@pytest.mark.skipif(AMTOOL is None, reason=MISSING)
def test_amtool_passes_the_shipped_config():
    done = subprocess.run([AMTOOL, "check-config", "alertmanager.yml"], cwd=SHIPPED,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


class Receiver:
    """The pager and the ticket system: every notification Alertmanager posts, by path."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", unclaimed_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def names(self, path: str) -> list[list[str]]:
        """Each firing notification to ``path``: its alerts' names."""
        return [
            sorted({a["labels"]["alertname"] for a in n["alerts"]})
            for p, n in list(self.got)
            if p == path and n["status"] == "firing"
        ]


class Alertmanager:
    """Debian's Alertmanager on the shipped config, its receivers the test's."""

    def __init__(self, tmp: Path, receiver: Receiver, *options: str) -> None:
        config = (SHIPPED / "alertmanager.yml").read_text()
        config = config.replace("http://127.0.0.1:9099", receiver.url)
        (tmp / "alertmanager.yml").write_text(config)
        self.port = unclaimed_port()
        self.log = tmp / "alertmanager.log"
        assert ALERTMANAGER is not None
        self.argv = [
            ALERTMANAGER, f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=", *options,
        ]  # fmt: skip

    def __enter__(self) -> Alertmanager:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        until_sync(self._ready, timeout=WAIT, what="Alertmanager ready", every=0.2,
                   show=self.log.read_text)  # fmt: skip
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def fire(self, *alerts: dict[str, str]) -> None:
        """``alerts`` (their labels) firing, as Prometheus sends them: the rule's labels and
        annotations with the series' labels."""
        rules = _rules()
        now = datetime.now(UTC).isoformat()
        sent = []
        for labels in alerts:
            rule = rules[labels["alertname"]]
            annotations = {k: v for k, v in rule["annotations"].items() if "{{" not in v}
            sent.append({"labels": {**rule["labels"], **labels}, "annotations": annotations,
                         "startsAt": now})  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v2/alerts", data=json.dumps(sent).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200

    def states(self) -> dict[str, set[str]]:
        """Each alert name and the states its alerts are in (active, suppressed)."""
        url = f"http://127.0.0.1:{self.port}/api/v2/alerts"
        with urllib.request.urlopen(url, timeout=30) as answer:
            found = json.loads(answer.read())
        states: dict[str, set[str]] = {}
        for alert in found:
            state = alert["status"]["state"]
            if state == "suppressed":
                assert alert["status"]["inhibitedBy"], alert
            states.setdefault(alert["labels"]["alertname"], set()).add(state)
        return states


def _pages_until(receiver: Receiver, path: str, last: str) -> list[list[str]]:
    until_sync(lambda: any(last in n for n in receiver.names(path)), timeout=WAIT,
               what=f"{last}'s notification to {path}", every=0.2,
               show=lambda: receiver.got)  # fmt: skip
    return receiver.names(path)


@pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)
def test_a_lost_quorum_pages_once_naming_its_cause(tmp_path):
    receiver = Receiver()
    receiver.thread.start()
    try:
        with Alertmanager(tmp_path, receiver) as manager:
            began = time.monotonic()
            # the cause first (its 30 s), then what it explains (their 1 m)
            manager.fire({"alertname": "Mq9ClusterStoreNotAnswering", "job": "mq9-broker"})
            context = [
                {"alertname": "Mq9NatsServerDown", "job": "mq9-broker", "server": "n2:8222"},
                {"alertname": "Mq9NatsServerDown", "job": "mq9-broker", "server": "n3:8222"},
                *({"alertname": "Mq9ServerNotReady", "job": job, "instance": instance}
                  for job, instance in (("mq9-broker", "b1:9464"), ("mq9-broker", "b2:9469"),
                                        ("mq9-wake", "w:9465"), ("mq9-gateway", "g:9466"),
                                        ("mq9-mcp", "m:9467"), ("mq9-console", "c:9468"))),
                {"alertname": "Mq9JetStreamMetaLeaderLost", "job": "mq9-broker"},
                {"alertname": "Mq9NatsServerUnhealthy", "job": "mq9-broker", "server": "n1:8222"},
            ]  # fmt: skip
            manager.fire(*context)
            first = _pages_until(receiver, "/page", "Mq9ClusterStoreNotAnswering")
            paged_after = round(time.monotonic() - began, 1)
            # an alert nothing holds back, after them: its page comes after any of theirs
            manager.fire({"alertname": "Mq9ServerDown", "job": "mq9-mcp", "instance": "m:9467"})
            pages = _pages_until(receiver, "/page", "Mq9ServerDown")
            assert pages == [["Mq9ClusterStoreNotAnswering"], ["Mq9ServerDown"]], pages
            assert receiver.names("/ticket") == []  # the warning held back too
            [cause] = [n for p, n in receiver.got if p == "/page"][:1]
            [alert] = cause["alerts"]
            assert "quorum" in alert["annotations"]["summary"], alert
            assert "nats-server" in alert["annotations"]["runbook"], alert
            states = manager.states()
            assert states.pop("Mq9ClusterStoreNotAnswering") == {"active"}
            assert states.pop("Mq9ServerDown") == {"active"}
            assert states and all(s == {"suppressed"} for s in states.values()), states
            print(f"\nlost quorum: {len(context) + 1} alerts, 1 page ({first}) "
                  f"{paged_after} s after the cause reached Alertmanager")  # fmt: skip
    finally:
        receiver.server.shutdown()


@pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)
def test_a_lost_server_pages_once(tmp_path):
    receiver = Receiver()
    receiver.thread.start()
    try:
        with Alertmanager(tmp_path, receiver) as manager:
            manager.fire(
                {"alertname": "Mq9NatsServerDown", "job": "mq9-broker", "server": "n2:8222"},
                {"alertname": "Mq9JetStreamPeerBehind", "job": "mq9-broker", "peer": "n2"},
                {"alertname": "Mq9NatsServerUnhealthy", "job": "mq9-broker", "server": "n1:8222"},
                {"alertname": "Mq9NatsServerUnhealthy", "job": "mq9-broker", "server": "n3:8222"},
            )
            manager.fire({"alertname": "Mq9DeadLettersGrowing", "job": "mq9-broker"})
            tickets = _pages_until(receiver, "/ticket", "Mq9DeadLettersGrowing")
            assert tickets == [["Mq9DeadLettersGrowing"]], tickets  # no lag, no health ticket
            pages = _pages_until(receiver, "/page", "Mq9NatsServerDown")
            assert pages == [["Mq9NatsServerDown"]], pages
            states = manager.states()
            assert states["Mq9JetStreamPeerBehind"] == {"suppressed"}
            assert states["Mq9NatsServerUnhealthy"] == {"suppressed"}
    finally:
        receiver.server.shutdown()


def _flushed(log: Path, group: str, alerts: int) -> bool:
    """Whether Alertmanager (``--log.level=debug``) flushed the group of ``group`` holding
    ``alerts`` alerts: what it does at each group_interval, sending what is not held back."""
    return any(
        "msg=flushing" in line
        and f'alertname=\\"{group}\\"' in line
        and line.split(" alerts=", 1)[1].count(f"{group}[") == alerts
        for line in log.read_text().splitlines()
    )


@pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)
def test_the_last_broker_lost_pages_once_naming_it(tmp_path):
    receiver = Receiver()
    receiver.thread.start()
    first = {"alertname": "Mq9ServerDown", "job": "mq9-broker", "instance": "b1:9464"}
    try:
        with Alertmanager(tmp_path, receiver, "--log.level=debug") as manager:
            manager.fire(first)  # the first broker lost: its page
            assert _pages_until(receiver, "/page", "Mq9ServerDown") == [["Mq9ServerDown"]]
            # the last one: the cause first (its 30 s), then what it explains (their 1 m)
            manager.fire({"alertname": "Mq9NoBrokerServing", "job": "mq9-broker"})
            manager.fire(
                first,
                {"alertname": "Mq9ServerDown", "job": "mq9-broker", "instance": "b2:9469"},
                *({"alertname": "Mq9ServerNotReady", "job": job, "instance": instance}
                  for job, instance in (("mq9-wake", "w:9465"), ("mq9-gateway", "g:9466"),
                                        ("mq9-mcp", "m:9467"), ("mq9-console", "c:9468"))),
                {"alertname": "Mq9BrokerNotServing", "job": "mq9-broker", "instance": "b3:9464"},
            )  # fmt: skip
            pages = _pages_until(receiver, "/page", "Mq9NoBrokerServing")
            assert pages == [["Mq9ServerDown"], ["Mq9NoBrokerServing"]], pages
            # the first broker's group, the last one's alert in it, flushed again (its
            # group_interval after its page): nothing of it pages
            until_sync(lambda: _flushed(manager.log, "Mq9ServerDown", 2), timeout=WAIT,
                       what="the brokers' Mq9ServerDown group flushed again", every=0.5,
                       show=manager.log.read_text)  # fmt: skip
            # an alert nothing holds back, in a group of its own, after them: pages after
            manager.fire({"alertname": "Mq9NatsServerDown", "job": "x", "server": "x"})
            pages = _pages_until(receiver, "/page", "Mq9NatsServerDown")
            assert pages == [["Mq9ServerDown"], ["Mq9NoBrokerServing"], ["Mq9NatsServerDown"]]
            [paged] = [n for p, n in receiver.got if p == "/page"][1]["alerts"]
            assert "no mq9 broker is serving" in paged["annotations"]["summary"], paged
            assert "systemctl start mq9-dev-broker" in paged["annotations"]["runbook"], paged
            states = manager.states()
            assert states.pop("Mq9NoBrokerServing") == {"active"}
            assert states.pop("Mq9NatsServerDown") == {"active"}
            assert states == {"Mq9ServerDown": {"suppressed"}, "Mq9ServerNotReady": {"suppressed"},
                              "Mq9BrokerNotServing": {"suppressed"}}, states  # fmt: skip
            assert receiver.names("/ticket") == []
    finally:
        receiver.server.shutdown()
