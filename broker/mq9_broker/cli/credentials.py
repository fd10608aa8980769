"""``mq9-dev-broker credentials setup|issue|list|revoke`` and the broker's ``--credentials``.

    mq9-dev-broker credentials issue billing --data ./mq9-data   # prints billing:<secret> once
    mq9-dev-broker credentials issue billing --data ./mq9-data --out billing.cred  # 0600 file
    mq9-dev-broker credentials list --data ./mq9-data
    mq9-dev-broker credentials revoke billing --data ./mq9-data
    mq9-dev-broker --credentials --data ./mq9-data   # the broker enforcing them

On a NATS cluster the operator runs (``--store jetstream``), once: ``credentials setup DIR``
(the issuer key and the broker's NATS passwords, and the config block for every server);
then the credentials live on the cluster (identities_kv.py):

    mq9-dev-broker credentials setup ./mq9-auth      # prints the servers' config block
    mq9-dev-broker credentials issue billing --credentials ./mq9-auth --nats URL
    mq9-dev-broker --nats URL --store jetstream --credentials ./mq9-auth

A running broker sees each change at its next request (docs/security.md says how soon).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from mq9_wire.command_line import ArgumentParser, nats_errors_in_one_line
from mq9_wire.nats_floor.redaction import redact

from ..config import need_credentials_extra
from ..identities.callout import SETUP_FILE, Issuer, broker_urls
from ..identities.kv_store import KvIdentityStore
from ..identities.store import BaseIdentityStore, CredentialError, IdentityStore, identities_file
from ..nats_servers.survey import ClusterError, check_login, check_urls, survey
from ..storage.jetstream import DEFAULT_NAME as DEFAULT_STREAM

DATA_HELP = (
    "the broker's --data PATH: credentials are kept beside its data, in mq9-identities.sqlite3"
)


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """The broker's ``--credentials`` option, and ``credentials ...``: the command that
    manages them (after any broker option: what follows it is the command's)."""
    parser.add_argument(
        "command",
        nargs="?",
        metavar="credentials|state",
        help="'credentials setup DIR | issue NAME | list | revoke NAME --data PATH': manage the "
        "credentials of an enforcing broker (mq9-dev-broker credentials --help); 'state "
        "export|import FILE --nats URL': move a JetStream store's state (docs/deploy.md)",
    )
    parser.add_argument("command_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument(
        "--credentials",
        nargs="?",
        const="",
        metavar="DIR",
        help="enforce per-agent credentials and ownership: nats-server asks the broker at each "
        "login, each agent publishes only as itself ($mq9.U.<id>.) and reads only its own "
        "mailboxes, reply mailboxes and registry entries; credentials (and who owns what) are "
        "kept in DIR/mq9-identities.sqlite3, by default beside --data. Issue them with "
        "'mq9-dev-broker credentials issue NAME --data PATH'. With --nats and --store jetstream: "
        "DIR is what 'mq9-dev-broker credentials setup DIR' wrote, and the credentials are kept "
        "on the cluster (docs/security.md)",
    )


def run_command(command: str, argv: list[str]) -> int:
    """``mq9-dev-broker credentials ...`` (``state ...`` is state_cli.py's)."""
    if command != "credentials":
        print(
            f"mq9-dev-broker: error: unknown command {command!r}: the commands are "
            "'credentials' (setup, issue, list, revoke) and 'state' (export, import); the "
            "broker itself takes options only",
            file=sys.stderr,
        )
        return 2
    return main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mq9-dev-broker credentials",
        description="Issue, list and revoke the credentials an enforcing broker "
        "(mq9-dev-broker --credentials) lets agents log in with. Secrets are shown once and "
        "kept only as their SHA-256. On a NATS cluster you run (--store jetstream), 'setup DIR' "
        "first: it prints the config block for every nats-server.",
    )
    where = ArgumentParser(add_help=False)  # each command but setup takes it
    place = where.add_mutually_exclusive_group(required=True)
    place.add_argument("--data", metavar="PATH", help=DATA_HELP)
    place.add_argument(
        "--credentials", metavar="DIR", help="the broker's --credentials DIR, when it has one"
    )
    cluster = where.add_argument_group("on a NATS cluster (the broker's --store jetstream)")
    cluster.add_argument(
        "--nats",
        metavar="URL",
        help="the cluster's servers, comma-separated, as the broker's --nats: the credentials "
        "are kept there; needs --credentials DIR, the DIR 'setup' wrote",
    )
    cluster.add_argument(
        "--store", choices=("jetstream",), help="jetstream: the store of --nats (the default)"
    )
    cluster.add_argument(
        "--stream",
        default=DEFAULT_STREAM,
        metavar="NAME",
        help=f"the broker's --stream (default {DEFAULT_STREAM})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser(
        "setup",
        help="for brokers on a NATS cluster you run: write the issuer key and the broker's NATS "
        "passwords to DIR (readable by you only; kept if there) and print the config block to "
        "add to every nats-server of the cluster",
    )
    setup.add_argument("dir", metavar="DIR", help="where to keep them: the brokers' --credentials")
    issue = commands.add_parser(
        "issue",
        parents=[where],
        help="make a credential NAME:SECRET and print it once (again after a revoke: a new "
        "secret, keeping what NAME owns)",
    )
    issue.add_argument("name", help="1 to 64 letters, digits, '_' or '-': the agent's login")
    issue.add_argument("--label", default="", help="a note shown by list")
    issue.add_argument(
        "--out",
        metavar="FILE",
        help="write the credential to FILE (created readable by you only) instead of printing "
        "it: give it to the agent as MQ9_CREDENTIAL_FILE",
    )
    commands.add_parser(
        "list", parents=[where], help="every credential: name, label, created, revoked, last seen"
    )
    revoke = commands.add_parser(
        "revoke",
        parents=[where],
        help="refuse NAME from its next request and login; close its connections",
    )
    revoke.add_argument("name")
    return parser


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "setup":
            need_credentials_extra()
            return _setup(Path(args.dir))
        with nats_errors_in_one_line():  # a library's complaint: one line, never a traceback
            store = _store_for(args)
            try:
                return _run(args, store)
            finally:
                store.close()
    except CredentialError as exc:
        print(f"mq9-dev-broker credentials: error: {exc}", file=sys.stderr, flush=True)
        return 1


def _store_for(args: argparse.Namespace) -> BaseIdentityStore:
    """The store the command names: the cluster's (``--nats``) or a SQLite file."""
    if args.nats:
        if not args.credentials:
            raise CredentialError(
                "--nats needs --credentials DIR: the DIR 'mq9-dev-broker credentials setup' "
                "wrote (the command logs in to the cluster as the broker)"
            )
        need_credentials_extra()
        issuer = Issuer.load(Path(args.credentials, SETUP_FILE))
        urls = broker_urls(args.nats, issuer)
        _reachable(args.nats, urls)
        return KvIdentityStore(urls, stream=args.stream, watch=False)
    if args.store:
        raise CredentialError("--store jetstream needs --nats URL: the cluster's servers")
    path = (
        Path(args.credentials, "mq9-identities.sqlite3")
        if args.credentials
        else identities_file(args.data)
    )
    if not path.parent.is_dir():  # a misspelt path: never a new store no broker reads
        made_by = "the broker makes it at its first start with --data, " if args.data else ""
        raise CredentialError(
            f"no directory {path.parent}: {made_by}or make it with mkdir -m 700 "
            f"{path.parent}; a new identity store there would be one no broker reads (check "
            "the path)"
        )
    return IdentityStore(path)


def _reachable(url: str, logins: list[str]) -> None:
    """The servers of ``url`` are NATS URLs, one of them answers and takes the broker's login
    (``logins``: the same URLs carrying it): else one line, at once."""
    try:
        servers = check_urls(url)
        shown = ",".join(redact(one) for one in servers)

        async def look() -> None:
            await survey(servers, shown)
            await check_login(logins, shown)

        asyncio.run(look())
    except ClusterError as exc:
        raise CredentialError(f"--nats: {exc}") from None


def _setup(place: Path) -> int:
    """Keep (or reuse) the issuer and passwords in ``place``; print the servers' config."""
    path = place / SETUP_FILE
    if path.exists():
        issuer = Issuer.load(path)
        print(f"kept the issuer and passwords already in {path}", file=sys.stderr)
    else:
        place.mkdir(mode=0o700, parents=True, exist_ok=True)
        issuer = Issuer()
        issuer.save(path)
        print(
            f"wrote the issuer seed and passwords to {path} (readable by you only)", file=sys.stderr
        )
    print(
        "# add to the config of every nats-server of the cluster (each also needs its "
        "jetstream and cluster blocks), then restart it:"
    )
    print(issuer.server_config(jetstream=True), end="", flush=True)
    return 0


def _run(args: argparse.Namespace, store: BaseIdentityStore) -> int:
    if args.command == "issue":
        if args.out and Path(args.out).exists():
            raise CredentialError(f"{args.out} exists: name a new file for the credential")
        secret = store.issue(args.name, args.label)
        credential = f"{args.name}:{secret}"
        if args.out:
            descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(credential + "\n")
            print(f"credential {args.name!r} written to {args.out} (readable by you only)")
        else:
            print(credential)
            print(
                "shown once: give it to the agent (nats://NAME:SECRET@host:port, "
                "MQ9_CREDENTIAL or MQ9_CREDENTIAL_FILE)",
                file=sys.stderr,
            )
    elif args.command == "list":
        rows = [("NAME", "LABEL", "CREATED", "REVOKED", "LAST SEEN")]
        rows += [
            (c.id, c.label, _when(c.created), _when(c.revoked), _when(c.last_seen))
            for c in store.listing()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip())
    else:
        store.revoke(args.name)
        print(f"credential {args.name!r} revoked")
    return 0
