"""Servers run as an operator runs them, with ``--metrics 127.0.0.1:0``, and a real
Prometheus (Debian's ``prometheus`` package) on loopback that scrapes them (#73). Every wait
has one deadline; every process started here is stopped by the test that started it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

DEADLINE = 120.0  # a guard against hangs on a busy 2-core machine, never a timing claim
WAKE = [sys.executable, "-m", "mq9_platform.wake"]
PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = "Debian's prometheus package is not installed (.ci/run installs it as root)"


# (#107) a job of the shipped prometheus.yml left commented out (a server the walk-through
# does not install): its three lines, as an operator uncomments them
OPTIONAL_JOB = re.compile(r"^  # (- job_name: |  static_configs:|    - targets: )", re.M)
# the second broker on one machine (docs/deploy.md's "A first cluster, step by step")
SECOND_BROKER = "127.0.0.1:9469"


def every_server(shipped: str) -> str:
    """The shipped prometheus.yml as an operator running every server of docs/deploy.md's
    deployment makes it, as its comments say: each job left commented out uncommented, and the
    second broker on this machine added to the brokers' job."""
    text = OPTIONAL_JOB.sub(r"  \1", shipped)
    first = '["127.0.0.1:9464"]'
    assert text.count(first) == 1, text
    return text.replace(first, f'["127.0.0.1:9464", "{SECOND_BROKER}"]')


def metrics_url(lines: list[str], said: str) -> str:
    """The scrape URL a server printed (``... metrics on http://H:P/metrics ...``)."""
    for line in lines:
        if said in line and " metrics on " in line:
            return line.split(" metrics on ", 1)[1].split()[0]
    raise AssertionError(f"no metrics line in {lines!r}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


def names_in(text: str) -> set[str]:
    """Every series name of a scrape (``x_bucket``, ``x_total`` ... as written)."""
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def start_waker(url: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``mq9-wake --metrics 127.0.0.1:0`` on ``url``: the process and its scrape URL."""
    waker = subprocess.Popen(
        [*WAKE, "--server", url, "--poll", "0.1", "--metrics", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert waker.stdout is not None
    said = []
    for _ in range(2):
        said.append(waker.stdout.readline())
    assert said[-1].startswith("mq9-wake: watching"), said
    return waker, metrics_url(said, "mq9-wake")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Prometheus:
    """A Prometheus on a free loopback port, its storage in ``tmp``, scraping ``targets``
    (job name -> the scrape URL a server printed) every second; or, given ``config`` (the
    text of a prometheus.yml, its rule files beside it in ``tmp``), as that says."""

    def __init__(self, tmp: Path, targets: dict[str, str], config_text: str = "") -> None:
        assert PROMETHEUS is not None
        self.port = unclaimed_port()
        jobs = []
        for job, url in targets.items():
            parsed = urllib.parse.urlsplit(url)
            jobs.append(
                f"  - job_name: {job}\n    metrics_path: {parsed.path}\n"
                f"    static_configs:\n      - targets: ['{parsed.netloc}']\n"
            )
        config = tmp / "prometheus.yml"
        config.write_text(
            config_text
            or "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
            + "".join(jobs)
        )
        (tmp / "tsdb").mkdir()
        self.log = (tmp / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, "prometheus exited: see its log"
            url = f"http://127.0.0.1:{self.port}/-/ready"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status == 200

        what = "prometheus ready"
        until_sync(ready, timeout=DEADLINE, what=what, every=0.2, ignoring=(OSError,))

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The query's one value (None while it has none)."""
        found = self.query(promql)
        return float(found[0]["value"][1]) if found else None

    def wait_for(self, promql: str, at_least: float) -> float:
        """The query's value once it reaches ``at_least`` (scrapes come every second)."""
        seen: list[float | None] = [None]

        def reached() -> float | None:
            seen[0] = got = self.value(promql)
            return got if got is not None and got >= at_least else None

        what = f"{promql} >= {at_least}"
        return until_sync(reached, timeout=DEADLINE, what=what, every=0.5, show=lambda: seen[0])

    def stop(self) -> None:
        stop(self.process)  # type: ignore[arg-type]
        self.log.close()


class Server:
    """A server process whose output (stdout and stderr together) is read as it comes, until
    it says where its metrics are."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        import os
        import queue
        import threading

        self.lines: list[str] = []
        self._said: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def output(self) -> str:
        """What it printed, all of it once it has exited (its reader waited for)."""
        if self.process.poll() is not None:
            self._reader.join(DEADLINE)
        return "\n".join(self.lines)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._said.put(line)
        self._said.put(None)

    def metrics_url(self) -> str:
        """The scrape URL it printed (waiting for it, one deadline)."""
        import queue

        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                line = self._said.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no metrics line: {self.lines}") from None
            assert line is not None, f"it exited: {self.lines}"
            if " metrics on " in line:
                return line.split(" metrics on ", 1)[1].split()[0]

    def stop(self) -> None:
        stop(self.process)


def exported(text: str) -> set[str]:
    """The series names a scrape exports: its samples, and each family its TYPE line declares
    (a labelled counter with no child yet has no sample, and is exported all the same)."""
    found = names_in(text)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",), "summary": ("_sum", "_count")}  # fmt: skip
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            found |= {base + s for s in suffixes.get(kind, ("",))}
    return found
