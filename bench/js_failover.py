"""The kill lane of the JetStream store (issue #55): nothing acknowledged lost through SIGKILLs.

Three nats-server processes clustered with JetStream on loopback (bench/js_cluster.py) and two
broker processes started with the same command, ``mq9-dev-broker --nats A,B,C --store
jetstream`` (one serves, one stands by: broker/standby/). Four writers SEND to
one mailbox, each payload unique, recording the msg_id of every SEND answered and the error of
every SEND that raised; four readers FETCH in one consumer group and ACK what they got
(acks taken in turn and only forward, so that the group's position only moves on), recording
what each FETCH handed out and when each ACK was answered; a prober SENDs to a mailbox of its
own every 50 ms, whose answers give the gap in service. Meanwhile, round after round, one of
these is SIGKILLed and started again once the service is back:

- ``leader``: the nats-server holding the state stream's leader;
- ``follower``: a nats-server holding one of its other replicas;
- ``broker``: the broker process holding the leader lock.

Then the readers read on until every acknowledged message was handed out, and the lane checks:
no acknowledged SEND lost, none handed out by a FETCH sent after an ACK past it was answered,
no msg_id given to two payloads, every message handed out was sent (an ambiguous SEND, one that
raised after the broker stored it, is counted, not an error). The gap of a round: from the last
probe answered before the kill to the first answered after it.

With ``--readers group`` (issue #61, item 7) the four readers are ``GroupReader``s of the
group on ONE client (one connection, no worker names), each calling ``done`` on every batch it
fetched; the lane then counts the messages handed out by a fetch *sent* after a ``done``
covering them had returned (target 0), and, as the issue first counted them, by a fetch that
*returned* after it (a fetch the broker answered before the ack, whose answer came back after
the done: no fault). At the broker, an observer reads the state stream as it is stored and
counts the group's commits that moved its position back; the readers' client records each ACK
it sends and how it ended, so that each such commit is told with the ACKs of both positions
(``why_back``), and counts the ACKs it sent below one it had sent before.

    python -m bench.js_failover --rounds 11 --out /tmp/kill-lane.json   # 33 kills
    python -m bench.js_failover --rounds 10 --readers group              # 30 kills
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats

from langchain_mq9 import GroupReader, Mq9Client
from langchain_mq9.broker.standby.lock import LOCK_KEY, lock_bucket
from langchain_mq9.broker.storage.jetstream import DEFAULT_STREAM, SUBJECT_PREFIX

from .js_cluster import JetStreamCluster

KINDS = ("leader", "follower", "broker")
MAILBOX, PROBES, GROUP = "lane.box", "lane.probe", "lane"
WRITERS = READERS = 4
READY = "mq9 dev broker ready on "
BROKER_START_TIMEOUT = 60.0  # a cold interpreter on a busy 2-core machine
SERVICE_TIMEOUT = 90.0  # the most a round may wait for the service to come back
CATCH_UP_TIMEOUT = 90.0  # a restarted server's replicas current again
DRAIN_TIMEOUT = 180.0
WRITERS_STOP_TIMEOUT = 60.0  # a SEND's own request_timeout (10 s) and its retry pause, and more
LOCK_WAIT = 30.0
LOCK_STREAM = f"KV_{lock_bucket(DEFAULT_STREAM)}"  # the stream under the lock's bucket
PROBE_EVERY = 0.05
ROOT = Path(__file__).resolve().parent.parent


class LaneError(Exception):
    """The lane could not go on (a process that would not start, a cluster that stays down)."""


@dataclass
class Round:
    kind: str
    victim: str
    gap: float  # seconds without a probe answered
    lock_leader_killed: bool  # the killed server held the leader of the lock's bucket
    lock_moved: bool  # another broker held the lock after the round
    broker_exits: int = 0  # brokers that stopped by themselves (lease lost, loop blocked)


@dataclass
class LaneResult:
    rounds: list[Round] = field(default_factory=list)
    acked: int = 0
    failed_sends: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    lost: list[int] = field(default_factory=list)  # acked msg_ids never handed out
    handed_out_after_ack: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)  # msg_ids given to two payloads
    unknown: list[str] = field(default_factory=list)  # handed out, never sent
    ambiguous: int = 0  # SENDs that raised, yet their message was stored
    client_warnings: list[str] = field(default_factory=list)
    probes_reused: list[int] = field(default_factory=list)
    # --readers group: handed out by a fetch sent after a done covering them had returned
    # (msg_ids), and (a count) by one that returned after it; the group's stored commits that
    # moved its position back, and the records the observer read
    handed_out_after_done: list[int] = field(default_factory=list)
    returned_after_done: int = 0
    commits_back: list[tuple[int, int]] = field(default_factory=list)  # (from, to)
    # for each: the ACKs of the two positions, as the readers' client saw them (``why_back``)
    commits_back_why: list[str] = field(default_factory=list)
    records_observed: int = 0
    group_acks: int = 0  # ACKs the GroupReaders sent
    group_acks_unanswered: int = 0  # of them, raised (stored or not: nobody knows)
    group_acks_lower: int = 0  # of them, sent below one sent before (that one may land first)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.handed_out_after_ack
            or self.handed_out_after_done
            or self.commits_back
            or self.reused
            or self.unknown
            or self.client_warnings
            or self.probes_reused
        )

    def gaps(self, kind: str) -> list[float]:
        return [r.gap for r in self.rounds if r.kind == kind]

    def summary(self) -> str:
        lines = [
            f"kills: {len(self.rounds)} ({', '.join(f'{k} {len(self.gaps(k))}' for k in KINDS)});"
            f" SENDs acknowledged {self.acked}, raised {self.failed_sends} "
            f"({self.ambiguous} of them stored after all), handed out {self.delivered}",
            f"acknowledged lost {len(self.lost)}, handed out after their ACK "
            f"{len(self.handed_out_after_ack)}, msg_ids reused {len(self.reused)}, handed out "
            f"but never sent {len(self.unknown)}, client warnings {len(self.client_warnings)}",
            f"handed out by a fetch sent after a returned done "
            f"{len(self.handed_out_after_done)} (returned after one: {self.returned_after_done});"
            f" stored commits that moved the group back {len(self.commits_back)} (of "
            f"{self.records_observed} records observed); the readers' ACKs "
            f"{self.group_acks}, unanswered {self.group_acks_unanswered}, sent below one "
            f"sent before {self.group_acks_lower}",
            *(f"  moved back: {why}" for why in self.commits_back_why),
            f"brokers that stopped by themselves: {sum(r.broker_exits for r in self.rounds)}",
            "rounds whose kill took the lock's bucket leader / moved the lock: "
            + ", ".join(
                f"{k} {sum(r.lock_leader_killed for r in self.rounds if r.kind == k)}"
                f"/{sum(r.lock_moved for r in self.rounds if r.kind == k)}"
                for k in KINDS
            ),
            f"SEND errors: {dict(self.failure_kinds)}",
        ]
        for kind in KINDS:
            gaps = sorted(self.gaps(kind))
            if gaps:
                p90 = gaps[min(len(gaps) - 1, int(0.9 * len(gaps)))]
                kept = sorted(r.gap for r in self.rounds if r.kind == kind and not r.lock_moved)
                lines.append(
                    f"gap after a {kind} kill: min {gaps[0]:.2f} s, median "
                    f"{statistics.median(gaps):.2f} s, p90 {p90:.2f} s, max {gaps[-1]:.2f} s "
                    f"({len(gaps)} kills; the lock stayed in {len(kept)}"
                    + (f", median gap {statistics.median(kept):.2f} s)" if kept else ")")
                )
        return "\n".join(lines)


class BrokerProcess:
    """One ``mq9-dev-broker --store jetstream`` process, its output in a log file."""

    def __init__(self, urls: list[str], home: Path, name: str, extra: tuple[str, ...]) -> None:
        self.log_path = home / f"{name}.log"
        self.args = [
            sys.executable, "-m", "langchain_mq9.broker", "--nats", ",".join(urls),
            "--store", "jetstream", "--no-search", "--log-level", "warning", *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BrokerProcess:
        log = self.log_path.open("ab")
        self._seen = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT
        )
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + BROKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if READY in self.log_path.read_text(errors="replace")[self._seen :]:
                return
            if self.process is None or self.process.poll() is not None:
                raise LaneError(f"a broker exited before it was ready: {self.tail()}")
            time.sleep(0.1)
        raise LaneError(f"a broker was not ready in {BROKER_START_TIMEOUT:g} s: {self.tail()}")

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Workload:
    """What the writers, readers and prober did, in this process's monotonic seconds."""

    acked: dict[str, int] = field(default_factory=dict)  # payload -> msg_id
    failed: dict[str, str] = field(default_factory=dict)  # payload -> the error's class
    fetches: list[tuple[float, list[tuple[int, str]]]] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)  # (answered at, msg_id)
    probes: list[tuple[float, int]] = field(default_factory=list)  # (answered at, msg_id)
    acked_up_to: int = -1
    writing: bool = True
    reading: bool = True
    # --readers group: (fetch sent at, returned at, msg_id) of each hand-out; when the first
    # done covering a msg_id returned
    handed: list[tuple[float, float, int]] = field(default_factory=list)
    done_at: dict[int, float] = field(default_factory=dict)
    commits: list[int] = field(default_factory=list)  # the group's stored positions, in order
    # (stream sequence, the writing broker's Nats-Msg-Id prefix) of each of ``commits``
    commit_records: list[tuple[int, str]] = field(default_factory=list)
    # the GroupReaders' ACKs: (sent at, returned at, msg_id, the error's class or "")
    group_acks: list[tuple[float, float, int, str]] = field(default_factory=list)
    records: int = 0

    def delivered(self) -> dict[int, set[str]]:
        found: dict[int, set[str]] = defaultdict(set)
        for _, messages in self.fetches:
            for msg_id, payload in messages:
                found[msg_id].add(payload)
        return found


async def writer(url: str, number: int, work: Workload, clients: list[Mq9Client]) -> None:
    async with Mq9Client(url, request_timeout=10) as client:
        clients.append(client)
        sent = 0
        while work.writing:
            payload = f"w{number}-{sent}"
            sent += 1
            try:
                work.acked[payload] = await client.send(MAILBOX, payload)
            except Exception as exc:  # said so: counted, never taken for stored
                work.failed[payload] = type(exc).__name__
                await asyncio.sleep(0.05)


async def reader(url: str, work: Workload, ack_turn: asyncio.Lock) -> None:
    async with Mq9Client(url, request_timeout=10) as client:
        while work.reading:
            sent_at = time.monotonic()
            try:
                messages = await client.fetch(
                    MAILBOX, group_name=GROUP, deliver="earliest", num_msgs=10, max_wait_ms=200
                )
            except Exception:
                await asyncio.sleep(0.05)
                continue
            got = [(m.msg_id, m.text()) for m in messages]
            work.fetches.append((sent_at, got))
            if not got:
                continue
            top = max(msg_id for msg_id, _ in got)
            async with ack_turn:  # one ACK at a time, only forward: the position never goes back
                if top <= work.acked_up_to:
                    continue
                try:
                    await client.ack(MAILBOX, GROUP, top)
                except Exception:
                    continue  # not known to be stored: another reader acks past it later
                work.acks.append((time.monotonic(), top))
                work.acked_up_to = top


async def group_reader(client: Mq9Client, work: Workload) -> None:
    """A ``GroupReader`` of the group (no worker name) on the shared ``client``: fetch, then
    ``done`` on the whole batch, stamping each hand-out and each returned done."""
    reader = GroupReader(client, MAILBOX, GROUP)
    while work.reading:
        sent_at = time.monotonic()
        try:
            batch = await reader.fetch(num_msgs=10, max_wait_ms=200)
        except Exception:
            await asyncio.sleep(0.05)
            continue
        returned_at = time.monotonic()
        got = [(m.msg_id, m.text()) for m in batch]
        work.fetches.append((sent_at, got))
        work.handed.extend((sent_at, returned_at, msg_id) for msg_id, _ in got)
        while batch and work.reading:
            try:
                await reader.done([m.msg_id for m in batch])
            except Exception:  # not known to be acked: done again (the reader acks again)
                await asyncio.sleep(0.05)
                continue
            finished = time.monotonic()
            for message in batch:
                work.done_at.setdefault(message.msg_id, finished)
            break


class AckRecordingClient(Mq9Client):
    """The GroupReaders' shared client, recording every ACK it sends and how it ended."""

    def __init__(self, url: str, work: Workload) -> None:
        super().__init__(url, request_timeout=10)
        self.work = work

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None:
        sent_at = time.monotonic()
        outcome = ""
        try:
            await super().ack(mail_address, group_name, msg_id)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.work.group_acks.append((sent_at, time.monotonic(), msg_id, outcome))


async def observer(nc: Any, work: Workload) -> None:
    """The group's position as the broker stores it: every commit of the group's normal lane
    in the state stream's records, in the order stored (snapshots, which only restate it,
    skipped)."""
    lane = f"{GROUP}-normal"
    sub = await nc.jetstream().subscribe(
        f"{SUBJECT_PREFIX}.{DEFAULT_STREAM.lower()}", ordered_consumer=True
    )
    try:
        while work.reading:
            try:
                msg = await sub.next_msg(timeout=1)
            except Exception:
                continue
            work.records += 1
            head = json.loads(msg.data.partition(b"\n")[0])
            changes = [head["ops"]] if head.get("v") == 1 else head.get("changes", [])
            if "snap" in head:
                continue
            for ops in changes:
                for op in ops:
                    if op[0] == "oc" and op[1] == lane:
                        work.commits.append(op[3])
                        writer_id = (msg.headers or {}).get("Nats-Msg-Id", "").rpartition("-")
                        work.commit_records.append((msg.metadata.sequence.stream, writer_id[0]))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def prober(url: str, work: Workload) -> None:
    async with Mq9Client(url, request_timeout=1) as client:
        count = 0
        while work.writing:
            count += 1
            with contextlib.suppress(Exception):
                work.probes.append((time.monotonic(), await client.send(PROBES, f"p{count}")))
            await asyncio.sleep(PROBE_EVERY)


class KillLane:
    """The cluster, the two brokers and the workload of one lane run (see the module)."""

    def __init__(self, home: Path, broker_args: tuple[str, ...] = (), readers: str = "raw") -> None:
        self.home = home
        self.readers = readers
        self.cluster = JetStreamCluster(3)
        self.url = ",".join(self.cluster.urls)
        self.brokers = [
            BrokerProcess(self.cluster.urls, home, f"broker{i}", broker_args) for i in (1, 2)
        ]
        self.work = Workload()
        self.log: list[str] = []

    def say(self, line: str) -> None:
        self.log.append(line)
        print(line, flush=True)

    async def run(self, rounds_per_kind: int, *, pause: float = 2.0) -> LaneResult:
        with self.cluster:
            try:
                return await self._run(rounds_per_kind, pause)
            finally:
                for broker in self.brokers:
                    broker.stop()

    async def _run(self, rounds_per_kind: int, pause: float) -> LaneResult:
        for broker in self.brokers:  # one after the other: the first serves
            broker.start()
            await asyncio.to_thread(broker.wait_ready)
        self.nc = await nats.connect(
            self.cluster.urls, max_reconnect_attempts=-1, error_cb=_quiet
        )  # its server killed: it reconnects
        clients: list[Mq9Client] = []
        try:
            async with Mq9Client(self.url, request_timeout=30) as setup:
                for name in (MAILBOX, PROBES):
                    await setup.mailbox_create(name=name)
            ack_turn = asyncio.Lock()
            writers = [asyncio.create_task(writer(self.url, i, self.work, clients))
                       for i in range(WRITERS)]  # fmt: skip
            if self.readers == "group":  # one client, one connection, for all four
                shared = await AckRecordingClient(self.url, self.work).connect()
                clients.append(shared)
                readers = [group_reader(shared, self.work) for _ in range(READERS)]
                readers.append(observer(self.nc, self.work))
            else:
                readers = [reader(self.url, self.work, ack_turn) for _ in range(READERS)]
            tasks = writers + [asyncio.create_task(r) for r in readers]
            tasks.append(asyncio.create_task(prober(self.url, self.work)))
            result = LaneResult()
            try:
                await asyncio.sleep(pause)
                for number in range(rounds_per_kind * len(KINDS)):
                    kind = KINDS[number % len(KINDS)]
                    late = self.restart_exited()  # stopped after the round that caused it
                    if result.rounds:
                        result.rounds[-1].broker_exits += late
                    result.rounds.append(await self.kill_round(kind))
                    await asyncio.sleep(pause)
                self.work.writing = False
                # Each writer's last SEND may still be under way: once answered it is acked,
                # and must be read too (a drain begun before it ended too soon: 1 of 15,923
                # counted lost, the newest, in a clean-clone run)
                await asyncio.wait(writers, timeout=WRITERS_STOP_TIMEOUT)
                await self.drain()
            finally:
                self.work.writing = self.work.reading = False
                done, pending = await asyncio.wait(tasks, timeout=60)
                for task in pending:
                    task.cancel()
            for task in done:
                if task.exception() is not None:
                    raise LaneError(f"a client task failed: {task.exception()!r}")
            if self.readers == "group":
                await clients[-1].close()
            result.client_warnings = [w for c in clients for w in c.warnings.values()]
            self.check(result)
            return result
        finally:
            await self.nc.close()

    # -- one round -----------------------------------------------------------------------------

    async def kill_round(self, kind: str) -> Round:
        holder = await self.serving_broker()
        lock_leader = await self.stream_server(leader=True, stream=LOCK_STREAM)
        if kind == "broker":
            victim = holder
            killed_at = time.monotonic()
            victim.kill()
            name = f"broker pid {victim.pid}"
        else:
            server = await self.stream_server(leader=kind == "leader")
            killed_at = time.monotonic()
            self.cluster.by_name(server).kill()
            name = f"nats-server {server}"
        gap = await self.gap_after(killed_at)
        if kind == "broker":
            victim.start()
            await asyncio.to_thread(victim.wait_ready)
        else:
            self.cluster.by_name(server).start()
            await self.caught_up()
        exits = self.restart_exited()
        for broker in self.brokers:  # a broker started again is ready before the next kill
            await asyncio.to_thread(broker.wait_ready)
        moved = await self.serving_broker() is not holder
        killed_lock_leader = kind != "broker" and server == lock_leader
        self.say(
            f"killed {kind} ({name}): gap {gap:.2f} s; the lock's bucket leader "
            f"{'killed' if killed_lock_leader else 'kept'}; the lock "
            f"{'moved' if moved else 'stayed'}; brokers that stopped by themselves {exits}"
        )
        return Round(kind, name, gap, killed_lock_leader, moved, exits)

    def restart_exited(self) -> int:
        """Start again a broker that stopped by itself (a lease it could not give up in
        time); how many."""
        count = 0
        for broker in self.brokers:
            if not broker.alive():
                count += 1
                self.say(f"a broker had stopped by itself: {broker.tail()[-500:]}")
                broker.start()
        return count

    async def serving_broker(self) -> BrokerProcess:
        """The broker holding the leader lock (its holder name holds its pid); when none
        holds it for ``LOCK_WAIT`` s (not seen on a sound broker), the first one."""
        deadline = time.monotonic() + LOCK_WAIT
        kv = await self.nc.jetstream().key_value(lock_bucket(DEFAULT_STREAM))
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                entry = await kv.get(LOCK_KEY)
                found = re.search(r" pid (\d+) ", (entry.value or b"").decode())
                for broker in self.brokers:
                    if found and broker.pid == int(found.group(1)):
                        return broker
            await asyncio.sleep(0.2)
        self.say(f"no broker held the leader lock for {LOCK_WAIT:g} s: killing the first")
        return self.brokers[0]

    async def stream_server(self, *, leader: bool, stream: str = DEFAULT_STREAM) -> str:
        """The server holding ``stream``'s leader, or one of its followers."""
        info = await self.nc.jetstream().stream_info(stream)
        assert info.cluster is not None
        if leader:
            return info.cluster.leader or ""
        return (info.cluster.replicas or [])[0].name or ""

    async def gap_after(self, killed_at: float) -> float:
        """Seconds from the last probe answered before ``killed_at`` to the first after it."""
        deadline = time.monotonic() + SERVICE_TIMEOUT
        while time.monotonic() < deadline:
            answered = [at for at, _ in self.work.probes]
            after = [at for at in answered if at > killed_at]
            if after:
                before = [at for at in answered if at <= killed_at]
                return after[0] - (before[-1] if before else killed_at)
            await asyncio.sleep(0.05)
        raise LaneError(f"no SEND answered for {SERVICE_TIMEOUT:g} s after a kill")

    async def caught_up(self) -> None:
        """Wait until every replica of the state stream and of the lock bucket is current."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        streams = (DEFAULT_STREAM, LOCK_STREAM)
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                infos = [await self.nc.jetstream().stream_info(s) for s in streams]
                if all(_current(info) for info in infos):
                    return
            await asyncio.sleep(0.2)
        raise LaneError(f"a restarted server's replicas not current in {CATCH_UP_TIMEOUT:g} s")

    async def drain(self) -> None:
        """Let the readers read until everything acknowledged was handed out."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            delivered = self.work.delivered()
            if all(msg_id in delivered for msg_id in self.work.acked.values()):
                return
            await asyncio.sleep(0.2)

    # -- the checks ----------------------------------------------------------------------------

    def check(self, result: LaneResult) -> None:
        work = self.work
        delivered = work.delivered()
        sent = {**work.failed, **work.acked}
        result.acked = len(work.acked)
        result.failed_sends = len(work.failed)
        result.failure_kinds = dict(Counter(work.failed.values()))
        result.delivered = len(delivered)
        by_id: dict[int, set[str]] = defaultdict(set)
        for payload, msg_id in work.acked.items():
            by_id[msg_id].add(payload)
        for msg_id, payloads in delivered.items():
            by_id[msg_id] |= payloads
        result.reused = sorted(msg_id for msg_id, payloads in by_id.items() if len(payloads) > 1)
        result.lost = sorted(
            msg_id for payload, msg_id in work.acked.items()
            if payload not in delivered.get(msg_id, set())
        )  # fmt: skip
        result.unknown = sorted(
            payload for payloads in delivered.values() for payload in payloads
            if payload not in sent
        )  # fmt: skip
        result.ambiguous = sum(
            1 for payloads in delivered.values() for payload in payloads if payload in work.failed
        )
        # A FETCH sent after an ACK of X was answered hands out nothing at or below X
        acks = sorted(work.acks)
        after: set[int] = set()
        for sent_at, messages in work.fetches:
            passed = max((x for at, x in acks if at < sent_at), default=-1)
            after.update(msg_id for msg_id, _ in messages if msg_id <= passed)
        result.handed_out_after_ack = sorted(after)
        done_at = work.done_at
        result.handed_out_after_done = sorted(
            {msg_id for sent_at, _, msg_id in work.handed if done_at.get(msg_id, sent_at) < sent_at}
        )
        result.returned_after_done = sum(
            1
            for _, returned_at, msg_id in work.handed
            if done_at.get(msg_id, returned_at) < returned_at
        )
        back = [
            i for i, (before, after_) in enumerate(itertools.pairwise(work.commits))
            if after_ < before
        ]  # fmt: skip
        result.commits_back = [(work.commits[i], work.commits[i + 1]) for i in back]
        result.commits_back_why = [why_back(work, i) for i in back]
        result.records_observed = work.records
        result.group_acks = len(work.group_acks)
        result.group_acks_unanswered = sum(1 for *_, outcome in work.group_acks if outcome)
        sent = [msg_id for _, _, msg_id, _ in sorted(work.group_acks)]
        highest_before = itertools.accumulate(sent[:-1], max)
        result.group_acks_lower = sum(
            1 for before, msg_id in zip(highest_before, sent[1:], strict=True) if msg_id < before
        )
        probe_ids = [msg_id for _, msg_id in work.probes]
        result.probes_reused = sorted(i for i, n in Counter(probe_ids).items() if n > 1)


def why_back(work: Workload, i: int) -> str:
    """What the readers' client did for the stored positions ``commits[i]`` and the lower
    ``commits[i + 1]`` (an ACK of msg_id stores msg_id + 1): each ACK of them, when sent
    (seconds into the lane) and how it ended, and which broker wrote each record."""
    start = min((at for at, *_ in work.group_acks), default=0.0)

    def acks_of(position: int) -> str:
        found = [
            f"sent {sent - start:.2f} s, {outcome or 'answered'} after {end - sent:.2f} s"
            for sent, end, msg_id, outcome in work.group_acks if msg_id + 1 == position
        ]  # fmt: skip
        return "; ".join(found) or "none sent by the readers"

    (high, low), ((seq_high, by_high), (seq_low, by_low)) = (
        work.commits[i : i + 2], work.commit_records[i : i + 2]
    )  # fmt: skip
    same = "the same broker" if by_high == by_low else "two brokers"
    return (
        f"{high} (seq {seq_high}; ACK {acks_of(high)}) then {low} (seq {seq_low}; "
        f"ACK {acks_of(low)}), written by {same}"
    )


async def _quiet(exc: Exception) -> None:
    """nats-py's errors while a server is down (it logs a traceback for each otherwise)."""


def _current(info: Any) -> bool:
    cluster = info.cluster
    replicas = (cluster.replicas or []) if cluster is not None else []
    return (
        cluster is not None
        and bool(cluster.leader)
        and len(replicas) == 2
        and all(r.current and not r.offline for r in replicas)
    )


async def run_lane(
    rounds_per_kind: int,
    broker_args: tuple[str, ...] = (),
    *,
    readers: str = "raw",
    pause: float = 2.0,
) -> LaneResult:
    """One lane run: ``rounds_per_kind`` kills of each kind (see the module), ``pause``
    seconds of traffic before each; ``readers``: "raw" (FETCH and ACK) or "group"
    (``GroupReader``s on one client)."""
    with tempfile.TemporaryDirectory(prefix="mq9-kill-lane-") as home:
        lane = KillLane(Path(home), broker_args, readers)
        try:
            return await lane.run(rounds_per_kind, pause=pause)
        except BaseException:
            for broker in lane.brokers:
                print(f"--- {broker.log_path.name}\n{broker.tail()}", file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.js_failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=11, help="kills of each kind (default 11)")
    parser.add_argument("--out", type=Path, help="write the rounds and the checks as JSON")
    parser.add_argument(
        "--readers", choices=("raw", "group"), default="raw",
        help="raw FETCH/ACK readers, or GroupReaders on one client (default raw)",
    )  # fmt: skip
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between kills")
    args = parser.parse_args(argv)
    started = time.monotonic()
    load = os.getloadavg()
    result = asyncio.run(run_lane(args.rounds, readers=args.readers, pause=args.pause))
    print(result.summary())
    print(f"lane time {time.monotonic() - started:.0f} s; load average at start {load}")
    if args.out is not None:
        record = {**asdict(result), "load_at_start": load, "clean": result.clean}
        args.out.write_text(json.dumps(record, indent=1))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
