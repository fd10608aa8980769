"""Target 4: the bundled broker's cost does not grow with what it holds.

The engine is called directly (``BrokerEngine.handle``, the bytes a request carries on the
wire), in process, so the figures are the broker's own work. Mailboxes of every size live in
one engine and the sizes take turns, so the large and the small one see the same heap.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from mq9_broker import BrokerEngine
from mq9_wire import protocol as p

from . import plots
from .config import Config
from .measure import Stats, fmt_seconds, interleave_async_blocks
from .responders import PAYLOAD_SIZE
from .results import Check, Section

REQUEST_TIMEOUT = 5.0  # Mq9Client's default: DISCOVER must answer well within it
DISCOVER_SHARE = 0.02  # "well within": at most 2% of it (100 ms)
FILLER = b"m" * (PAYLOAD_SIZE - 8)
PRIORITY_HEADERS = (
    [None] * 16 + [{p.HEADER_PRIORITY: "urgent"}] * 3 + [{p.HEADER_PRIORITY: "critical"}]
)


def _body(i: int) -> bytes:
    # A fresh object per message, as a network read would give: no shared payload bytes.
    return i.to_bytes(8, "big") + FILLER


async def _fill(engine: BrokerEngine, address: str, count: int, rng: random.Random) -> None:
    await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": address}))
    subject = p.send_subject(address)
    for i in range(count):
        await engine.handle(subject, rng.choice(PRIORITY_HEADERS), _body(i))


def _check(reply: bytes) -> dict:
    decoded = json.loads(reply)
    if decoded["error"]:
        raise RuntimeError(f"broker refused a benchmark request: {decoded['error']}")
    return decoded


class MailboxOps:
    """Timed operations on one mailbox that leave its size as it was."""

    def __init__(self, engine: BrokerEngine, address: str, size: int, seed: int) -> None:
        self.engine = engine
        self.address = address
        self.size = size
        self.rng = random.Random(seed)

    def _start(self) -> int:
        return self.rng.randrange(0, max(1, self.size - 10))

    def _group_fetch_body(self) -> bytes:
        """A consumer group's FETCH of 10 from a random point (reset there each time)."""
        return p.encode(
            {
                "group_name": "bench",
                "deliver": "from_id",
                "from_id": self._start(),
                "force_deliver": True,
                "config": {"num_msgs": 10, "max_wait_ms": 0},
            }
        )

    async def send(self, n: int) -> list[float]:
        handle, clock, out = self.engine.handle, time.perf_counter, []
        subject = p.send_subject(self.address)
        for i in range(n):
            body = _body(i)
            started = clock()
            reply = await handle(subject, None, body)
            out.append(clock() - started)
            msg_id = _check(reply)["msg_id"]  # untimed: keep the size constant
            _check(await handle(p.delete_subject(self.address, msg_id), None, b""))
        return out

    async def fetch_group(self, n: int) -> list[float]:
        """A consumer group's FETCH of 10 (leases them); the ACK after it is not timed."""
        handle, clock, out = self.engine.handle, time.perf_counter, []
        subject, ack = p.fetch_subject(self.address), p.ack_subject(self.address)
        for _ in range(n):
            body = self._group_fetch_body()
            started = clock()
            reply = await handle(subject, None, body)
            out.append(clock() - started)
            last = _check(reply)["messages"][-1]["msg_id"]
            request = {"group_name": "bench", "mail_address": self.address, "msg_id": last}
            _check(await handle(ack, None, p.encode(request)))
        return out

    async def ack(self, n: int) -> list[float]:
        """The ACK of a 10-message batch (the FETCH before it is not timed)."""
        handle, clock, out = self.engine.handle, time.perf_counter, []
        subject, ack = p.fetch_subject(self.address), p.ack_subject(self.address)
        for _ in range(n):
            body = self._group_fetch_body()
            last = _check(await handle(subject, None, body))["messages"][-1]["msg_id"]
            request = p.encode(
                {"group_name": "bench", "mail_address": self.address, "msg_id": last}
            )
            started = clock()
            reply = await handle(ack, None, request)
            out.append(clock() - started)
            _check(reply)
        return out

    async def fetch_stateless(self, n: int) -> list[float]:
        handle, clock, out = self.engine.handle, time.perf_counter, []
        subject = p.fetch_subject(self.address)
        for _ in range(n):
            body = p.encode(
                {
                    "deliver": "from_id",
                    "from_id": self._start(),
                    "config": {"num_msgs": 10, "max_wait_ms": 0},
                }
            )
            started = clock()
            reply = await handle(subject, None, body)
            out.append(clock() - started)
            _check(reply)
        return out

    async def query(self, n: int) -> list[float]:
        handle, clock, out = self.engine.handle, time.perf_counter, []
        subject, body = p.query_subject(self.address), p.encode({"limit": 10})
        for _ in range(n):
            started = clock()
            reply = await handle(subject, None, body)
            out.append(clock() - started)
            _check(reply)
        return out


OPS = {
    "SEND": "send",
    "FETCH 10 (consumer group)": "fetch_group",
    "ACK of a 10-message batch": "ack",
    "FETCH 10 (stateless)": "fetch_stateless",
    "QUERY limit 10": "query",
}


# -- registry ----------------------------------------------------------------------------------

_VOCABULARY = (
    "translate translation document contract legal french german spanish chinese japanese "
    "summarize summary report meeting notes invoice billing payment refund customer support "
    "ticket triage email calendar schedule travel booking flight hotel weather forecast code "
    "review python testing deploy kubernetes database query sql analytics dashboard chart "
    "image caption vision audio transcribe speech video subtitle research search web crawl "
    "news finance stock portfolio risk compliance audit security scan vulnerability medical "
    "diagnosis research paper citation math solver physics chemistry biology recipe shopping "
    "inventory logistics shipping warehouse forecast sales marketing campaign social post "
    "writer editor proofread grammar style tone sentiment classify extract entity form pdf "
    "spreadsheet excel slides presentation design logo brand music playlist game tutor lesson"
)
_WORDS = sorted(set(_VOCABULARY.split()))

TEXT_QUERIES = {"text, 1 word": "translate", "text, 2 words": "legal contract"}
SEMANTIC_QUERIES = {
    "semantic, a need in words": "please translate this legal contract into French",
    "semantic, common words": "an agent that can review and summarize a report",
}


def agent_card(i: int, rng: random.Random) -> dict:
    """An A2A card (only those are searchable on RobustMQ), carrying its mailbox."""
    words = rng.sample(_WORDS, 8)
    return p.agent_card(
        f"agent.{i}",
        mailbox=f"agent.{i}.inbox",
        description=f"{words[0]} and {words[1]} agent: {' '.join(words[2:7])} "
        f"(specialty {words[7]} #{i % 97})",
        skills=[{"name": w, "description": f"{w} tasks"} for w in words[:3]],
    )


async def _registry(cfg: Config, section: Section, out: Path) -> None:
    engine = BrokerEngine()
    rng = random.Random(7)
    registered = 0
    curves: dict[str, list[tuple[float, float]]] = {}
    last: dict[str, Stats] = {}
    queries = {name: {"text": q} for name, q in TEXT_QUERIES.items()}
    queries |= {name: {"semantic": q} for name, q in SEMANTIC_QUERIES.items()}
    rounds, block = cfg.discover_rounds
    for size in cfg.registry_sizes:
        while registered < size:
            card = p.encode(agent_card(registered, rng))
            _check(await engine.handle(p.AGENT_REGISTER, None, card))
            registered += 1

        def runner(request: dict):
            body = p.encode({**request, "limit": 20})

            async def timed(n: int) -> list[float]:
                out_, clock = [], time.perf_counter
                for _ in range(n):
                    started = clock()
                    reply = await engine.handle(p.AGENT_DISCOVER, None, body)
                    out_.append(clock() - started)
                    _check(reply)
                return out_

            return timed

        results = await interleave_async_blocks(
            {name: runner(q) for name, q in queries.items()},
            rounds=rounds,
            block=block,
            warmup=1,
        )
        for name, stats in results.items():
            curves.setdefault(name, []).append((size, stats.median * 1e3))
        last = results
    biggest = cfg.registry_sizes[-1]
    for key, kind in (("4d", "text"), ("4e", "semantic")):
        name = max((n for n in last if n.startswith(kind)), key=lambda n: last[n].median)
        median = last[name].median
        section.checks.append(
            Check(
                key=key,
                title=f"DISCOVER ({name}) over {biggest:,} agents vs the request timeout"
                + (
                    f", ranking: {engine.search_index.ranker.ranking}" if kind == "semantic" else ""
                ),
                ours_label="DISCOVER",
                ours=fmt_seconds(median),
                baseline_label="request timeout",
                baseline=fmt_seconds(REQUEST_TIMEOUT),
                ratio=median / REQUEST_TIMEOUT,
                op="<=",
                limit=DISCOVER_SHARE,
                note="the slower of its queries",
            )
        )
    for name, points in curves.items():
        section.figures.append(
            (f"DISCOVER {name}", ", ".join(f"{n:,}: {ms:.2f} ms" for n, ms in points))
        )
    if plots.curves(
        out / "discover_vs_registry.png",
        curves,
        title="DISCOVER vs registry size (engine in process, limit 20)",
        xlabel="registered agents",
        ylabel="median ms per DISCOVER",
        xlog=False,  # a straight line here means cost proportional to the registry
    ):
        section.plots.append(("discover_vs_registry.png", "DISCOVER cost vs registry size"))


async def _mailboxes(cfg: Config, section: Section, out: Path) -> None:
    engine = BrokerEngine()
    rng = random.Random(11)
    boxes = {}
    for size in cfg.mailbox_sizes:
        address = f"bench.size.{size}"
        await _fill(engine, address, size, rng)
        boxes[size] = MailboxOps(engine, address, size, seed=size)
    rounds, block = cfg.engine_rounds
    medians: dict[str, dict[int, Stats]] = {}
    for label, method in OPS.items():
        results = await interleave_async_blocks(
            {str(size): getattr(ops, method) for size, ops in boxes.items()},
            rounds=rounds,
            block=block,
        )
        medians[label] = {int(size): stats for size, stats in results.items()}
    small, large = cfg.mailbox_sizes[0], cfg.mailbox_sizes[-1]
    for key, label, limit in (
        ("4a", "FETCH 10 (consumer group)", 2.0),
        ("4b", "QUERY limit 10", 2.0),
        ("4c", "SEND", 1.5),
    ):
        a, b = medians[label][large].median, medians[label][small].median
        section.checks.append(
            Check(
                key=key,
                title=f"engine {label}: mailbox of {large:,} vs {small:,} messages",
                ours_label=f"{large:,} msgs",
                ours=fmt_seconds(a),
                baseline_label=f"{small:,} msgs",
                baseline=fmt_seconds(b),
                ratio=a / b,
                op="<=",
                limit=limit,
            )
        )
    for label, by_size in medians.items():
        section.figures.append(
            (
                f"engine {label}",
                ", ".join(f"{n:,}: {fmt_seconds(s.median)}" for n, s in sorted(by_size.items())),
            )
        )
    curves = {
        label: [(size, stats.median * 1e6) for size, stats in by_size.items()]
        for label, by_size in medians.items()
    }
    if plots.curves(
        out / "mailbox_scaling.png",
        curves,
        title="Engine cost per request vs messages in the mailbox",
        xlabel="messages held by the mailbox",
        ylabel="median µs per request",
    ):
        section.plots.append(("mailbox_scaling.png", "Engine cost vs mailbox size"))


def run(cfg: Config, out: Path) -> Section:
    section = Section("broker", "Bundled broker scaling, engine in process (target 4)")
    asyncio.run(_mailboxes(cfg, section, out))
    asyncio.run(_registry(cfg, section, out))
    section.notes.append(
        "`BrokerEngine.handle` is called with the request bytes as they arrive from NATS. "
        "Mailboxes hold 200-byte messages, 80% normal, 15% urgent, 5% critical. FETCH starts "
        "at a random msg_id (`from_id`) so the large mailbox is read all over, not at one hot "
        "end; SEND is followed by an untimed DELETE so sizes stay put; a consumer-group FETCH "
        "is followed by an untimed ACK of its batch (and the ACK row times the ACK alone)."
    )
    section.notes.append(
        f"DISCOVER over synthetic agent cards (8 of {len(_WORDS)} capability words each, "
        "plus skills); `limit` 20, replies JSON-encoded as on the wire. Target: the slower "
        f"query kind answers within {DISCOVER_SHARE:.0%} of the {REQUEST_TIMEOUT:g} s default "
        "request timeout."
    )
    return section
