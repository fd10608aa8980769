"""9a, 9c: what one hostile client can do to everyone else on the bundled broker.

The engine answers every request on one loop, so a request that costs a lot stalls every
client queued behind it. Both checks run the engine in process (``BrokerEngine.handle``) and
compare side by side (``measure.interleave_async_blocks``):

* 9a: an honest client's SEND, queued behind four other clients' requests. Hostile: four
  QUERYs that find nothing, by tags on a large mailbox and with no filter on a mailbox whose
  messages all expired (each once walked the whole mailbox). Baseline: four ordinary SENDs.
  Target <= 1.5x: a hostile QUERY then costs about what ordinary traffic costs, however many
  messages the mailbox holds.
* 9c: the default DISCOVER (a listing of every agent) with a hostile card as large as the
  broker keeps registered, against the same registry without it. It must succeed (before, one
  card near 1 MiB made it fail for everyone) and cost at most 2x: the hostile card is at most
  ``max_card_bytes`` more to encode and send.
"""

from __future__ import annotations

import asyncio
import json

from mq9_broker import BrokerEngine, ManualClock
from mq9_wire import protocol as p

from .measure import fmt_seconds, interleave_async_blocks
from .results import Check

HOSTILE_CLIENTS = 4
SEND_TARGET = 1.5
DISCOVER_TARGET = 2.0


async def _ok(engine: BrokerEngine, subject: str, body: bytes = b"", headers=None) -> dict:
    reply = json.loads(await engine.handle(subject, headers, body))
    if reply["error"]:
        raise RuntimeError(f"{subject}: {reply['error']}")
    return reply


async def _mailbox(engine: BrokerEngine, name: str, messages: int, headers: dict) -> None:
    await _ok(engine, p.MAILBOX_CREATE, p.encode({"name": name, "ttl": 0}))
    payload = b"x" * 200
    for _ in range(messages):
        await _ok(engine, p.MSG_SEND + name, payload, headers)


async def _send_check(quick: bool) -> tuple[Check, list[tuple[str, str]]]:
    messages = 20_000 if quick else 200_000
    clock = ManualClock()
    engine = BrokerEngine(clock=clock)
    await _mailbox(engine, "big", messages, {p.HEADER_TAGS: "a,b"})
    await _mailbox(engine, "expired", messages, {p.HEADER_TTL: "1"})
    await _ok(engine, p.MAILBOX_CREATE, b'{"name":"honest","ttl":0}')
    await _ok(engine, p.MAILBOX_CREATE, b'{"name":"others","ttl":0}')
    clock.advance(5)  # every message of "expired" is past its TTL
    hostile = [
        (p.MSG_QUERY + "big", b'{"tags":["nope"]}'),
        (p.MSG_QUERY + "expired", b"{}"),
        (p.MSG_QUERY + "big", b'{"tags":["none","nothing"]}'),
        (p.MSG_QUERY + "expired", b'{"tags":["a"]}'),
    ][:HOSTILE_CLIENTS]
    first = {}
    for subject, body in hostile:  # the first of each kind may walk what it learns to skip
        started = asyncio.get_running_loop().time()
        found = await _ok(engine, subject, body)
        first[subject + body.decode()] = asyncio.get_running_loop().time() - started
        assert found["messages"] == []

    def runner(queued: list[tuple[str, bytes]]):
        async def timed(n: int) -> list[float]:
            out: list[float] = []
            loop = asyncio.get_running_loop()
            for _ in range(n):
                started = loop.time()
                for subject, body in queued:  # the requests ahead of the honest SEND
                    await engine.handle(subject, None, body)
                await engine.handle(p.MSG_SEND + "honest", None, b"hello")
                out.append(loop.time() - started)
            return out

        return timed

    ordinary = [(p.MSG_SEND + "others", b"y" * 200)] * HOSTILE_CLIENTS
    rounds, block = (5, 40) if quick else (15, 200)
    stats = await interleave_async_blocks(
        {"hostile": runner(hostile), "ordinary": runner(ordinary), "alone": runner([])},
        rounds=rounds,
        block=block,
    )
    with_hostile, baseline = stats["hostile"].median, stats["ordinary"].median
    check = Check(
        key="9a",
        title=f"honest SEND behind {HOSTILE_CLIENTS} empty QUERYs on {messages:,}-message "
        "mailboxes vs behind ordinary SENDs",
        ours_label="behind hostile QUERYs",
        ours=fmt_seconds(with_hostile),
        baseline_label="behind ordinary SENDs",
        baseline=fmt_seconds(baseline),
        ratio=with_hostile / baseline,
        op="<=",
        limit=SEND_TARGET,
        note="engine in process; p50 of the honest SEND's wait plus its own time",
    )
    figures = [("honest SEND alone (p50)", fmt_seconds(stats["alone"].median))]
    figures += [(f"first QUERY {name}", fmt_seconds(t)) for name, t in first.items()]
    return check, figures


def _card(name: str, filler: int = 0) -> bytes:
    card = p.agent_card(name, mailbox=f"{name}.inbox", description=f"{name} agent")
    card["skills"] = [{"id": "pad", "name": "pad", "description": "x" * filler}] if filler else []
    return p.encode(card)


async def _discover_check(quick: bool) -> tuple[Check, list[tuple[str, str]]]:
    agents = 300 if quick else 1_000
    engines = {"hostile": BrokerEngine(), "plain": BrokerEngine()}
    for engine in engines.values():
        for i in range(agents):
            await _ok(engine, p.AGENT_REGISTER, _card(f"agent.{i}"))
    hostile = engines["hostile"]
    # as large a card as the broker keeps, sorted first so that every listing carries it
    room = getattr(hostile.limits, "max_card_bytes", None) or hostile.limits.max_payload - 1_000
    base = len(_card("aaa.hostile"))
    await _ok(hostile, p.AGENT_REGISTER, _card("aaa.hostile", room - base - 100))
    outcomes: dict[str, str] = {}

    def runner(name: str):
        engine = engines[name]

        async def timed(n: int) -> list[float]:
            out: list[float] = []
            loop = asyncio.get_running_loop()
            for _ in range(n):
                started = loop.time()
                reply = json.loads(await engine.handle(p.AGENT_DISCOVER, None, b"{}"))
                out.append(loop.time() - started)
                outcomes[name] = reply["error"] or f"{len(reply['agents'])} agents"
            return out

        return timed

    rounds, block = (5, 10) if quick else (15, 40)
    stats = await interleave_async_blocks(
        {name: runner(name) for name in engines}, rounds=rounds, block=block
    )
    ours, baseline = stats["hostile"].median, stats["plain"].median
    failed = [name for name, outcome in outcomes.items() if not outcome.endswith(" agents")]
    check = Check(
        key="9c",
        title=f"default DISCOVER over {agents} agents with a hostile near-limit card vs without",
        ours_label="with the hostile card",
        ours=fmt_seconds(ours),
        baseline_label="without",
        baseline=fmt_seconds(baseline),
        ratio=float("inf") if failed else ours / baseline,  # a failed DISCOVER fails 9c
        op="<=",
        limit=DISCOVER_TARGET,
        note=(
            "failed: " + "; ".join(f"{n}: {outcomes[n]}" for n in failed)
            if failed
            else f"hostile card {room - 100:,} bytes; answers: "
            + ", ".join(f"{n} {o}" for n, o in outcomes.items())
        ),
    )
    return check, [("DISCOVER answers", ", ".join(f"{n}: {o}" for n, o in outcomes.items()))]


def measure(quick: bool) -> tuple[list[Check], list[tuple[str, str]], list[str]]:
    """The checks (9a, 9c), the figures behind them, and notes."""

    async def run():
        return await _send_check(quick), await _discover_check(quick)

    (send, send_figures), (discover, discover_figures) = asyncio.run(run())
    notes = [
        "9a: the honest client's SEND goes to its own mailbox; the hostile QUERYs find "
        "nothing, by tags that no message carries and over messages whose TTL ended.",
        "9c: a card just under 1 MiB would make every default DISCOVER fail; a card "
        "is at most max_card_bytes (64 KiB) and an answer holds the agents that fit.",
    ]
    return [send, discover], send_figures + discover_figures, notes
