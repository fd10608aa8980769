"""The waker played against (#70): a rule is data that any reader of a mailbox may write (a
model holding the ``wake_rule`` tool, a raw client on an open broker), so each attack here is
such a rule or record, with the legitimate use beside it still working.

- an Agent Server key goes to its own server only; a rule naming another URL gets nothing;
- a command rule's environment is the operator's allow-list (no BASH_ENV, PYTHON*, PATH, LD_*);
- the operator's floor and ceilings hold whatever a rule says (min_interval=0, cap=0);
- commands at once are capped and none outlives the waker;
- 16 webhooks that accept and never answer delay only themselves;
- every waiting message is in exactly one wake, at any size and with every priority;
- a removed rule stops at once on a ``--mailbox`` waker;
- a forged ``state`` record (cursor past the end, a time in the future, junk) silences nothing;
- made-up digests in the index are never kept, and a real wake goes out meanwhile;
- a signed wake's time and key are signed: a captured one stops verifying.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
import uuid

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_broker import ManualClock
from mq9_platform import Mq9Client
from mq9_platform.wake import (
    Deliverer,
    Destinations,
    Limits,
    RuleBook,
    Waker,
    WakeRule,
    rules_address,
    sign,
    verify,
)
from mq9_platform.wake.rules import FAILED_ADDRESS, INDEX_ADDRESS
from testbed.support.waiting import until
from tests.platform.wake.wake_world import SECRET, Receiver

DAY = 1_700_000_000 - 1_700_000_000 % 86400
LOOPBACK = Destinations(hosts=["127.0.0.1/32"])
NO_FLOOR = Limits(min_interval=0)


WAIT = 60.0  # seconds: a guard against hangs only, never a timing claim


async def failed_reasons(client: Mq9Client) -> list[str]:
    return [json.loads(m.payload)["reason"] for m in await client.query(FAILED_ADDRESS)]


# -- Agent Server keys ----------------------------------------------------------------------


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_models_agent_server_rule_never_gets_the_operators_key(memory_lane):
    server, listener = Receiver(), Receiver()  # the operator's Agent Server; the model's
    try:
        with Mq9Toolkit(
            server=memory_lane.url,
            agent_mailbox="agent.me",
            tools=["create_mailbox", "wake_rule"],
            allowed_mailboxes=[],
        ) as kit:
            tools = {t.name: t for t in kit.get_tools()}
            kit.connection.run_sync(lambda c: c.mailbox_create(name="agent.me"))
            # the poisoned model's rule: its own listener on a host the operator allows
            added = tools["wake_rule"].invoke(
                {
                    "action": "add",
                    "name": "evil",
                    "target": "agent_server",
                    "url": listener.url,
                    "assistant": "agent",
                }
            )
            assert "evil" in added
            # the operator's own rule for its server (another mailbox: one each)
            kit.connection.run_sync(lambda c: c.mailbox_create(name="agent.good"))
        async with memory_lane.client() as client:
            await RuleBook(client).add(
                WakeRule(
                    mailbox="agent.good", target="agent_server", url=server.url, assistant="agent"
                )
            )
            destinations = Destinations(
                hosts=["127.0.0.1/32"], agent_servers={server.url: "operator-key-123"}
            )
            waker = await Waker(
                client, Deliverer(destinations, attempts=1, limits=NO_FLOOR), poll_interval=0.05
            ).start()
            try:
                await client.send("agent.me", "wake up")
                await client.send("agent.good", "wake up")
                await until(
                    lambda: server.requests, timeout=WAIT, what="the operator's server called"
                )
                await until(
                    lambda: waker.set_aside >= 1, timeout=WAIT, what="the model's rule set aside"
                )
                assert server.requests[0][1].get("x-api-key") == "operator-key-123"
                assert listener.requests == []  # nothing, let alone the key
                assert any("not one of the waker's" in r for r in await failed_reasons(client))
            finally:
                await waker.stop()
    finally:
        server.close()
        listener.close()


def test_agent_server_urls_compare_by_origin_and_path():
    destinations = Destinations(agent_servers={"http://127.0.0.1:2024/": "k"})
    assert destinations.agent_server("http://127.0.0.1:2024")[0] == "k"
    for other in (
        "http://127.0.0.1:2025",
        "https://127.0.0.1:2024",
        "http://127.0.0.1:2024/x",
        "http://user@127.0.0.1:2024",
        "http://localhost:2024",
    ):
        with pytest.raises(Exception, match="not one of the waker's"):
            destinations.agent_server(other)
    assert "k" not in repr(destinations)


# -- commands: environment, ceilings, lifetime -----------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "BASH_ENV",
        "ENV",
        "PATH",
        "LD_PRELOAD",
        "PYTHONWARNINGS",
        "PYTHONSTARTUP",
        "BROWSER",
        "PERL5OPT",
        "NODE_OPTIONS",
        "MQ9_WAKE_MAILBOX",
    ],
)
def test_the_operator_cannot_let_a_rule_set_a_hook(name):
    with pytest.raises(ValueError, match="may never set it"):
        Destinations(commands=["/bin/true"], command_env=[name])


@pytest.mark.slow  # a process: the command
async def test_a_rules_environment_is_only_what_the_operator_allows(memory_lane, tmp_path):
    pwned = tmp_path / "pwned"
    out = tmp_path / "out.json"
    script = (
        "import json, os, sys; json.dump({k: os.environ.get(k) for k in "
        "('MQ9_RULE_PROFILE', 'PYTHONWARNINGS', 'BROWSER')}, open(sys.argv[1], 'w'))"
    )
    hooks = {  # each ran the attacker's command as the waker's user before (#70)
        "bash": {"BASH_ENV": f"$(id > {pwned})"},
        "python": {"PYTHONWARNINGS": "ignore::antigravity.Foo", "BROWSER": f"id > {pwned}"},
        "path": {"PATH": str(tmp_path)},
        "preload": {"LD_PRELOAD": str(tmp_path / "evil.so")},
    }
    async with memory_lane.client() as client:
        for n, (name, env) in enumerate(hooks.items()):
            mailbox = f"agent.hook{n}"
            await client.mailbox_create(name=mailbox)
            await RuleBook(client).add(
                WakeRule(
                    mailbox=mailbox,
                    name=name,
                    target="command",
                    argv=(sys.executable, "-c", script, str(out)),
                    env=env,
                )
            )
        await client.mailbox_create(name="agent.good")
        await RuleBook(client).add(
            WakeRule(
                mailbox="agent.good",
                target="command",
                argv=(sys.executable, "-c", script, str(out)),
                env={"MQ9_RULE_PROFILE": "nightly"},
            )
        )
        destinations = Destinations(commands=[sys.executable], command_env=["MQ9_RULE_PROFILE"])
        waker = await Waker(
            client, Deliverer(destinations, limits=NO_FLOOR), poll_interval=0.05
        ).start()
        try:
            for n in range(len(hooks)):
                await client.send(f"agent.hook{n}", "go")
            await until(
                lambda: waker.set_aside == len(hooks), timeout=WAIT, what="the hooks refused"
            )
            await client.send("agent.good", "go")
            await until(
                lambda: out.exists() and out.read_text(), timeout=WAIT, what="the good command"
            )
            assert json.loads(out.read_text()) == {
                "MQ9_RULE_PROFILE": "nightly",
                "PYTHONWARNINGS": None,
                "BROWSER": None,
            }
            reasons = await failed_reasons(client)
            assert len(reasons) == len(hooks)
            assert all("not one the waker lets a rule set" in r for r in reasons), reasons
            assert not pwned.exists()
        finally:
            await waker.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie is no running process
    return True


@pytest.mark.slow  # processes: the commands
async def test_commands_at_once_are_capped_and_end_with_the_waker(memory_lane, tmp_path):
    script = (
        "import os, sys, time; open(os.path.join(sys.argv[1], str(os.getpid())), 'w')"
        ".close(); time.sleep(40)"
    )
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client:
        for n in range(4):
            await client.mailbox_create(name=f"agent.cmd{n}")
            await RuleBook(client).add(
                WakeRule(  # the flood a rule writer chose
                    mailbox=f"agent.cmd{n}",
                    target="command",
                    min_interval=0,
                    cap=0,
                    argv=(sys.executable, "-c", script, str(tmp_path)),
                )
            )
        deliverer = Deliverer(
            Destinations(commands=[sys.executable]),
            limits=Limits(min_interval=0, commands_at_once=2),
        )
        waker = await Waker(
            client, deliverer, clock=clock, events=False, poll_interval=3600
        ).start()
        try:
            for n in range(4):
                await client.send(f"agent.cmd{n}", "go")
                await waker.check(f"agent.cmd{n}")
            await until(
                lambda: len(list(tmp_path.iterdir())) == 2, timeout=WAIT, what="two commands"
            )
            assert deliverer.commands_running == 2  # the other two wait their turn
            pids = [int(p.name) for p in tmp_path.iterdir()]
            assert all(_alive(pid) for pid in pids)
            assert all(os.getpgid(pid) == os.getpgid(0) for pid in pids)  # the waker's group
        finally:
            await waker.stop()
        assert not any(_alive(pid) for pid in pids)  # none outlives the waker


async def test_the_operators_floor_and_ceiling_hold_whatever_the_rule_says(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        # a model's flood: no interval, no cap
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=0, cap=0)
        )
        limits = Limits(min_interval=2, runs_per_hour=5)
        waker = await Waker(
            client,
            Deliverer(callbacks={"seen": seen.append}, limits=limits),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            sent = 0
            for _ in range(40):  # 40 bursts a second apart: 20 s
                await client.send("agent.me", "go")
                sent += 1
                await waker.check("agent.me")
                clock.advance(1)
            assert len(seen) == 5  # the ceiling: runs per hour per target
            times = [w.key for w in seen]
            assert len(set(times)) == 5
            clock.advance(3600)  # the hour over: the wake owed covers everything since
            await waker.check("agent.me")
            assert len(seen) == 6
            assert sum(w.waiting for w in seen) == sent  # nothing lost, nothing twice
        finally:
            await waker.stop()


async def test_the_floor_spaces_wakes(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=0)
        )
        waker = await Waker(
            client,
            Deliverer(callbacks={"seen": seen.append}, limits=Limits(min_interval=10)),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            for _ in range(30):  # 30 s of mail, a message a second
                await client.send("agent.me", "go")
                await waker.check("agent.me")
                clock.advance(1)
            assert len(seen) == 3  # at 0, 10 and 20 s
        finally:
            await waker.stop()


# -- a slow peer ----------------------------------------------------------------------------


class Silent:
    """Accepts connections, reads, and never answers."""

    def __init__(self) -> None:
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()


async def test_sixteen_silent_webhooks_delay_only_themselves(lane, receiver):
    silent = Silent()
    async with silent as url, lane.client() as client:
        for n in range(16):
            await client.mailbox_create(name=f"agent.slow{n}")
            await RuleBook(client).add(
                WakeRule(mailbox=f"agent.slow{n}", target="webhook", url=url, secret=SECRET)
            )
        await client.mailbox_create(name="agent.fast")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.fast", target="webhook", url=receiver.url, secret=SECRET)
        )
        # a long deadline per try: the 16 are all still waiting when the good wake goes
        waker = await Waker(
            client, Deliverer(LOOPBACK, attempts=1, timeout=120), poll_interval=0.05
        ).start()
        try:
            for n in range(16):
                await client.send(f"agent.slow{n}", "hello")
            await until(
                lambda: silent.accepted == 16, timeout=WAIT, what="16 silent POSTs under way"
            )
            await client.send("agent.fast", "hello")
            (wake,) = await receiver.wait_for(1, timeout=60)
            assert wake["mailbox"] == "agent.fast"
            assert waker.set_aside == 0 and silent.accepted == 16  # none of the 16 ended yet
        finally:
            await waker.stop()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_dripping_webhook_times_out_as_a_whole(memory_lane):
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(65536)
            writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            for _ in range(100):  # the headers, a byte every 0.2 s: no read waits long
                await writer.drain()
                writer.write(b"x")
                await asyncio.sleep(0.2)

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    deliverer = Deliverer(LOOPBACK, attempts=1, timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await deliverer.post(url, b"{}", {}, "drip")
    finally:
        await deliverer.close()
        server.close()
    assert time.monotonic() - started < 15  # the whole try's deadline, not 100 drips' 20 s


# -- every waiting message in exactly one wake ------------------------------------------------


@pytest.mark.parametrize(
    "lane", ["memory", pytest.param("nats", marks=pytest.mark.slow)], indirect=True
)
async def test_every_message_of_a_large_burst_is_in_exactly_one_wake(lane):
    seen: list = []
    async with lane.client() as client:
        await client.mailbox_create(name="agent.big")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.big", target="callback", callback="seen", min_interval=0)
        )
        waker = await Waker(
            client, Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR), poll_interval=0.05
        ).start()
        try:
            priorities = ["normal", "critical", "urgent"]
            # sent at once (330), every priority: a FETCH reads critical first
            ids = await asyncio.gather(
                *(client.send("agent.big", f"m{n}", priority=priorities[n % 3]) for n in range(330))
            )
            await until(
                lambda: sum(w.waiting for w in seen) >= 330, timeout=WAIT, what="330 in wakes"
            )
            await asyncio.sleep(0.3)
            assert sum(w.waiting for w in seen) == 330
            assert max(w.newest_msg_id for w in seen) == max(ids)
            spans = sorted((int(w.key.rsplit(".", 1)[1]), w.newest_msg_id) for w in seen)
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert start > end  # no overlap
            assert sum(sum(w.priorities.values()) for w in seen) == 330
        finally:
            await waker.stop()


async def test_burst_wakes_add_up(lane):
    seen: list = []
    async with lane.client() as client:
        await client.mailbox_create(name="agent.burst")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.burst", target="callback", callback="seen", min_interval=0)
        )
        waker = await Waker(
            client, Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR), poll_interval=0.05
        ).start()
        try:
            for n in range(50):
                await client.send("agent.burst", f"m{n}")
            await until(
                lambda: sum(w.waiting for w in seen) >= 50, timeout=WAIT, what="50 in wakes"
            )
            await asyncio.sleep(0.3)
            assert sum(w.waiting for w in seen) == 50
        finally:
            await waker.stop()


# -- removed rules, forged records -------------------------------------------------------------


async def test_a_removed_rule_stops_at_once_on_a_mailbox_waker(lane):
    seen: list = []
    async with lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=0)
        )
        waker = await Waker(
            client,
            Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR),
            mailboxes=["agent.me"],
            poll_interval=0.05,
        ).start()
        try:
            await client.send("agent.me", "one")
            await until(lambda: len(seen) == 1, timeout=WAIT, what="the first wake")
            assert await RuleBook(client).remove("agent.me", "default")
            await client.send("agent.me", "two")
            await waker.check("agent.me")
            await asyncio.sleep(0.3)  # polls meanwhile
            assert len(seen) == 1
        finally:
            await waker.stop()


@pytest.mark.parametrize(
    "forged",
    [
        {"seen": "NEWEST+1000"},
        {
            "seen": "NEWEST",
            "rules": {"default": {"last_wake": 1e10, "window_start": 1e10, "window_count": 10**6}},
        },
        {"seen": "NEWEST", "rules": {"default": {"pending_from": "x", "last_wake": "soon"}}},
        {"seen": 2**70},
        ["not", "a", "state"],
    ],
)
async def test_a_forged_state_record_silences_nothing(memory_lane, forged):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client, memory_lane.client() as attacker:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=60, cap=3)
        )
        waker = await Waker(
            client,
            Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            newest = await client.send("agent.me", "one")
            await waker.check("agent.me")
            assert len(seen) == 1
            # a raw client on the open broker writes the state record
            text = (
                json.dumps(forged)
                .replace('"NEWEST+1000"', str(newest + 1000))
                .replace('"NEWEST"', str(newest))
            )
            await attacker.send(rules_address("agent.me"), text, key="state")
            clock.advance(61)
            await client.send("agent.me", "two")
            await waker.check("agent.me")
            if len(seen) == 1:  # a forged time or count holds it one window at most
                clock.advance(3600)
                await waker.check("agent.me")
            assert len(seen) == 2  # woken all the same
            assert seen[1].newest_msg_id == newest + 1
        finally:
            await waker.stop()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_made_up_index_entries_are_never_kept(memory_lane, receiver):
    async with memory_lane.client() as client, memory_lane.client() as attacker:
        await client.mailbox_create(name="agent.real")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.real", target="webhook", url=receiver.url, secret=SECRET)
        )
        waker = await Waker(client, Deliverer(LOOPBACK), poll_interval=0.05).start()
        try:
            flood = 3000
            for start in range(0, flood, 200):
                await asyncio.gather(
                    *(
                        attacker.send(INDEX_ADDRESS, d, key=d)
                        for d in (uuid.uuid4().hex for _ in range(min(200, flood - start)))
                    )
                )
            await client.send("agent.real", "hello")
            (wake,) = await receiver.wait_for(1, timeout=60)  # a real wake meanwhile
            assert wake["mailbox"] == "agent.real"
            await until(lambda: waker.index_read > flood, timeout=WAIT, what="the flood read")
            assert waker.watching == ["agent.real"]  # nothing of the flood kept
            assert repr(waker).endswith("watching=1)")
        finally:
            await waker.stop()


# -- signatures -----------------------------------------------------------------------------


def test_a_signature_covers_the_time_and_the_wake_key():
    body = b'{"waiting":1}'
    now = time.time()
    header = sign(SECRET, body, wake_key="k1", at=now)
    assert header.startswith(f"t={int(now)},sha256=")
    assert verify(SECRET, body, header, "k1")
    assert not verify(SECRET, body, header, "k2")  # another wake's key
    assert not verify(SECRET, body + b" ", header, "k1")
    assert not verify("another-secret-16+", body, header, "k1")
    assert not verify(SECRET, body, header, "k1", now=now + 301)  # a captured one, replayed
    assert verify(SECRET, body, header, "k1", now=now + 299)
    assert not verify(SECRET, body, header.replace(f"t={int(now)}", f"t={int(now) + 100}"), "k1")
    for junk in ("", "sha256=00", "t=x,sha256=00", f"t={int(now)}", "t=1" * 30):
        assert not verify(SECRET, body, junk, "k1")


async def test_a_webhook_is_signed_with_its_time_and_key(memory_lane, receiver):
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="webhook", url=receiver.url, secret=SECRET)
        )
        waker = await Waker(client, Deliverer(LOOPBACK), poll_interval=0.05).start()
        try:
            await client.send("agent.me", "hello")
            await receiver.wait_for(1)  # verify()'d with the key header, within the window
            body, headers = receiver.requests[0]
            assert not verify(SECRET, body, headers["X-Mq9-Signature"], "another.key")
        finally:
            await waker.stop()


def test_env_is_a_mapping():
    rule = WakeRule(
        mailbox="agent.me", target="command", argv=("/bin/true",), env={"B": "2", "A": "1"}
    )
    assert rule.env == (("A", "1"), ("B", "2"))
    assert WakeRule.from_json(rule.to_json()) == rule
    assert json.loads(rule.to_json())["env"] == {"A": "1", "B": "2"}
    assert WakeRule(
        mailbox="agent.me", target="command", argv=("/bin/true",), env=[("A", "1")]
    ).env == (("A", "1"),)
