"""The chaos lane of the cluster store (issue #72): SIGKILLs of servers and brokers while two
brokers serve one mailbox to writers and a reader.

Three JetStream nats-servers on loopback, one R3 layout, two broker processes
(``bench.js_broker``) in one queue group. Two writers SEND unique payloads (each answered
msg_id recorded; a SEND that raised is ambiguous: counted, not an error); a reader FETCHes in
one group and ACKs the largest msg_id of each answer once it has it (acks only forward,
one priority, so an ACK covers exactly what was read), recording when each FETCH was sent and
each ACK answered. Each round SIGKILLs, in turn, a broker or a server (started again once the
service answers), ``--rounds`` of them. Then the reader reads on until every answered SEND
was handed out, and the lane counts: answered SENDs never handed out (lost), and messages a
FETCH sent after an ACK covering them was answered handed out again (done undone).

    python -m bench.js_chaos --rounds 30 --out /tmp/js_chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats

from bench.js_cluster import JetStreamCluster
from bench.js_store import STARTED, BrokerProcess
from langchain_mq9 import Mq9Client
from langchain_mq9.broker.storage.cluster import ClusterStore

MAILBOX = "chaos.lane"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg()}
    answered: dict[int, str] = {}
    ambiguous = 0
    handed: list[tuple[float, list[int]]] = []  # (when the FETCH was sent, msg_ids)
    acks: list[tuple[float, int]] = []  # (when the ACK was answered, msg_id)
    kills: list[dict[str, Any]] = []
    with JetStreamCluster(3) as cluster:
        urls = cluster.urls
        stream = f"X{uuid.uuid4().hex[:8]}"
        setup = await nats.connect(urls)
        deadline = time.monotonic() + 120  # a cluster forming elects its JetStream leader
        while True:
            try:
                await ClusterStore(setup, name=stream, replicas=3, timeout=5).open()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
        await setup.close()
        brokers = [BrokerProcess(urls, stream, 3), BrokerProcess(urls, stream, 3)]
        writing = True
        options = {"request_timeout": 10.0}
        async with (
            Mq9Client(",".join(urls), **options) as writer_client,
            Mq9Client(",".join(urls), **options) as reader_client,
        ):
            await writer_client.mailbox_create(name=MAILBOX, ttl=0)

            async def writer(number: int) -> None:
                nonlocal ambiguous
                index = 0
                while writing:
                    text = f"{number}-{index}"
                    index += 1
                    try:
                        answered[await writer_client.send(MAILBOX, text)] = text
                    except Exception:
                        ambiguous += 1
                        await asyncio.sleep(0.05)

            async def reader(until: asyncio.Event) -> None:
                while True:
                    sent = time.monotonic()
                    try:
                        got = await reader_client.fetch(
                            MAILBOX, group_name="g", deliver="earliest", num_msgs=50
                        )
                    except Exception:
                        await asyncio.sleep(0.05)
                        continue
                    ids = [m.msg_id for m in got]
                    handed.append((sent, ids))
                    if ids:
                        try:
                            await reader_client.ack(MAILBOX, "g", max(ids))
                            acks.append((time.monotonic(), max(ids)))
                        except Exception:
                            pass
                    elif until.is_set():
                        return
                    else:
                        await asyncio.sleep(0.02)

            finished = asyncio.Event()
            tasks = [asyncio.create_task(writer(n)) for n in range(2)]
            reading = asyncio.create_task(reader(finished))
            for round_number in range(args.rounds):
                await asyncio.sleep(args.pause)
                if round_number % 2 == 0:
                    slot = (round_number // 2) % 2
                    brokers[slot].process.send_signal(signal.SIGKILL)
                    brokers[slot].process.wait(30)
                    brokers[slot] = BrokerProcess(urls, stream, 3)
                    kills.append({"round": round_number, "killed": f"broker {slot}"})
                else:
                    server = cluster.servers[(round_number // 2) % 3]
                    server.kill()
                    await asyncio.sleep(args.down)
                    server.start()
                    kills.append({"round": round_number, "killed": server.name})
            writing = False
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                seen = {i for _, ids in handed for i in ids}
                if set(answered) <= seen:
                    break
                await asyncio.sleep(0.5)
            finished.set()
            await reading
            # where each answered SEND never handed out is: in the stream, or not
            missing = sorted(set(answered) - {i for _, ids in handed for i in ids})
            probe = await nats.connect(urls)
            store = ClusterStore(probe, name=stream, replicas=3)
            await store.requests.start()
            in_stream = []
            for msg_id in missing[:50]:
                entry = await store.requests.leader_get(store.layout.messages, seq=msg_id)
                in_stream.append(entry is not None)
            results["missing_first_50_in_stream"] = in_stream
            results["missing_first_50"] = missing[:50]
            await store.close()
            await probe.close()
        for broker in brokers:
            broker.stop()
    seen = {i for _, ids in handed for i in ids}
    undone = 0
    for sent, ids in handed:
        covered = max((acked for when, acked in acks if when < sent), default=-1)
        undone += sum(1 for i in ids if i <= covered)
    results.update(
        kills=kills,
        sends_answered=len(answered),
        sends_ambiguous=ambiguous,
        answered_never_handed_out=len(set(answered) - seen),
        handed_out_after_a_covering_ack=undone,
        fetches=len(handed),
        acks=len(acks),
        load_after=os.getloadavg(),
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--down", type=float, default=1.0, help="seconds a server stays down")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        results = asyncio.run(run(args))
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
