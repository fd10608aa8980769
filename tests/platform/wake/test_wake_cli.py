"""``mq9-wake`` as processes beside ``mq9-dev-broker --announce`` (#62): rules kept through the
CLI, a waker SIGKILLed in the middle of a burst, its wake delivered by a second waker once the
dead one's claim lapsed, and every wake signed; none lost, none delivered for the same mail
twice beyond at-least-once (the same wake key)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from mq9_platform import Mq9Client
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.waiting import until_sync
from tests.platform.wake.wake_world import SECRET, Receiver

WAKE = [sys.executable, "-m", "mq9_platform.wake"]
pytestmark = pytest.mark.slow  # processes: the dev broker, wakers


def wake_cli(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WAKE, "--server", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def start_waker(url: str, *args: str) -> subprocess.Popen:
    waker = subprocess.Popen(
        [
            *WAKE,
            "--server",
            url,
            "--allow-host",
            "127.0.0.1/32",
            "--poll",
            "0.1",
            "--lease",
            "5",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = waker.stdout.readline()
    assert line.startswith("mq9-wake: watching"), line
    return waker


def test_rules_through_the_cli_and_a_waker_killed_mid_burst(tmp_path):
    broker = DevBroker("--announce", "--port", "0")
    receiver = Receiver()
    wakers: list[subprocess.Popen] = []
    try:

        async def create() -> None:
            async with Mq9Client(broker.url) as client:
                await client.mailbox_create(name="agent.asleep")

        asyncio.run(create())
        bad = wake_cli(broker.url, "rules", "add", "agent.asleep", "--webhook", receiver.url)
        assert bad.returncode == 1 and "--secret-env" in bad.stderr
        added = wake_cli(
            broker.url,
            "rules",
            "add",
            "agent.asleep",
            "--webhook",
            receiver.url,
            "--secret-env",
            "HOOK_SECRET",
            "--min-interval",
            "0",
            env={"HOOK_SECRET": SECRET},
        )
        assert added.returncode == 0, added.stderr
        listed = wake_cli(broker.url, "rules", "list", "agent.asleep")
        assert "agent.asleep" in listed.stdout and SECRET not in listed.stdout

        # the receiver holds its answers, so the first waker is killed while delivering
        receiver.status = 200
        first = start_waker(broker.url)
        wakers.append(first)

        async def burst() -> int:
            async with Mq9Client(broker.url) as client:
                last = -1
                for n in range(100):
                    last = await client.send("agent.asleep", f"mail {n}")
                return last

        last = asyncio.run(burst())
        until_sync(lambda: receiver.requests, timeout=30, what="a first wake")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        late = asyncio.run(burst())  # mail arriving while no waker runs
        second = start_waker(broker.url)
        wakers.append(second)

        def woken_for_late() -> bool:
            wakes = receiver.wakes()
            return bool(wakes) and max(w["newest_msg_id"] for w in wakes) >= late

        # the dead waker's claim lapses after its lease
        until_sync(woken_for_late, timeout=90, what="a wake for the late mail", every=0.1)
        wakes = receiver.wakes()
        assert max(w["newest_msg_id"] for w in wakes) == late, wakes
        assert last < late
        starts = [w["wake_key"] for w in wakes]
        # at least once: a wake may come again with its key, no other mail woken twice
        assert len(wakes) - len(set(starts)) <= 1
    finally:
        for waker in wakers:
            if waker.poll() is None:
                waker.send_signal(signal.SIGTERM)
                waker.wait(10)
        receiver.close()
        broker.stop()


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--allow-command-env", "LD_PRELOAD"], "a rule may never set it"),
        (["--allow-command-env", "PYTHONWARNINGS"], "a rule may never set it"),
        (["--allow-command-env", "LESSOPEN"], "only names under 'MQ9_RULE_'"),
        (["--allow-command-env-prefix", "LD_"], "hook code into a program"),
        (["--runs-per-rule", "0"], "a whole number"),
        (["--receiver-key", "everything"], "invalid choice"),
        (["--allow-agent-server", "http://127.0.0.1:2024", "MQ9_TEST_UNSET_KEY"], "is not set"),
        (["--allow-agent-server", "http://127.0.0.1:2024", "A", "B"], "at most one name"),
        (["--allow-agent-server", "ftp://x"], "no http"),
        (["--runs-per-hour", "0"], "a whole number"),
        (["--floor-interval", "-1"], "seconds between"),
    ],
)
def test_the_operators_configuration_is_checked_in_one_line(argv, said):
    done = wake_cli("memory://", *argv)
    assert done.returncode != 0
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_env_on_the_command_line_and_commands_ending_with_a_killed_waker(tmp_path):
    broker = DevBroker("--announce", "--port", "0")
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "agent.py"
    script.write_text(
        "import os, sys, time\nopen(os.path.join(sys.argv[1], os.environ["
        "'AGENT_PROFILE'] + '.' + str(os.getpid())), 'w').close()\ntime.sleep(60)\n"
    )
    waker = None
    try:

        async def create() -> None:
            async with Mq9Client(broker.url) as client:
                await client.mailbox_create(name="agent.cmd")

        asyncio.run(create())
        added = wake_cli(
            broker.url,
            "rules",
            "add",
            "agent.cmd",
            "--env",
            "AGENT_PROFILE=night",
            "--min-interval",
            "0",
            "--command",
            sys.executable,
            str(script),
            str(pids),
        )
        assert added.returncode == 0, added.stderr
        assert '"env": {"AGENT_PROFILE": "night"}' in added.stdout
        bad = wake_cli(
            broker.url,
            "rules",
            "add",
            "agent.cmd",
            "--env",
            "NOEQUALS",
            "--command",
            sys.executable,
        )
        assert bad.returncode == 1 and "NAME=VALUE" in bad.stderr and "Traceback" not in bad.stderr
        waker = start_waker(
            broker.url,
            "--allow-command",
            sys.executable,
            "--allow-command-env",
            "AGENT_PROFILE",
            "--allow-command-env-prefix",
            "AGENT_",
        )  # the operator's own prefix

        async def send() -> None:
            async with Mq9Client(broker.url) as client:
                await client.send("agent.cmd", "go")

        asyncio.run(send())
        deadline = time.monotonic() + 60
        while not list(pids.iterdir()):
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        (started,) = list(pids.iterdir())
        assert started.name.startswith("night.")
        pid = int(started.name.split(".")[1])
        waker.send_signal(signal.SIGKILL)  # no stop(): the kernel ends its commands
        waker.wait(10)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "the command outlived its waker"
            time.sleep(0.05)
    finally:
        if waker is not None and waker.poll() is None:
            waker.kill()
            waker.wait(10)
        broker.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except OSError:
        return False
