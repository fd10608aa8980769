"""``mq9-dev-broker state export|import``: move a JetStream store's state to other servers, or
to the same servers once their accounts changed.

A nats-server configured without accounts keeps every stream in its default account, and its
own JetStream records in the default system account; a config that names accounts (the ones
docs/deploy.md gives, or those 'credentials setup' prints) puts the broker's user in another
account, and JetStream's records in another system account: the stream is then out of every
broker's reach, and no config can name the default account. So the state goes by file:

    mq9-dev-broker state export ./mq9-state --nats URL       # with the old config
    mq9-dev-broker state import ./mq9-state --nats URL       # with the new one (--credentials DIR)

The file holds the stream's records as they are (every message of every mailbox: it is made
readable by its owner only); ``import`` writes them, in order, into the stream, which must be
new or empty, where the broker reads them at its next start as it read them before.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
from pathlib import Path
from typing import Any

from ..._cli import ArgumentParser, nats_errors_in_one_line
from ..._nats.redaction import describe, redact
from ..cluster.survey import ClusterError, check_login, check_urls, survey
from ..config import need_credentials_extra
from ..identities.callout import SETUP_FILE, Issuer, broker_urls
from ..identities.store import CredentialError
from ..storage import JetStreamStorage, StorageError
from ..storage.jetstream import DEFAULT_STREAM, SUBJECT_PREFIX

MAGIC = b"mq9-state 1\n"  # the file's first line: what it is, and its format's version
_LENGTH = struct.Struct(">I")
READ_TIMEOUT = 10.0  # seconds for the next record of a stream being read (past an election)


class StateError(Exception):
    """Why the state cannot be moved, in one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mq9-dev-broker state",
        description="Copy the state a broker keeps in JetStream (--store jetstream) to a file, "
        "and from the file into a new stream: to move it to other servers, or across a change "
        "of the servers' accounts (docs/deploy.md).",
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
        "export", parents=[where], help="write every record of the stream to FILE (a new file)"
    )
    commands.add_parser(
        "import", parents=[where], help="write FILE's records into the stream (new or empty)"
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
                count = _import(servers, args.stream, Path(args.file))
                print(f"{count} records written into stream {args.stream}")
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
    from nats.js.api import DeliverPolicy
    from nats.js.errors import NotFoundError

    connection = await nats.connect(servers, connect_timeout=5)
    try:
        js = connection.jetstream(timeout=READ_TIMEOUT)
        try:
            last = (await js.stream_info(stream)).state.last_seq
        except NotFoundError:
            raise StateError(
                f"no stream {stream} there for this login: nothing to export"
            ) from None
        descriptor = _new_private_file(path)
        count = 0
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(MAGIC)
                sub = await js.subscribe(
                    f"{SUBJECT_PREFIX}.{stream.lower()}",
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.ALL,
                )
                seq = 0
                while seq < last:
                    msg = await sub.next_msg(timeout=READ_TIMEOUT)
                    seq = msg.metadata.sequence.stream
                    out.write(_LENGTH.pack(len(msg.data)) + msg.data)
                    count += 1
                await sub.unsubscribe()
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


def _import(servers: list[str], stream: str, path: Path) -> int:
    records = _records(path)
    # the stream made as the broker makes it (its replicas from the servers the cluster tells
    # of), when it is not there yet
    JetStreamStorage(servers, stream=stream, snapshot_bytes=None).close()
    asyncio.run(_write(servers, stream, records))
    return len(records)


async def _write(servers: list[str], stream: str, records: list[bytes]) -> None:
    """Each record after the one before it (an expected last sequence), as the broker writes,
    into ``stream`` when it holds nothing."""
    import nats

    connection = await nats.connect(servers, connect_timeout=5)
    try:
        js = connection.jetstream(timeout=READ_TIMEOUT)
        state = (await js.stream_info(stream)).state
        if state.messages:
            raise StateError(
                f"stream {stream} already holds {state.messages} records: import into a new or "
                "empty stream only (or give another --stream)"
            )
        last = state.last_seq
        subject = f"{SUBJECT_PREFIX}.{stream.lower()}"
        for record in records:
            headers: dict[str, Any] = {"Nats-Expected-Last-Sequence": str(last)}
            last = (await js.publish(subject, record, headers=headers)).seq
    finally:
        await connection.close()
