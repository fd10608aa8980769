"""``mq9-dev-broker state export|import``: move the state an earlier version kept in JetStream
(one stream, ``--stream``, holding a log of changes and snapshots) into the layout the broker
keeps it in now (streams of messages and buckets, ``<stream>_MSGS[_<j>]`` and ``KV_<stream>_*``:
docs/broker.md, "The JetStream store"), on the same servers or others.

    mq9-dev-broker state export ./mq9-state --nats URL       # the old stream's records, as they are
    mq9-dev-broker state import ./mq9-state --nats URL       # into the new layout (new or empty)

The file holds the old stream's records as they are (every message of every mailbox: it is made
readable by its owner only). ``import`` reads them as the earlier store read them back (the last
complete snapshot, then the changes after it: ``OldState``, the one reader of that format kept)
and writes what they add up to: each mailbox (its create time, TTL and description), its
messages in msg_id order (priority, key, tags, headers, TTL kept; msg_ids are the new store's,
and the create time a message shows is the import's), delayed messages (due when they were),
each group's position (moved to the new msg_id of the first message it had not passed), the
registry and its search index. The new broker refuses to start beside an old stream until the
layout is made (forming.refuse_old_format).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mq9_wire.command_line import ArgumentParser, nats_errors_in_one_line, positive_int
from mq9_wire.nats_floor.jetstream.consumers import read_ordered
from mq9_wire.nats_floor.jetstream.requests import stream_info
from mq9_wire.nats_floor.redaction import describe, redact
from mq9_wire.protocol import Priority

from ..config import need_credentials_extra
from ..identities.callout import SETUP_FILE, Issuer, broker_urls
from ..identities.store import CredentialError
from ..nats_servers.survey import ClusterError, check_login, check_urls, survey
from ..state.mailbox import StoredMessage
from ..storage import StorageError
from ..storage.jetstream import DEFAULT_NAME as DEFAULT_STREAM
from ..storage.jetstream import ClusterStore
from ..storage.mailbox_store import MailboxRecord

SUBJECT_PREFIX = "mq9state"  # the old stream's subject: mq9state.<stream, lower case>

MAGIC = b"mq9-state 1\n"  # the file's first line: what it is, and its format's version
_LENGTH = struct.Struct(">I")
READ_TIMEOUT = 10.0  # seconds for the next record of a stream being read (past an election)


class StateError(Exception):
    """Why the state cannot be moved, in one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mq9-dev-broker state",
        description="Move the state an earlier version kept in JetStream (one stream holding a "
        "log of changes) into the layout --store jetstream keeps it in now: export the old "
        "stream's records to a file, import them into the new layout (docs/deploy.md).",
    )
    where = ArgumentParser(add_help=False)
    where.add_argument("file", metavar="FILE", help="the state file")
    where.add_argument("--nats", metavar="URL", required=True, help="the cluster's servers")
    where.add_argument(
        "--stream", default=DEFAULT_STREAM, metavar="NAME", help="the broker's --stream"
    )
    where.add_argument(
        "--credentials",
        metavar="DIR",
        help="log in as the broker of 'credentials setup DIR' (servers with its config)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "export",
        parents=[where],
        help="write every record of the old stream --stream to FILE (a new file)",
    )
    importing = commands.add_parser(
        "import",
        parents=[where],
        help="write the state FILE's records add up to into the layout of --stream (new or empty)",
    )
    importing.add_argument(
        "--streams",
        type=positive_int,
        metavar="N",
        help="the message streams of a new layout (the broker's --streams; default: the "
        "layout's recorded count, 1 for a new one)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        servers = _servers(args)
        with nats_errors_in_one_line():
            if args.command == "export":
                count = asyncio.run(_export(servers, args.stream, Path(args.file)))
                print(f"{count} records of stream {args.stream} written to {args.file}")
            else:
                counts = asyncio.run(
                    _import(servers, args.stream, Path(args.file), streams=args.streams)
                )
                print(
                    f"{counts['records']} records read; written into the layout of "
                    f"{args.stream}: {counts['mailboxes']} mailboxes, {counts['messages']} "
                    f"messages, {counts['delayed']} delayed messages, {counts['groups']} group "
                    f"positions, {counts['agents']} agents"
                )
        return 0
    except (StateError, ClusterError, StorageError, CredentialError) as exc:
        print(f"mq9-dev-broker state: error: {redact(str(exc))}", file=sys.stderr, flush=True)
        return 1


def _servers(args: argparse.Namespace) -> list[str]:
    """The URLs to log in with, once one server answers and takes the login."""
    servers = check_urls(args.nats)
    shown = ",".join(redact(one) for one in servers)
    if args.credentials:
        need_credentials_extra()
        issuer = Issuer.load(Path(args.credentials, SETUP_FILE))
        servers = broker_urls(args.nats, issuer)

    async def look() -> None:
        await survey(check_urls(args.nats), shown)
        await check_login(servers, shown)

    asyncio.run(look())
    return servers


async def _export(servers: list[str], stream: str, path: Path) -> int:
    import nats

    connection = await nats.connect(servers, connect_timeout=5)
    try:
        if await stream_info(connection, stream, timeout=READ_TIMEOUT) is None:
            raise StateError(
                f"no stream {stream} there for this login: nothing an earlier version kept to "
                f"export (the layout this version keeps, {stream}_MSGS and its KV_{stream}_* "
                "buckets, is moved with the NATS CLI's 'nats stream backup' and 'restore': "
                "docs/deploy.md)"
            )
        descriptor = _new_private_file(path)
        count = 0
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(MAGIC)
                subject = f"{SUBJECT_PREFIX}.{stream.lower()}"
                async for read in read_ordered(connection, stream, subject, timeout=READ_TIMEOUT):
                    out.write(_LENGTH.pack(len(read.data)) + read.data)
                    count += 1
                out.write(_LENGTH.pack(0))  # the end: a file cut short is never taken whole
        except BaseException:
            path.unlink(missing_ok=True)  # half a state is no state
            raise
        return count
    finally:
        await connection.close()


def _new_private_file(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StateError(f"{path} exists: name a new file for the state") from None
    except OSError as exc:
        raise StateError(f"cannot write {path}: {describe(exc)}") from None


def _records(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read {path}: {describe(exc)}") from None
    if not data.startswith(MAGIC):
        raise StateError(f"{path} is not a state file written by 'mq9-dev-broker state export'")
    records: list[bytes] = []
    at = len(MAGIC)
    while at + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if size == 0 and at == len(data):  # the end export wrote
            return records
        if not size or at + size > len(data):
            break
        records.append(data[at : at + size])
        at += size
    raise StateError(f"{path} is cut short or damaged at byte {at}: export it again")


async def _import(
    servers: list[str], stream: str, path: Path, *, streams: int | None = None
) -> dict[str, int]:
    """The state ``path``'s records add up to, written into the layout of ``stream`` (made
    when missing, with ``streams`` message streams; refused when it holds anything)."""
    import nats

    state = OldState.read(_records(path))
    connection = await nats.connect(servers, connect_timeout=5)
    try:
        try:
            store = ClusterStore(connection, name=stream, timeout=READ_TIMEOUT, streams=streams)
        except ValueError as exc:  # (a count out of range)
            raise StateError(f"--streams: {exc}") from None
        await store.open()
        try:
            await _check_empty(connection, store)
            counts = await state.write(store)
        finally:
            await store.close()
    finally:
        await connection.close()
    return {"records": state.read_records, **counts}


async def _check_empty(connection: Any, store: ClusterStore) -> None:
    layout = store.layout
    # (every message stream)
    for name in (*layout.message_streams, *(f"KV_{bucket}" for bucket in layout.buckets)):
        info = await stream_info(connection, name, timeout=READ_TIMEOUT)
        held = 0 if info is None else int(info["state"]["messages"])
        if held:
            raise StateError(
                f"stream {name} already holds {held} messages: import into a new or empty "
                "layout only (or give another --stream)"
            )


@dataclass
class _OldMailbox:
    shard: str
    create_time: int
    ttl: int
    desc: str
    messages: dict[int, StoredMessage] = field(default_factory=dict)


@dataclass
class OldState:
    """What the earlier store's records add up to (its replay, kept only to be moved): the
    last complete snapshot, then every change record after it, applied in order."""

    mailboxes: dict[str, _OldMailbox] = field(default_factory=dict)
    delayed: dict[int, tuple[str, int, StoredMessage]] = field(default_factory=dict)
    offsets: dict[tuple[str, str], int] = field(default_factory=dict)  # (group-lane, shard)
    agents: dict[str, tuple[str, int]] = field(default_factory=dict)  # in registration order
    index: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # card -> row
    read_records: int = 0

    @classmethod
    def read(cls, records: list[bytes]) -> OldState:
        """The state ``records`` (the old stream's, in order) add up to."""
        state: OldState = cls()
        opened: OldState | None = None
        snapshot_id = None
        for data in records:
            head, _, blobs = data.partition(b"\n")
            try:
                record = json.loads(head)
            except ValueError:
                raise StateError("a record of the file is not the earlier store's") from None
            if record.get("v") != _SNAPSHOT_VERSION:
                state._apply_record(record, blobs)
                if opened is not None:
                    opened._apply_record(record, blobs)
                continue
            sid, kind, _ = record["snap"]
            if kind == "begin":  # a snapshot under way; its end makes it the state
                opened, snapshot_id = cls(), sid
            elif opened is None or sid != snapshot_id:
                continue  # the rest of a snapshot given up
            elif kind == "part":
                opened._apply_record(record, blobs)
            elif kind == "end":
                state, opened = opened, None
        state.read_records = len(records)
        return state

    def _apply_record(self, record: dict[str, Any], blobs: bytes) -> None:
        version = record.get("v")
        if version == 1:
            self._apply(record["ops"], blobs)
        elif version in (2, _SNAPSHOT_VERSION):
            start = 0
            for ops, size in zip(record["changes"], record["blobs"], strict=True):
                self._apply(ops, blobs[start : start + size])
                start += size
        else:
            raise StateError(f"a record of version {version!r}, not the earlier store's 1 or 2")

    def _apply(self, ops: list[list[Any]], blobs: bytes) -> None:
        for kind, *args in ops:
            if kind == "mc":
                address, shard, create_time, ttl, desc, *_ = args
                old = self.mailboxes.get(address)
                kept = old.messages if old is not None else {}
                self.mailboxes[address] = _OldMailbox(shard, create_time, ttl, desc, kept)
            elif kind == "mr":
                self.mailboxes.pop(args[0], None)
            elif kind == "ms":
                address, _next_id, msg_id, cols = args
                if address in self.mailboxes:
                    self.mailboxes[address].messages[msg_id] = _message(msg_id, cols, blobs)
            elif kind == "md":
                if args[0] in self.mailboxes:
                    self.mailboxes[args[0]].messages.pop(args[1], None)
            elif kind == "da":
                delayed_id, address, due, cols = args
                self.delayed[delayed_id] = (address, due, _message(-1, cols, blobs))
            elif kind == "dr":
                self.delayed.pop(args[0], None)
            elif kind == "oc":
                self.offsets[(args[0], args[1])] = args[2]
            elif kind == "od":
                self.offsets.pop((args[0], args[1]), None)
            elif kind == "as":
                self.agents.pop(args[0], None)
                self.agents[args[0]] = (args[1], args[2])
            elif kind == "ar":
                self.agents.pop(args[0], None)
            elif kind == "is":
                self.index.pop(args[0], None)
                self.index[args[0]] = (args[1], args[2], args[3])
            elif kind == "ir":
                self.index.pop(args[0], None)
            elif kind not in ("mx", "mo"):  # expiry and retention: the new store's own
                raise StateError(f"a change of kind {kind!r}, not the earlier store's")

    async def write(self, store: ClusterStore) -> dict[str, int]:
        """Write this state into ``store`` (open, empty)."""
        counts = dict.fromkeys(("mailboxes", "messages", "delayed", "groups", "agents"), 0)
        records: dict[str, MailboxRecord] = {}
        new_ids: dict[str, list[tuple[int, int]]] = {}  # address -> (old msg_id, new msg_id)
        for address, kept in self.mailboxes.items():
            made = await store.create_mailbox(
                address, ttl=kept.ttl, desc=kept.desc, now=kept.create_time
            )
            if made is None:
                raise StateError(f"mailbox {address!r} is in the layout already")
            records[address] = made
            counts["mailboxes"] += 1
            pairs = new_ids[address] = []
            for msg_id in sorted(kept.messages):
                message = kept.messages[msg_id]
                pairs.append((msg_id, await store.append(address, message, now=_now())))
                counts["messages"] += 1
        for _, (address, due, message) in sorted(self.delayed.items()):
            if address in records:
                await store.hold(address, message, due=due, now=_now())
                counts["delayed"] += 1
        by_shard = {kept.shard: address for address, kept in self.mailboxes.items()}
        positions: dict[tuple[str, str], int] = {}
        for (group_lane, shard), offset in self.offsets.items():
            read = by_shard.get(shard)
            group, _, lane = group_lane.rpartition("-")
            if read is None or lane not in _LANES:
                continue
            # the lanes move together (an ACK moves all three): the lowest, so that nothing
            # a lane had not passed is skipped
            key = (group, read)
            positions[key] = min(positions.get(key, offset), offset)
        for (group, address), offset in positions.items():
            await store.commit(group, records[address], _moved(new_ids[address], offset))
            counts["groups"] += 1
        for name, (agent_info, create_time) in self.agents.items():
            await store.register(name, agent_info, create_time)
            counts["agents"] += 1
        for card_name, row in self.index.items():
            await store.index_put(card_name, row)
        return counts


_SNAPSHOT_VERSION = 3
_LANES = {priority.value for priority in Priority}


def _message(msg_id: int, cols: list[Any], blobs: bytes) -> StoredMessage:
    priority, create_time, key, tags, header, expire_at, payload = cols
    return StoredMessage(
        msg_id,
        _slice(blobs, payload) or b"",
        Priority(priority),
        create_time,
        key,
        tuple(tags) if tags else (),
        _slice(blobs, header),
        expire_at,
    )


def _slice(blobs: bytes, where: list[int] | None) -> bytes | None:
    return None if where is None else blobs[where[0] : where[1]]


def _moved(pairs: list[tuple[int, int]], offset: int) -> int:
    """A group's position ``offset`` (the first old msg_id not passed) in the new msg_ids:
    the new id of the first message kept at or above it, else one past the newest."""
    for old, new in pairs:
        if old >= offset:
            return new
    return pairs[-1][1] + 1 if pairs else 0


def _now() -> int:
    return int(time.time())
