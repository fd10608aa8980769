"""9i: another client's SEND while one client keeps COUNTs of a large
mailbox in flight, on ``mq9-dev-broker`` (a process, on its nats-server, the memory store).

A COUNT (``$mq9.AI.MSG.COUNT.<mailbox>``, the console's count of a mailbox's lanes, which it
asks again every 2 s of each mailbox it watches) is answered in the broker's read loop. It
walked the whole mailbox: one client keeping 8 COUNTs of a 200,000-message mailbox in flight
took another client's SEND p50 from 0.53 ms to 1,258 ms. The stores in this process now keep
the counts as they write (``Mailbox.live_counts``), and a COUNT reads them.

The counting client is a process of its own (``_Child``, switched on and off through its
stdin): while on, it keeps ``IN_FLIGHT`` COUNTs of the large mailbox going, a new one as each
is answered. The honest client SENDs to its own mailbox, back to back, in blocks that take
turns with the counter off (``idle``) and on (``counting``); the check is the SEND's p50 under
the COUNTs against idle: target <= 2x.

    python -m bench.hostile_count                     # the full size: 200,000 messages
    python -m bench.hostile_count --messages 20000    # smaller, quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time

import nats

from mq9_wire import protocol as p
from mq9_wire.protocol.subjects import count_subject
from testbed.ports import unclaimed_port

from .hostile_loop import READY, SETUP_TIMEOUT, _Child, _p50_p99, run_switched
from .measure import Stats, fmt_seconds, interleave_async_blocks
from .results import Check

TARGET = 2.0
IN_FLIGHT = 8
MESSAGES, MESSAGES_QUICK = 200_000, 20_000
BIG_BOX, HONEST_BOX = "counted.big", "honest.box"
FILL_BURST = 1_000  # SENDs published at once while the large mailbox is filled
ROUNDS, QUICK_ROUNDS = (10, 300), (2, 40)
# What the flooding client keeps in flight: COUNTs (the check), and beside them, for the
# figure of what any such flood of cheap reads costs here, QUERYs of one message
KINDS = {
    "count": (count_subject(BIG_BOX), b"{}"),
    "query": (p.query_subject(BIG_BOX), p.encode({"limit": 1})),
}


async def _fill(nc, box: str, messages: int) -> None:
    """``box`` created and given ``messages`` messages of 200 bytes, a burst at a time."""
    await nc.request(p.MAILBOX_CREATE, p.encode({"name": box, "ttl": 0}), timeout=SETUP_TIMEOUT)
    answers: asyncio.Queue = asyncio.Queue()
    inbox = nc.new_inbox()
    await nc.subscribe(f"{inbox}.*", cb=answers.put)
    subject, payload, sent = p.send_subject(box), b"m" * 200, 0
    while sent < messages:
        burst = min(FILL_BURST, messages - sent)
        for n in range(burst):
            await nc.publish(subject, payload, reply=f"{inbox}.{sent + n}")
        await nc.flush()
        for _ in range(burst):
            answer = await asyncio.wait_for(answers.get(), SETUP_TIMEOUT)
            if b'"error":""' not in answer.data[:20]:
                raise RuntimeError(f"a SEND filling {box} was refused: {answer.data[:200]!r}")
        sent += burst


async def _count_loop(
    url: str, kind: str, running: threading.Event, quiet: threading.Event
) -> None:
    """While ``running``: IN_FLIGHT requests of ``kind`` (a COUNT of the large mailbox, or for
    the figure beside it a QUERY of its first message) in flight, a new one as each is
    answered; "off" once those under way are answered. Counts on stderr at the end."""
    nc = await nats.connect(url)
    counted = {"answered": 0, "refused": 0, "under_way": 0}
    subject, body = KINDS[kind]

    async def one_after_another() -> None:
        while True:
            if not running.is_set():
                await asyncio.sleep(0.01)
                continue
            counted["under_way"] += 1
            try:
                reply = await nc.request(subject, body, timeout=600)
            finally:
                counted["under_way"] -= 1
            counted["answered" if b'"error":""' in reply.data[:20] else "refused"] += 1

    workers = [asyncio.ensure_future(one_after_another()) for _ in range(IN_FLIGHT)]
    try:
        while True:
            await asyncio.sleep(0.01)
            if quiet.is_set() and not running.is_set() and not counted["under_way"]:
                quiet.clear()
                print("off", flush=True)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        print(f"count: {counted}", file=sys.stderr, flush=True)
        await nc.close()


def counter_main(argv: list[str]) -> None:
    """The counting client's process: ``on`` and ``off`` lines on stdin; EOF ends it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=tuple(KINDS), default="count")
    args = parser.parse_args(argv)
    running, quiet = threading.Event(), threading.Event()
    loop = asyncio.new_event_loop()
    task = loop.create_task(_count_loop(args.url, args.kind, running, quiet))

    run_switched(loop, task, running, quiet)


async def _measure(
    url: str, flooders: dict[str, _Child], messages: int, quick: bool
) -> dict[str, object]:
    nc = await nats.connect(url)
    try:
        started = time.perf_counter()
        await _fill(nc, BIG_BOX, messages)
        filled = time.perf_counter() - started
        honest = p.encode({"name": HONEST_BOX, "ttl": 0})
        await nc.request(p.MAILBOX_CREATE, honest, timeout=SETUP_TIMEOUT)
        started = time.perf_counter()
        answer = json.loads((await nc.request(count_subject(BIG_BOX), b"{}", timeout=600)).data)
        one_count = time.perf_counter() - started
        if answer["error"] or answer["counts"]["normal"] != messages:
            raise RuntimeError(f"the COUNT of {BIG_BOX} answered {answer}")
        subject = p.send_subject(HONEST_BOX)

        def runner(kind: str | None):
            async def timed(n: int) -> list[float]:
                others = [child for name, child in flooders.items() if name != kind]
                for child in others:  # nothing of theirs still under way
                    child.say("off")
                for child in others:
                    await asyncio.to_thread(child.wait_for, "off")
                if kind is not None:
                    flooders[kind].say("on")
                    await asyncio.sleep(0.2)  # its requests under way
                out = []
                for _ in range(n):
                    began = time.perf_counter()
                    await nc.request(subject, b"hello", timeout=60)
                    out.append(time.perf_counter() - began)
                return out

            return timed

        rounds, block = QUICK_ROUNDS if quick else ROUNDS
        runners = {"idle": runner(None)} | {kind: runner(kind) for kind in flooders}
        stats = await interleave_async_blocks(runners, rounds=rounds, block=block)
        return {"stats": stats, "filled_s": filled, "one_count_s": one_count}
    finally:
        for child in flooders.values():
            child.say("off")
        await nc.close()


def run_on_dev_broker(messages: int, quick: bool) -> dict[str, object]:
    """The dev broker (memory store) and the flooding clients, started and stopped here."""
    port = unclaimed_port()
    broker = _Child(["-m", "mq9_broker", "--port", str(port), "--no-search"])
    url = f"nats://127.0.0.1:{port}"
    flooders: dict[str, _Child] = {}
    try:
        broker.wait_for(READY)
        for kind in KINDS:
            flooders[kind] = _Child(["-m", "bench.hostile_count", "--url", url, "--kind", kind])
        for child in flooders.values():
            child.wait_for("ready")
        return asyncio.run(_measure(url, flooders, messages, quick))
    finally:
        for child in flooders.values():
            child.stop()
        broker.stop()


def _figures(messages: int, quick: bool) -> tuple[dict[str, Stats], dict[str, object]]:
    found = run_on_dev_broker(messages, quick)
    stats = found.pop("stats")
    assert isinstance(stats, dict)
    return stats, found


def measure(quick: bool) -> tuple[list[Check], list[tuple[str, str]], list[str]]:
    messages = MESSAGES_QUICK if quick else MESSAGES
    stats, found = _figures(messages, quick)
    idle, counting, querying = stats["idle"], stats["count"], stats["query"]
    check = Check(
        key="9i",
        title=f"another client's SEND while one keeps {IN_FLIGHT} COUNTs of a "
        f"{messages:,}-message mailbox in flight vs idle (dev broker process)",
        ours_label="p50 under the COUNTs",
        ours=fmt_seconds(counting.median),
        baseline_label="p50 idle",
        baseline=fmt_seconds(idle.median),
        ratio=counting.median / idle.median,
        op="<=",
        limit=TARGET,
        note=f"{idle.n} SENDs per variant; memory store; under as many QUERYs of one message "
        f"instead: p50 {fmt_seconds(querying.median)} ({querying.median / idle.median:.2f}x)",
    )
    figures = [
        ("9i: honest SEND idle (p50 / p99)", _p50_p99(idle)),
        ("9i: honest SEND under the COUNTs (p50 / p99)", _p50_p99(counting)),
        ("9i: honest SEND under as many QUERYs of one message (p50 / p99)", _p50_p99(querying)),
        (f"9i: one COUNT of {messages:,} messages", fmt_seconds(float(found["one_count_s"]))),
    ]
    notes = [
        f"9i: a client keeps {IN_FLIGHT} COUNTs of one {messages:,}-message mailbox in flight "
        "(none may walk the mailbox in the broker's read loop); beside it, "
        "for the figure, another keeps as many QUERYs of one message in flight."
    ]
    return [check], figures, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_count")
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--quick", action="store_true", help="rounds of the quick run")
    args = parser.parse_args(argv)
    stats, found = _figures(args.messages, args.quick)
    idle = stats["idle"]
    print(
        f"filled {args.messages:,} in {found['filled_s']:.1f} s; one COUNT "
        f"{fmt_seconds(float(found['one_count_s']))}"
    )
    print(f"SEND idle p50 / p99: {_p50_p99(idle)} ({idle.n} SENDs a variant)")
    for kind in KINDS:
        ratio = stats[kind].median / idle.median
        print(f"under {IN_FLIGHT} {kind} in flight: {_p50_p99(stats[kind])}; p50 {ratio:.2f}x")
    print(f"target: the COUNTs' p50 <= {TARGET}x idle")


if __name__ == "__main__":
    if "--url" in sys.argv:
        counter_main(sys.argv[1:])
    else:
        main(sys.argv[1:])
