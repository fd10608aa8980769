"""The message streams' leaders spread over the servers: every write of a stream goes
through its leader, so a layout of several streams whose leaders sit on one server loads that
server as one stream did. After the streams are made, a store looks where their leaders are
and asks a stream whose leader's server holds two more leaders than another of its peers to
step down, preferring that peer (``STREAM.LEADER.STEPDOWN`` with ``placement.preferred``,
nats-server 2.11 on). Best effort: a start never fails on it, and the servers may place a
leader elsewhere (a peer not current is not elected); a stream changing leaders drops the
writes it gets meanwhile, which are sent again (the store's requests, a client's retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .requests import StorageRequests

log = logging.getLogger("mq9_broker")

SPREAD_SECONDS = 10.0  # the longest a start spends spreading the leaders (then it goes on)


def moves(placed: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """Which streams to move where: ``placed`` maps each stream to its leader's server and
    its peers' (the replicas'); the answer maps a stream to the peer it should prefer. A
    stream moves when one of its peers holds at least two leaders fewer than its leader's
    server (so no move is undone by the next), the peer holding fewest first; pure, so the
    choice is tested without servers."""
    counts: dict[str, int] = {}
    for leader, peers in placed.values():
        counts[leader] = counts.get(leader, 0) + 1
        for peer in peers:
            counts.setdefault(peer, 0)
    chosen: dict[str, str] = {}
    for stream in sorted(placed):
        leader, peers = placed[stream]
        candidates = sorted((counts[peer], peer) for peer in peers if peer != leader)
        if candidates and candidates[0][0] + 2 <= counts[leader]:
            peer = candidates[0][1]
            counts[leader] -= 1
            counts[peer] += 1
            chosen[stream] = peer
    return chosen


async def spread_leaders(
    requests: StorageRequests, streams: Sequence[str], *, again: float = 1.0
) -> dict[str, str]:
    """Ask the streams whose leaders crowd one server to move (``moves``); the moves asked
    (stream -> preferred server). Never raises: a failure, or ``SPREAD_SECONDS`` passed, is
    logged and the start goes on. ``again``: a stream info unanswered (a stream just made,
    electing its leader) asked again after that many seconds."""
    try:
        async with asyncio.timeout(SPREAD_SECONDS):
            return await _spread(requests, streams, again)
    except Exception as exc:  # (best effort: the streams serve wherever their leaders are)
        log.warning("the message streams' leaders were not spread: %s", exc or "no time left")
        return {}


async def _spread(
    requests: StorageRequests, streams: Sequence[str], again: float
) -> dict[str, str]:
    placed: dict[str, tuple[str, list[str]]] = {}
    for stream in streams:
        info = await requests.api(f"STREAM.INFO.{stream}", None, again=again)
        cluster: dict[str, Any] = info.get("cluster") or {}
        leader = cluster.get("leader")
        if leader:  # (none yet: left where the election puts it)
            peers = [str(replica["name"]) for replica in cluster.get("replicas") or []]
            placed[stream] = (str(leader), peers)
    chosen = moves(placed)
    for stream, peer in chosen.items():
        await requests.api(f"STREAM.LEADER.STEPDOWN.{stream}", {"placement": {"preferred": peer}})
        log.info("stream %s's leader asked to move to %s (leaders spread)", stream, peer)
    return chosen
