"""The chaos lane of the cluster store: SIGKILLs of servers and brokers while two
brokers serve one mailbox to writers and competing readers.

Three JetStream nats-servers on loopback, one R3 layout, two broker processes
(``bench.js_broker``) in one queue group. Two writers SEND unique payloads (each answered
msg_id recorded; a SEND that raised is ambiguous: counted, not an error). ``--readers``
competing workers of one group (``GroupReader(worker=...)``, each on a client of its own:
leases, done records, acks as docs/groups.md says) fetch and call ``done`` on what they were
handed, retrying a ``done`` that raised until it returns; the lane records when each fetch
was sent and, for each ``done`` that returned, what it covered: the ids it was given and
every id up to the group position its reader had acked. Each round SIGKILLs, in turn, a
broker or a server (started again once the service answers), ``--rounds`` of them. Then the
readers read on until every answered SEND was handed out, and the lane counts: answered SENDs
never handed out (lost), messages a fetch of any reader sent after a ``done`` covering them
returned handed out again (done undone), msg_ids two answered SENDs were given, and msg_ids
handed out with a payload other than the SEND's that was answered with them (either would
hide a loss from the first count). Broker and server restarts run in a thread, so the
writers and readers go on while a process starts.

    python -m bench.js_chaos --rounds 30 --readers 2 --out js_chaos.json

``--streams N``: the layout's mailboxes over N message streams; the lane's mailbox is in
one of them, the kills hit every stream's replicas.

``--keys``: each SEND carries an idempotency key (its payload), and a SEND that raised
is sent again with its key until it is answered, as a caller who must not lose it would: the
lane then counts payloads stored twice (handed out under two msg_ids) beside those lost.

``--group``: the readers are ``GroupReader``s of the group WITHOUT worker names,
all on ONE client (docs/groups.md's invariant 9: a returned ``done`` holds for every reader of
the client), with ``--writers`` writers (4 and 4 make the lane). The client records every
ACK it sends and how it ended (``acks``: sent, unanswered, sent below one sent before) and
every FETCH answer holding a message at or below the highest ACK its readers had answered when
the FETCH was sent (``answers_behind_an_answered_ack``: the group's position as a broker read
it was behind an ACK stored before: a late lower write, or a stale read); how many messages
the readers handed out at or below the highest ACK answered when their fetch was sent
(``handed_out_at_or_below_an_answered_ack``); for each message handed out after a ``done``
given it had returned, its story (``undone_stories``: that fetch and that ``done`` with the
highest ACK answered then, every fetch and ``done`` of it, the ACKs around); and the msg_ids
FETCH answers gave two create_times (``msg_ids_answered_with_two_create_times``, with their
stream entries as the leader holds them: a create_time is JetStream's timestamp as the
replica that answered stored it).

    python -m bench.js_chaos --rounds 30 --group --readers 4 --writers 4 --out chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import nats

from bench.js_cluster import JetStreamCluster
from bench.js_store import BrokerProcess, open_layout, run_and_print
from langchain_mq9 import Mq9Client
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.jetstream.mapping import Layout, token
from mq9_platform.groups.reader import GroupReader, group_acks

MAILBOX = "chaos.lane"
GROUP = "g"


class RecordingClient(Mq9Client):
    """The group readers' one client (``--group``): every ACK it sends and how it ended, and
    every FETCH answer of the group holding a message at or below the highest ACK its readers
    had answered when it was sent."""

    def __init__(self, url: str, mailbox: str) -> None:
        super().__init__(url, request_timeout=10.0)
        self.mailbox = mailbox
        self.acks: list[tuple[float, float, int, str]] = []  # sent, ended, msg_id, raised
        # (when sent, the highest ACK answered then, the answer's ids at or below it)
        self.behind: list[tuple[float, int, list[int]]] = []
        # each msg_id's create_time as the first answer holding it said, and the msg_ids
        # answered later with another (the stream's timestamp, in whole seconds, as the
        # replica that answered the read stored it)
        self.stamps: dict[int, int] = {}
        self.restamped: dict[int, list[int]] = {}

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None:
        sent, outcome = time.monotonic(), ""
        try:
            await super().ack(mail_address, group_name, msg_id)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.acks.append((sent, time.monotonic(), msg_id, outcome))

    async def fetch(self, mail_address: str, **options: Any) -> list[Any]:
        sent = time.monotonic()
        highest = group_acks(self, self.mailbox, GROUP).highest
        answer = await super().fetch(mail_address, **options)
        for m in answer:
            first = self.stamps.setdefault(m.msg_id, m.create_time)
            if first != m.create_time:
                self.restamped.setdefault(m.msg_id, [first]).append(m.create_time)
        if highest is not None and options.get("group_name") == GROUP:
            old = [m.msg_id for m in answer if m.msg_id <= highest]
            if old:
                self.behind.append((sent, highest, old))
        return answer


def lane_mailbox(streams: int) -> str:
    """The lane's mailbox: with several streams, a name in the last of them (not the first,
    which a layout of one also has)."""
    if streams == 1:
        return MAILBOX
    layout = Layout("X", streams)  # (which stream depends on the name alone)
    return next(
        name
        for name in (f"{MAILBOX}.{n}" for n in range(10_000))
        if layout.stream_of(token(name)) == streams - 1
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg()}
    answered: dict[int, str] = {}
    answered_twice = 0  # msg_ids two answered SENDs were both given (a numbering fault)
    went_back = 0  # a writer's SEND answered with a msg_id below its SEND before
    warnings: list[str] = []  # what the lane's clients warned of
    ambiguous = 0
    texts: dict[int, str] = {}  # msg_id -> the payload a fetch first handed out under it
    other_text = 0  # handed out under an answered msg_id with another SEND's payload
    handed: list[tuple[float, list[int]]] = []  # (when a reader's fetch was sent, msg_ids)
    by_reader: dict[str, int] = {}  # how many messages each reader was handed
    # (when a done returned, the ids it was given, the group position its reader had acked)
    dones: list[tuple[float, list[int], int]] = []
    failures = {"fetch": 0, "done": 0}
    below_answered = 0  # --group: handed out at or below the highest ACK answered before
    # what each fetch and each returned done was, for the story of a done undone:
    # (reader, sent, returned, ids, the highest ACK answered when sent and when returned)
    fetch_log: list[tuple[str, float, float, list[int], int, int]] = []
    # (reader, returned, ids, its committed, the highest ACK answered then, ids finished then)
    done_log: list[tuple[str, float, list[int], int, int, list[int]]] = []
    kills: list[dict[str, Any]] = []
    mailbox = results["mailbox"] = lane_mailbox(args.streams)
    with JetStreamCluster(3) as cluster:
        urls = cluster.urls
        stream = f"X{uuid.uuid4().hex[:8]}"
        # (--streams: the layout's message streams; the brokers, restarted too, adopt it)
        setup = await open_layout(urls, stream, args.streams)
        await setup.close()
        brokers = [BrokerProcess(urls, stream, 3), BrokerProcess(urls, stream, 3)]
        writing = True
        urls_text = ",".join(urls)
        async with Mq9Client(urls_text, request_timeout=10.0) as writer_client:
            await writer_client.mailbox_create(name=mailbox, ttl=0)

            async def writer(number: int) -> None:
                # a client of its own: one SEND at a time, so each answer's msg_id must be
                # above the one before (the client warns otherwise; the lane counts it)
                nonlocal ambiguous, answered_twice, went_back
                index, last = 0, -1
                async with Mq9Client(urls_text, request_timeout=10.0) as client:
                    while writing:
                        text = f"{number}-{index}"
                        try:
                            key = text if args.keys else None
                            msg_id = await client.send(mailbox, text, idempotency_key=key)
                        except Exception:
                            ambiguous += 1
                            index += not args.keys  # (keyed: the same SEND again)
                            await asyncio.sleep(0.05)
                            continue
                        index += 1
                        answered_twice += msg_id in answered
                        went_back += msg_id <= last
                        last = max(last, msg_id)
                        answered[msg_id] = text
                    warnings.extend(client.warnings.values())

            shared = RecordingClient(urls_text, mailbox) if args.group else None

            async def reader(number: int, until: asyncio.Event) -> None:
                nonlocal other_text, below_answered
                async with contextlib.AsyncExitStack() as stack:
                    if shared is not None:  # --group: one client, no worker names
                        client: Mq9Client = shared
                        group = GroupReader(client, mailbox, GROUP)
                    else:
                        client = await stack.enter_async_context(
                            Mq9Client(urls_text, request_timeout=10.0)
                        )
                        group = GroupReader(
                            client, mailbox, GROUP, worker=f"w{number}", max_deliveries=None
                        )
                    while True:
                        sent = time.monotonic()
                        answered = group_acks(client, mailbox, GROUP).highest
                        try:
                            got = await group.fetch(num_msgs=50)
                        except Exception:
                            failures["fetch"] += 1
                            await asyncio.sleep(0.05)
                            continue
                        ids = [m.msg_id for m in got]
                        if shared is not None and answered is not None:
                            below_answered += sum(1 for i in ids if i <= answered)
                        for m in got:
                            first = texts.setdefault(m.msg_id, m.text())
                            other_text += first != m.text()
                        handed.append((sent, ids))
                        if shared is not None:
                            now_acks = group_acks(client, mailbox, GROUP)
                            fetch_log.append(
                                (
                                    f"w{number}",
                                    sent,
                                    time.monotonic(),
                                    ids,
                                    -1 if answered is None else answered,
                                    -1 if now_acks.highest is None else now_acks.highest,
                                )
                            )
                        by_reader[f"w{number}"] = by_reader.get(f"w{number}", 0) + len(ids)
                        if not ids:
                            if until.is_set():
                                warnings.extend(client.warnings.values())
                                return
                            await asyncio.sleep(0.02)
                            continue
                        while True:  # a done that raised is sent again until it returns
                            try:
                                await group.done(ids)
                                break
                            except Exception:
                                failures["done"] += 1
                                await asyncio.sleep(0.05)
                        dones.append((time.monotonic(), ids, group.committed or -1))
                        if shared is not None:
                            now_acks = group_acks(client, mailbox, GROUP)
                            done_log.append(
                                (
                                    f"w{number}",
                                    dones[-1][0],
                                    ids,
                                    group.committed or -1,
                                    -1 if now_acks.highest is None else now_acks.highest,
                                    sorted(i for i in ids if i in now_acks.finished),
                                )
                            )

            finished = asyncio.Event()
            if shared is not None:
                await shared.connect()
            tasks = [asyncio.create_task(writer(n)) for n in range(args.writers)]
            reading = [asyncio.create_task(reader(n, finished)) for n in range(args.readers)]
            started = time.monotonic()
            # (a start waits for the process in a thread: the writers and readers of this
            # loop go on meanwhile, as they would beside a real restart)
            for round_number in range(args.rounds):
                await asyncio.sleep(args.pause)
                at = time.monotonic() - started
                if round_number % 2 == 0:
                    slot = (round_number // 2) % 2
                    brokers[slot].process.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(brokers[slot].process.wait, 30)
                    brokers[slot] = await asyncio.to_thread(BrokerProcess, urls, stream, 3)
                    killed = f"broker {slot}"
                    took = brokers[slot].start_seconds  # launch to serving
                else:
                    server = cluster.servers[(round_number // 2) % 3]
                    await asyncio.to_thread(server.kill)
                    await asyncio.sleep(args.down)
                    back = time.monotonic()
                    await asyncio.to_thread(server.start)
                    killed = server.name
                    took = time.monotonic() - back  # launch to listening
                kills.append(
                    {
                        "round": round_number,
                        "killed": killed,
                        "at_seconds": round(at, 1),
                        "start_seconds": round(took, 2),
                    }
                )
            results["kill_seconds"] = time.monotonic() - started
            writing = False
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                seen = {i for _, ids in handed for i in ids}
                if set(answered) <= seen:
                    break
                await asyncio.sleep(0.5)
            finished.set()
            await asyncio.gather(*reading)
            if shared is not None:
                warnings.extend(shared.warnings.values())
                await shared.close()
            # where each answered SEND never handed out is: in the stream, or not
            missing = sorted(set(answered) - {i for _, ids in handed for i in ids})
            probe = await nats.connect(urls)
            store = ClusterStore(probe, name=stream, replicas=3, streams=args.streams)
            await store.requests.start()
            in_stream = []
            for msg_id in missing[:50]:
                in_stream.append(await store.find(mailbox, msg_id) is not None)
            results["missing_first_50_in_stream"] = in_stream
            if shared is not None:  # each stream entry of a msg_id answered with two stamps
                layout = Layout(stream, args.streams)
                entries: dict[str, list[list[Any]]] = {}
                name = layout.stream_name(layout.stream_of(token(mailbox)))
                for msg_id in list(shared.restamped)[:5]:
                    found: list[list[Any]] = []
                    seq = 0
                    while len(found) < 10:
                        entry = await store.requests.leader_get(
                            name, seq=seq, next_by_subject=layout.id_filter(mailbox, msg_id)
                        )
                        if entry is None:
                            break
                        found.append([entry.seq, entry.time, entry.subject, len(entry.data)])
                        seq = entry.seq + 1
                    entries[str(msg_id)] = found
                results["restamped_entries"] = entries
            results["missing_first_50"] = missing[:50]
            await store.close()
            await probe.close()
        for broker in brokers:
            broker.stop()
    seen = {i for _, ids in handed for i in ids}
    undone = _handed_out_after_done(handed, dones)
    if shared is not None:
        below, top = 0, -1
        for _, _, msg_id, _ in sorted(shared.acks):
            below += msg_id < top
            top = max(top, msg_id)
        results["acks"] = {
            "sent": len(shared.acks),
            "unanswered": sum(1 for *_, outcome in shared.acks if outcome),
            "sent_below_one_sent_before": below,
        }
        results["answers_behind_an_answered_ack"] = len(shared.behind)
        results["answers_behind_first"] = [
            {"highest": highest, "ids": ids[:10]} for _, highest, ids in shared.behind[:10]
        ]
        results["handed_out_at_or_below_an_answered_ack"] = below_answered
        results["undone_stories"] = _stories(fetch_log, done_log, shared.acks)
        results["msg_ids_answered_with_two_create_times"] = len(shared.restamped)
        results["restamped_first"] = dict(list(shared.restamped.items())[:10])
    results.update(
        kills=kills,
        sends_answered=len(answered),
        msg_ids_answered_twice=answered_twice,
        msg_ids_below_the_writers_last=went_back,
        client_warnings=warnings,
        handed_out_with_another_payload=other_text
        + sum(1 for i, text in answered.items() if i in texts and texts[i] != text),
        sends_ambiguous=ambiguous,
        payloads_stored_twice=sum(n - 1 for n in Counter(texts.values()).values()),
        answered_never_handed_out=len(set(answered) - seen),
        handed_out_after_a_covering_done=undone,
        fetches=len(handed),
        dones=len(dones),
        handed_by_reader=by_reader,
        failures_retried=failures,
        load_after=os.getloadavg(),
    )
    return results


def _stories(
    fetch_log: list[tuple[str, float, float, list[int], int, int]],
    done_log: list[tuple[str, float, list[int], int, int, list[int]]],
    acks: list[tuple[float, float, int, str]],
) -> list[dict[str, Any]]:
    """For each id a fetch handed out after a done given it had returned (at most 10): the
    fetch, the done, every fetch and done of that id, and the ACKs sent around them."""
    first_done: dict[int, tuple[str, float, list[int], int, int, list[int]]] = {}
    for entry in sorted(done_log, key=lambda d: d[1]):
        for msg_id in entry[2]:
            first_done.setdefault(msg_id, entry)
    stories: list[dict[str, Any]] = []
    for reader, sent, returned, ids, highest_sent, highest_back in fetch_log:
        for msg_id in ids:
            done = first_done.get(msg_id)
            if done is None or done[1] >= sent or len(stories) >= 10:
                continue
            since = done[1] - 30
            stories.append(
                {
                    "msg_id": msg_id,
                    "fetch": [reader, sent, returned, highest_sent, highest_back, ids[0], ids[-1]],
                    "done": [done[0], done[1], min(done[2]), max(done[2]), *done[3:]],
                    "fetches_of_it": [
                        [r, s, b, hs, hb, min(i), max(i)]
                        for r, s, b, i, hs, hb in fetch_log
                        if msg_id in i
                    ],
                    "dones_of_it": [
                        [r, w, min(i), max(i), c, h, msg_id in fin]
                        for r, w, i, c, h, fin in done_log
                        if msg_id in i
                    ],
                    "acks_around": [
                        list(a) for a in sorted(acks) if since <= a[0] <= returned + 1
                    ][-60:],
                }
            )
    return stories


def _handed_out_after_done(
    handed: list[tuple[float, list[int]]], dones: list[tuple[float, list[int], int]]
) -> int:
    """How many ids fetches handed out after a ``done`` covering them had returned: an id
    is covered from the first ``done`` given it, or from the first whose reader had acked
    the group up to it or past (every id at or below an ack is done, docs/groups.md)."""
    dones = sorted(dones)
    given: dict[int, float] = {}
    times: list[float] = []
    highest: list[int] = []  # the highest acked position by each done's return
    for when, ids, committed in dones:
        for msg_id in ids:
            given.setdefault(msg_id, when)
        times.append(when)
        highest.append(max(committed, highest[-1] if highest else -1))
    undone = 0
    for sent, ids in handed:
        before = bisect.bisect_left(times, sent)  # the dones returned before this fetch
        acked = highest[before - 1] if before else -1
        undone += sum(1 for i in ids if i <= acked or given.get(i, sent) < sent)
    return undone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--readers", type=int, default=2, help="readers of one group")
    parser.add_argument("--writers", type=int, default=2, help="writers, a client each")
    parser.add_argument(
        "--group", action="store_true", help="GroupReaders without worker names, on one client"
    )
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--down", type=float, default=1.0, help="seconds a server stays down")
    parser.add_argument("--streams", type=int, default=1, help="the layout's message streams")
    parser.add_argument("--keys", action="store_true", help="SENDs keyed, resent")
    parser.add_argument("--out", type=Path)
    return run_and_print(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
