"""The lines a broker says once it serves: where, what it restored, its limits, how to connect
(``mq9-dev-broker`` prints them; the tests and the docs read their words)."""

from __future__ import annotations

from mq9_wire import semantic

from .engine.engine import Engine
from .engine.process import BrokerEngine
from .nats_servers.processes import NatsProcess
from .serving.queue_group import QUEUE
from .storage import SqliteStorage, Storage
from .storage.jetstream import ClusterStore, Layout


def banner(
    shown: str, server: NatsProcess | None, storage: Storage | None, engine: BrokerEngine
) -> str:
    """What a broker serving ``engine`` at ``shown`` (redacted URLs) says: on the nats-server
    it started (``server``) or on one of its own, keeping its state in ``storage``."""
    pid = "" if server is None else f" (pid {server.process.pid})"
    lines = [f"mq9 dev broker: BrokerEngine on nats-server{pid} at {shown}"]
    lines += _storage_lines(storage)
    lines += _limit_lines(engine)
    if not engine.search:
        lines.append(
            "agent search: off (--no-search), as on RobustMQ's default build: DISCOVER with "
            "text or semantic answers an error, clients rank the listing themselves"
        )
    else:
        lines.append(f"agent search: on; semantic ranks by {semantic.describe()}")
    return "\n".join(lines + _connect_lines(shown))


def cluster_banner(shown: str, layout: Layout, replicas: int, engine: Engine[ClusterStore]) -> str:
    """What a broker serving the state kept in JetStream says (``layout``: its stream and
    buckets, made with ``replicas``)."""
    lines = [
        f"mq9 dev broker: the engine on the NATS cluster at {shown}",
        f"storage: JetStream {_streams(layout)} and key-value buckets "
        f"{', '.join(layout.buckets)} (the streams KV_<bucket>; {replicas} replicas; each "
        "answer after a quorum holds "
        f"its change); every broker started on --stream {layout.name} serves them at once "
        f"(queue group {QUEUE})",
    ]
    lines += _limit_lines(engine)
    lines.append(
        "agent search: on; semantic ranks by " + semantic.describe()
        if engine.search
        else "agent search: off (--no-search), as on RobustMQ's default build"
    )
    return "\n".join(lines + _connect_lines(shown))


def _streams(layout: Layout) -> str:
    """The message streams a banner names (several, each mailbox in one of them)."""
    if layout.streams == 1:
        return f"stream {layout.messages}"
    names = ", ".join(layout.message_streams)
    return f"streams {names} (the mailboxes spread over {layout.streams})"


def _storage_lines(storage: Storage | None) -> list[str]:
    if isinstance(storage, SqliteStorage):
        return _sqlite_lines(storage)
    return [
        "storage: in memory only; everything is lost when the broker stops "
        "(use --data PATH to keep it)"
    ]


def _sqlite_lines(storage: SqliteStorage) -> list[str]:
    counts = storage.restored
    lines = [
        f"storage: {storage.path} (SQLite, WAL, synchronous={storage.synchronous}); "
        f"restored {counts['mailboxes']} mailboxes, {counts['messages']} messages, "
        f"{counts['delayed']} delayed messages, {counts['offsets']} group offsets, "
        f"{counts['agents']} agents"
    ]
    if counts["wal_lost"]:
        lines.append(
            f"storage: NOT restored: {counts['wal_lost']} acknowledged writes that came "
            "after a damaged part of the write-ahead log (SQLite replays it only up to "
            "the damage); the log above says so too"
        )
    if counts["wal_redone"]:
        lines.append(
            f"storage: the write-ahead log was damaged: the {counts['wal_redone']} writes "
            "after the damage were restored from the request log"
        )
    if counts["log_lost"]:
        lines.append(
            f"storage: NOT restored: {counts['log_lost']} acknowledged writes that came "
            "after a damaged part of the request log (kept beside it as .damaged); the "
            "log above says so too"
        )
    if counts["damaged"] or counts["skipped"]:
        lines.append(
            f"storage: NOT restored: {counts['damaged']} damaged messages (checksum "
            f"mismatch), {counts['skipped']} messages of mailboxes not stored; the log "
            "above names them"
        )
    return lines


def _most(n: int | None) -> str:
    return "no limit" if n is None else str(n)


def _limit_lines(engine: BrokerEngine | Engine[ClusterStore]) -> list[str]:
    limits, answer_limit = engine.limits, engine.answer_limit
    most, why = engine.sending.bound(engine.message_bound(engine.sending.entry_room))
    effective = ""
    if most < limits.max_payload:
        effective = f" (in effect {most}: {why})"
    return [
        f"limits: max payload {limits.max_payload} bytes{effective}, "
        f"mailboxes {_most(limits.max_mailboxes)}, "
        f"messages per mailbox {_most(limits.max_messages_per_mailbox)}, "
        f"agents {_most(limits.max_agents)} ({_most(limits.max_agents_per_sender)} an agent "
        f"with --credentials; cards up to {_most(limits.max_card_bytes)} bytes), "
        f"groups {_most(limits.max_groups)}",
        f"answers: up to {answer_limit} bytes (the nats-server's max_payload, at most half "
        "its max_pending); a FETCH or QUERY answer holds as many messages as fit",
    ]


def _connect_lines(shown: str) -> list[str]:
    """How a client reaches the broker at ``shown`` (the last lines of each banner), without
    the login the broker's own URLs carry: that is the brokers' user (deploy.md's open
    cluster), never a client's; a client gives none, or its own credential file."""
    shown = ",".join(_bare(url) for url in shown.split(","))
    return [
        "connect with:",
        f'  Mq9Client("{shown}")',
        f'  Mq9Toolkit(server="{shown}")',
        f"  mq9-mcp --server {shown}",
    ]


def _bare(url: str) -> str:
    """``url`` without its ``user:password@``."""
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"
