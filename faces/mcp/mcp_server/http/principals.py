"""Each principal acting at the broker as itself (issue #112 item 3): ``--principal-credentials
DIR`` holds one mq9 credential file per principal, ``<name>.cred`` (its one line ``<id>:<secret>``,
as ``mq9-dev-broker credentials issue`` prints it; ``name`` is a tokens file's name, or an OAuth
token's subject). A principal's tool calls then go over a broker connection logged in with its
own credential, so the broker's ownership (a mailbox only its owner reads, keys per sender)
holds between the people of one mq9-mcp. A principal without a file is refused in one line, or,
with ``--unmapped-principals shared``, acts as the server's own identity (sharing everything
that identity may reach).

Only tool calls (and tool calls run as tasks) are the principal's own; the task timelines,
watches, MCP Events and resource reads still go as the server's identity (docs/mcp.md).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.auth.provider import AccessToken

from mq9_platform.client.auth import read_credential_file
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OperationError
from mq9_wire.protocol.errors import Mq9Error

log = logging.getLogger("mcp_server")

# The broker connections kept at once, one per principal with a credential
MAX_CONNECTIONS = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def subject_of(request: Any) -> str | None:
    """The subject of the token the SDK's bearer auth checked for ``request`` (None: none)."""
    scope = getattr(request, "scope", None) or {}
    token = getattr(scope.get("user"), "access_token", None)
    return token.subject if isinstance(token, AccessToken) else None


class PrincipalConnections:
    """A broker connection per principal, made on its first tool call from its credential file
    (read then, so a file added later counts), ``MAX_CONNECTIONS`` at most."""

    def __init__(
        self,
        folder: Path,
        make: Callable[[str], Mq9Connection],
        shared: Mq9Connection,
        *,
        share_unmapped: bool = False,
    ) -> None:
        self.folder = folder
        self.make = make  # a credential "<id>:<secret>" -> a connection to the same broker
        self.shared = shared
        self.share_unmapped = share_unmapped
        self._by_name: dict[str, Mq9Connection] = {}

    def connection_for(self, request: Any) -> Mq9Connection:
        """The connection ``request``'s principal acts through; OperationError (the tool's
        error, in one line) for a principal without a credential, unless shared."""
        name = subject_of(request)
        if name is None:  # no token naming anyone (stdio, the static --auth-token)
            return self.shared
        known = self._by_name.get(name)
        if known is not None:
            return known
        path = self.folder / f"{name}.cred"
        if not _NAME.fullmatch(name) or not path.is_file():
            if self.share_unmapped:
                return self.shared
            raise OperationError(
                f"no broker credential for you ({name!r}) at this server: ask its operator to "
                f"put one in {self.folder}/ (mq9-dev-broker credentials issue {name})"
            )
        if len(self._by_name) >= MAX_CONNECTIONS:
            raise OperationError(
                f"this server holds {MAX_CONNECTIONS} principals' broker connections: try later"
            )
        try:
            credential = ":".join(read_credential_file(str(path)))
            connection = self.make(credential)
        except (Mq9Error, ValueError) as exc:
            log.warning("the broker credential of %s is unusable: %s", name, exc)
            raise OperationError(
                f"your broker credential at this server is unusable: {exc}"
            ) from None
        self._by_name[name] = connection
        log.info("principal %s acts at the broker with its own credential", name)
        return connection

    async def aclose(self) -> None:
        for connection in self._by_name.values():
            await connection.aclose()
        self._by_name.clear()


def add_principal_flags(group: Any) -> None:
    group.add_argument(
        "--principal-credentials", metavar="DIR", type=Path,
        help="a folder of mq9 credential files, <principal>.cred each: a principal's tool "
        "calls act at the broker as that identity (#112)",
    )  # fmt: skip
    group.add_argument(
        "--unmapped-principals", choices=("refuse", "shared"), default="refuse",
        help="a principal without a credential file: refused (default), or acting as this "
        "server's own identity (sharing all it may reach)",
    )  # fmt: skip


def principal_connections(
    args: argparse.Namespace, parser: argparse.ArgumentParser, server_url: str,
    shared: Mq9Connection, **options: Any,
) -> PrincipalConnections | None:  # fmt: skip
    """The mapping ``--principal-credentials`` names (None without it)."""
    folder: Path | None = getattr(args, "principal_credentials", None)
    if folder is None:
        return None
    if not folder.is_dir():
        parser.error(f"--principal-credentials: {folder} is not a folder")

    def make(credential: str) -> Mq9Connection:
        return Mq9Connection(server_url, credential=credential, **options)

    return PrincipalConnections(
        folder, make, shared, share_unmapped=args.unmapped_principals == "shared"
    )
