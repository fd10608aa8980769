"""Waiting for a NATS cluster still forming, before a JetStream broker keeps its state there:
JetStream answering (its leader elected), the state's stream answering, as many servers
joined as the replicas need, and what the broker makes (buckets, the stream) placed.

Each wait is a ``Waiting``: it says what it waits for, and past its deadline fails in one line
(``ClusterError``); what can never come (JetStream off, a lone server asked for 3 replicas) fails
at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsConnection

from mq9_wire.nats_floor.jetstream.api import ErrorCode, err_code
from mq9_wire.nats_floor.jetstream.ready import until_ready
from mq9_wire.nats_floor.jetstream.requests import JetStreamError, api_request, stream_info
from mq9_wire.nats_floor.redaction import redact

from .config import StartupError
from .identities.store import CredentialError
from .nats_servers.survey import (
    POLL,
    ClusterError,
    Waiting,
    distinct,
    replicas_for,
    servers_told,
    survey,
)
from .storage import StorageError

log = logging.getLogger("mq9_broker")
T = TypeVar("T")


async def await_cluster(
    connection: NatsConnection, servers: list[str], replicas: int | None, stream: str,
    shown: str, wait: Waiting,
) -> int:  # fmt: skip
    """Wait until JetStream answers on the cluster and, when the state's stream is still to
    be made, until the cluster tells of as many servers as it needs: ``replicas``
    (``--replicas``), else 3 when ``servers`` name 3 or more distinct servers, else 1. The
    replicas of what the broker creates: ``replicas``, else the existing stream's, else from the
    servers the cluster tells of (``replicas_for``), never from the URLs' spelling."""
    await _await_jetstream(connection, shown, wait)
    existing = await _stream_replicas(connection, stream, wait)
    if existing:  # made already: a server down for a while does not keep the broker waiting
        return replicas or existing
    log.info(
        "no JetStream stream %s in the account the broker logs in to: it starts on a new, "
        "empty state (one kept before the servers' accounts changed is moved with the NATS "
        "CLI's 'nats stream backup' and 'restore': docs/deploy.md)",
        stream,
    )
    want = replicas or (3 if distinct(servers) >= 3 else 1)
    while True:
        infos = await survey(servers, shown)
        url, info = max(infos.items(), key=lambda item: servers_told(item[1]))
        if want > 1 and not info.get("cluster"):
            raise ClusterError(
                f"the nats-server at {redact(url)} is not clustered (no cluster block in its "
                f"config), so it cannot hold {want} replicas of the state: name the servers "
                "of a NATS cluster in --nats, or pass --replicas 1"
            )
        told = servers_told(info)
        if told >= want:
            return replicas or replicas_for(info)
        wait.until(f"the NATS cluster at {shown} to have {want} servers (it has {told} so far)")
        await asyncio.sleep(POLL)


async def _stream_replicas(connection: NatsConnection, stream: str, wait: Waiting) -> int | None:
    """The replicas of ``stream`` when it exists, None when it does not; while it does not
    answer (its leader being elected), waited for."""

    async def replicas() -> int | None:
        info = await stream_info(connection, stream, timeout=2)
        return None if info is None else int(info["config"].get("num_replicas") or 1)

    def not_yet(exc: Exception) -> None:  # there, but no leader answering just now
        wait.until(f"the JetStream stream {stream} to elect its leader")

    return await until_ready(replicas, not_yet, pause=POLL)


async def _await_jetstream(connection: NatsConnection, shown: str, wait: Waiting) -> None:
    """Until JetStream answers the broker's user: a cluster just started (or still missing
    servers) elects its JetStream leader first; JetStream off is said at once."""
    import nats.errors

    def not_yet(exc: Exception) -> None:
        if isinstance(exc, nats.errors.NoRespondersError | JetStreamError):
            code = err_code(exc)
            if not code:  # nothing answers the JetStream API (nats-py's "503")
                raise ClusterError(
                    f"JetStream is not available on {shown}: start each nats-server with -js, "
                    "or with a jetstream block in its config (or drop --store jetstream)"
                ) from None
            if code != ErrorCode.JETSTREAM_UNAVAILABLE:  # (that one: no leader yet)
                raise ClusterError(
                    f"JetStream on {shown} refuses the broker: {exc}{_hint(exc)}"
                ) from None
        elif not isinstance(exc, TimeoutError | nats.errors.TimeoutError):
            raise exc  # (a timeout: no JetStream leader to answer yet)
        wait.until(f"the JetStream cluster at {shown} to elect its leader")

    await until_ready(lambda: api_request(connection, "INFO", None, timeout=2), not_yet, pause=POLL)


async def placed(wait: Waiting, what: str, make: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``make(*args, **kw)`` on a thread, tried again while the cluster cannot place ``what``
    yet (its servers still registering with JetStream), within ``wait``."""

    def not_yet(exc: Exception) -> None:
        if not isinstance(exc, StorageError | CredentialError):
            raise exc
        if isinstance(exc, StorageError) and refused_for_good(exc):
            raise exc
        wait.until(f"the JetStream cluster to place {what} ({redact(str(exc))})")

    return await until_ready(lambda: asyncio.to_thread(make, *args, **kw), not_yet, pause=POLL)


OLD_SUBJECT_PREFIX = "mq9state"  # the subjects of the stream an earlier version wrote


async def refuse_old_format(connection: NatsConnection, stream: str) -> None:
    """Refuse to start beside a stream named ``stream`` itself holding the state as a
    version before the cluster store wrote it (a log of changes on ``mq9state.<stream>``),
    when the new layout (``<stream>_MSGS`` and its buckets) is not made yet: the broker would
    start empty, the old state unseen. Once 'state import' made the layout, the old stream
    is left alone (and may be deleted)."""
    info = await stream_info(connection, stream, timeout=5)
    if info is None:
        return
    if f"{OLD_SUBJECT_PREFIX}.{stream.lower()}" not in (info["config"].get("subjects") or []):
        return
    if await stream_info(connection, f"{stream}_MSGS", timeout=5) is not None:
        return  # imported already: the layout serves, the old stream is a leftover
    records = info["state"]["messages"]
    raise StartupError(
        f"the JetStream stream {stream} holds the state as an earlier langchain-mq9 kept it "
        f"(a log of changes, {records} records), which this broker no longer "
        f"reads: move it with 'mq9-dev-broker state export FILE --nats URL' and then "
        f"'mq9-dev-broker state import FILE --nats URL' (docs/deploy.md), then start again"
    )


def refused_for_good(exc: StorageError) -> bool:
    """Whether JetStream refused for good (a request it will never grant, such as more
    replicas than a lone server holds: err 10074), not for now (no leader, no peers yet)."""
    # the cluster store's StorageJetStreamError carries JetStream's code; the identities' bucket
    # raises from the nats-py error that carries it
    code = err_code(exc) or (err_code(exc.__context__) if exc.__context__ else 0)
    return bool(code) and code not in (ErrorCode.NO_PEERS_YET, ErrorCode.JETSTREAM_UNAVAILABLE)


def _hint(exc: Exception) -> str:
    """What to do about JetStream's refusal ``exc``, where one thing is known to help."""
    if err_code(exc) == ErrorCode.NOT_ENABLED_FOR_ACCOUNT:  # no login on deploy.md's
        return (
            " (the broker logged in to an account without JetStream: on deploy.md's open "
            "cluster give it the brokers' login, --nats nats://mq9-broker:PASSWORD@HOST:PORT)"
        )
    return ""
