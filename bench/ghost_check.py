"""Targets 11f and 11g: what checking search answers against the listing costs.

On RobustMQ the client keeps a search hit only if the registry's listing names it
(``platform/mq9_platform/client/live_search.py``). The listing is read at most once per
``listing_ttl`` (1 s) per client, and again when a hit is missing from the one held; between
reads a check is a lookup per hit. Measured on the bundled engine in process (the check forced
on), text search, limit 20, at each size of ``cfg.ghost_check_sizes``: a search unchecked,
checked with the listing held, and checked with the listing read for it (the cost once per
``listing_ttl``).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from langchain_mq9 import Mq9Client
from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
from mq9_broker.state.registry import AgentRegistry
from mq9_wire import protocol as p

from .broker_scaling import REQUEST_TIMEOUT, agent_card
from .measure import Stats, fmt_seconds, interleave_async
from .results import Check

HELD_FACTOR = 1.2  # a check with the listing held: at most this many times an unchecked search
READ_SHARE = 0.1  # a check that reads the listing: at most this share of the request timeout
QUERY = "translate legal reports"


async def measure(size: int, rounds: tuple[int, int]) -> tuple[dict[str, Stats], int]:
    """The three variants' timings over ``size`` agents, and the listing's bytes."""
    engine = BrokerEngine()
    engine.search_index.ranker = AgentRegistry(embedder=None)  # text search: nothing embedded
    rng = random.Random(7)
    for i in range(size):
        await engine.handle(p.AGENT_REGISTER, None, p.encode(agent_card(i, rng)))
    listing = len(await engine.handle(p.AGENT_DISCOVER, None, b"{}"))
    name = f"ghostcheck{uuid.uuid4().hex}"
    install_memory_broker(name, engine)
    try:
        async with (
            Mq9Client(f"memory://{name}") as plain,
            Mq9Client(f"memory://{name}") as held,
            Mq9Client(f"memory://{name}") as reads,
        ):
            plain.check_search = False
            held.check_search, held.listing_ttl = True, 3600.0
            reads.check_search, reads.listing_ttl = True, 0.0

            def search(client: Mq9Client) -> Any:
                return lambda: client.agent_discover(text=QUERY, limit=20)

            stats = await interleave_async(
                {"unchecked": search(plain), "held": search(held), "read": search(reads)},
                rounds=rounds[0],
                block=rounds[1],
                warmup=1,
            )
    finally:
        drop_memory_broker(name)
    return stats, listing


async def run(cfg: Any) -> tuple[list[Check], list[tuple[str, str]]]:
    results = {size: await measure(size, cfg.discover_rounds) for size in cfg.ghost_check_sizes}
    biggest = cfg.ghost_check_sizes[-1]
    stats, _ = results[biggest]
    unchecked, held, read = (stats[k].median for k in ("unchecked", "held", "read"))
    checks = [
        Check(
            key="11f",
            title=f"text DISCOVER over {biggest:,} agents checked against a listing held vs "
            "unchecked (the check between listing reads: a lookup per hit)",
            ours_label="checked, listing held",
            ours=fmt_seconds(held),
            baseline_label="unchecked",
            baseline=fmt_seconds(unchecked),
            ratio=held / unchecked,
            op="<=",
            limit=HELD_FACTOR,
        ),
        Check(
            key="11g",
            title=f"text DISCOVER over {biggest:,} agents checked with the listing read for "
            "it (once per listing_ttl per client) vs the request timeout",
            ours_label="checked, listing read",
            ours=fmt_seconds(read),
            baseline_label="request timeout",
            baseline=fmt_seconds(REQUEST_TIMEOUT),
            ratio=read / REQUEST_TIMEOUT,
            op="<=",
            limit=READ_SHARE,
            ratio_label="ours / timeout",
        ),
    ]
    figures = [
        (
            f"search check at {size:,} agents (median; listing {listing / 2**20:.2f} MiB)",
            ", ".join(
                f"{label} {fmt_seconds(stats[key].median)}"
                for key, label in (
                    ("unchecked", "unchecked"),
                    ("held", "listing held"),
                    ("read", "listing read"),
                )
            ),
        )
        for size, (stats, listing) in results.items()
    ]
    return checks, figures
