"""``mq9-a2a-gateway``: serve mq9 agents to HTTP A2A clients (docs/a2a-gateway.md, "The gateway").

    MQ9_GATEWAY_TOKENS_FILE=tokens.json mq9-a2a-gateway --server nats://127.0.0.1:4222 \\
        --agent agent.summarizer --listen 127.0.0.1:8300

The tokens file holds a ``name: sha256-of-token`` line a tenant, as ``mq9-mcp --tokens-file``
(``tokens.py``; or ``MQ9_GATEWAY_TOKENS``, JSON ``{"<tenant>": "<token>", ...}``): secrets
never on the command line, where any local user's ``ps`` reads them.
``--import-card URL`` also keeps HTTP A2A cards in the registry (``a2a/http/cards.py``).
``--allow-push-host`` turns push notifications on, to URLs on the hosts it names
(``push.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ..shapes import JsonObject

TOKENS_ENV = "MQ9_GATEWAY_TOKENS"
TOKENS_FILE_ENV = "MQ9_GATEWAY_TOKENS_FILE"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mq9-a2a-gateway",
        description="Serve mq9 agents as HTTP A2A 1.0 agents (JSON-RPC), store and forward.",
    )
    parser.add_argument("--server", required=True, help="the mq9 broker's NATS URL")
    parser.add_argument(
        "--credential-file",
        metavar="FILE",
        help="a file holding the gateway's own mq9 credential, <id>:<secret>, for a broker "
        "that enforces per-agent credentials (default: $MQ9_CREDENTIAL_FILE, or the credential "
        "itself in $MQ9_CREDENTIAL; docs/security.md)",
    )
    parser.add_argument(
        "--agent", action="append", default=[], help="a registered mq9 agent to serve (repeat)"
    )
    parser.add_argument("--listen", default="127.0.0.1:8300", help="HOST:PORT (127.0.0.1:8300)")
    parser.add_argument("--public-url", help="the URL clients reach (default: http://LISTEN)")
    parser.add_argument("--auth", choices=["bearer", "api-key"], default="bearer")
    parser.add_argument(
        "--tokens-file",
        metavar="FILE",
        help=f"a 'name: sha256-of-token' line a tenant, as mq9-mcp's (or ${TOKENS_FILE_ENV})",
    )
    parser.add_argument("--name", default="gateway", help="names the tenants' reply mailboxes")
    parser.add_argument("--send-wait", type=float, default=30.0, help="a blocking send's wait")
    parser.add_argument(
        "--once-per-message",
        action="store_true",
        help="a tenant's SendMessage sent again with its messageId answers the task the first "
        "made (off: A2A's TCK reuses messageIds for new tasks)",
    )
    _key_flags(parser)
    parser.add_argument(
        "--import-card", action="append", default=[], help="an HTTP A2A card URL to import"
    )
    parser.add_argument("--import-every", type=float, default=300.0, help="seconds")
    parser.add_argument(
        "--allow-host", action="append", default=[], help="adds to MQ9_A2A_ALLOW_HOSTS"
    )
    parser.add_argument(
        "--allow-push-host",
        action="append",
        default=[],
        help="a host name or IP network push notification URLs may name (repeat); push "
        "notifications are off without one",
    )
    parser.add_argument(
        "--grpc-listen",
        metavar="HOST:PORT",
        help="also serve A2A's gRPC binding here (one server for every agent; each card "
        "lists it, the agent named in `tenant`); off by default",
    )
    parser.add_argument(
        "--grpc-public",
        metavar="HOST:PORT",
        help="the gRPC address clients reach (default: --grpc-listen)",
    )
    parser.add_argument(
        "--push-key",
        metavar="FILE",
        help="the Ed25519 key (PEM) each push's JWT is signed with, made there (0600) if "
        "missing; receivers check pushes against /.well-known/jwks.json. Default: a fresh "
        "key at each start",
    )
    parser.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics (/metrics), /healthz and /readyz at HOST:PORT, the "
        "operator's address, apart from --listen (HOST default 127.0.0.1; port 0 picks one, "
        "printed); off by default. The metrics extra. docs/broker-watching.md#watching-it",
    )
    return parser


def _key_flags(parser: argparse.ArgumentParser) -> None:
    """The tenants' shares of the gateway identity's idempotency keys."""
    parser.add_argument(
        "--keys-per-tenant",
        type=_positive,
        metavar="N",
        help="the idempotency keys one tenant's calls may hold at once (default: the "
        "tenants' part of --identity-keys split evenly among them); a tenant past its share "
        "is refused, naming its own count only",
    )
    parser.add_argument(
        "--identity-keys",
        type=_positive,
        default=10_000,
        metavar="N",
        help="the keys the broker lets the gateway's identity hold (its --max-keys-per-sender, "
        "10000): all tenants together hold at most nine tenths of it",
    )
    parser.add_argument(
        "--key-window",
        type=_positive,
        default=600,
        metavar="SECONDS",
        help="how long the broker keeps a key (its idempotency window, 600)",
    )


def _positive(text: str) -> int:
    """A whole number 1 or more, for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number 1 or more")
    return value


def _tenants(path: str | None, scheme: str) -> Any:
    """The tenants of ``--tokens-file`` (or its variable), else of ``MQ9_GATEWAY_TOKENS``."""
    from .app import Tenants
    from .tokens import read_tenants

    path = path or os.environ.get(TOKENS_FILE_ENV)
    if path:
        return read_tenants(path, scheme=scheme)
    try:
        found: Any = json.loads(os.environ.get(TOKENS_ENV) or "{}")
    except ValueError as exc:
        raise ValueError(f"cannot read ${TOKENS_ENV}: {exc}") from None
    if not isinstance(found, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in found.items()
    ):
        raise ValueError(f'${TOKENS_ENV} is JSON {{"<tenant>": "<token>", ...}}')
    return Tenants(found, scheme=scheme)


def _credential(path: str | None) -> JsonObject:
    """Mq9Client's ``credential=`` from ``--credential-file`` (none: the environment's, read by
    the client); a file that holds no credential is one line, before anything connects."""
    if not path:
        return {}
    from mq9_wire.protocol.errors import Mq9Error

    from ...client.auth import read_credential_file

    try:
        return {"credential": ":".join(read_credential_file(path))}
    except Mq9Error as exc:
        raise ValueError(f"--credential-file: {exc.message}") from None


# Seconds a stopping gateway (SIGTERM, Ctrl-C) gives open requests before it closes them;
# streams end at once with their task's state (the client resubscribes to a new gateway)
SHUTDOWN_WAIT = 5


def _server(config: Any, closing: asyncio.Event) -> Any:
    """uvicorn's server, ending the gateway's open streams as it starts to stop."""
    import uvicorn
    from sse_starlette.sse import AppStatus

    # sse-starlette (under a2a-sdk's streams) ends every open stream the moment uvicorn is
    # signalled, before the gateway's close has sent each stream its task's state: the client
    # read a chunked body cut short, the more often the busier the machine. Its documented switch
    # hands the drain to the gateway: the streams end themselves on ``closing``; whatever is
    # still open a second before uvicorn's own deadline, sse-starlette ends then.
    drain_ourselves = hasattr(AppStatus, "disable_automatic_graceful_drain")  # 2.x and later
    if drain_ourselves:
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    def drain_the_rest() -> None:
        AppStatus.should_exit = True

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            closing.set()
            if drain_ourselves:
                asyncio.get_running_loop().call_later(SHUTDOWN_WAIT - 1, drain_the_rest)
            await super().shutdown(sockets)

    return Server(config)


async def _run(args: argparse.Namespace) -> None:
    import uvicorn

    from ..._http.hosts import HostPolicy
    from ...client.client import Mq9Client
    from ..http.cards import CardImporter
    from .app import gateway_app

    host, _, port = args.listen.rpartition(":")
    metrics = None
    if args.metrics is not None:  # checked before anything connects
        from mq9_wire.metrics import need_prometheus, operator_address

        metrics = operator_address(args.metrics)
        need_prometheus()
    tenants = _tenants(args.tokens_file, args.auth)
    # Its identity: --credential-file, else MQ9_CREDENTIAL or MQ9_CREDENTIAL_FILE (an agent of
    # its own on a --credentials broker, needing no other agent's mailbox: gateway_app)
    client = await Mq9Client(args.server, **_credential(args.credential_file)).connect()
    jobs = []
    closing = asyncio.Event()
    push, grpc_server = _push(args), None
    try:
        if args.import_card:
            importer = CardImporter(
                client, args.import_card, hosts=HostPolicy.from_env(args.allow_host)
            )
            jobs.append(asyncio.create_task(importer.run(every=args.import_every)))
        app: Any = await gateway_app(
            client,
            args.agent,
            tenants=tenants,
            public_url=args.public_url or f"http://{args.listen}",
            gateway=args.name,
            send_wait=args.send_wait,
            once_per_message=args.once_per_message,
            key_shares=_key_shares(args, tenants),
            push=push,
            closing=closing,
            grpc_url=(args.grpc_public or args.grpc_listen or "") if args.grpc_listen else "",
        )
        if args.grpc_listen:
            grpc_server = await _serve_grpc(app.handlers, tenants, args.grpc_listen)
        served: Any = None  # uvicorn's server, once made: /readyz asks whether it started
        if metrics is not None:
            from .metrics import gateway_metrics

            serving = lambda: bool(served and served.started)  # noqa: E731
            wrap, endpoint = gateway_metrics(client, *metrics, serving, app.key_shares)
            app = wrap(app)
            try:
                await endpoint.start()
            except OSError as exc:
                raise ValueError(f"--metrics {args.metrics}: cannot listen there: {exc}") from None
            print(
                f"mq9-a2a-gateway: metrics on {endpoint.url}/metrics (/healthz, /readyz)",
                flush=True,
            )
            jobs.append(asyncio.ensure_future(_stopped_with(endpoint, closing)))
        config = uvicorn.Config(
            app,
            host=host or "127.0.0.1",
            port=int(port),
            lifespan="off",
            timeout_graceful_shutdown=SHUTDOWN_WAIT,
        )
        served = _server(config, closing)
        await served.serve()
    finally:
        for job in jobs:
            job.cancel()
        if grpc_server is not None:  # its streams ended with the rest (closing)
            await grpc_server.stop(SHUTDOWN_WAIT)
        if push is not None:
            await push.close()
        await client.close()


def _key_shares(args: argparse.Namespace, tenants: Any) -> Any:
    """The ledger of the tenants' keys the options ask for (``tenant_key_shares``)."""
    from .app import tenant_key_shares

    share, identity = args.keys_per_tenant, args.identity_keys
    return tenant_key_shares(tenants, share, identity, window=args.key_window)


def _push(args: argparse.Namespace) -> Any:
    """The tenants' push configs and their deliveries, where ``--allow-push-host`` asks."""
    if not args.allow_push_host:
        return None
    from ...wake.deliver import Destinations
    from ..push_auth import PushSigner
    from .push import GatewayPush

    signer = PushSigner.load(args.push_key) if args.push_key else None
    destinations = Destinations(args.allow_push_host, knob="the gateway's --allow-push-host")
    return GatewayPush(destinations, signer=signer)


async def _serve_grpc(handlers: Any, tenants: Any, address: str) -> Any:
    """The gRPC binding's server at ``address``, started; a port it cannot take is one line."""
    from .grpc import serve_grpc

    try:
        server = await serve_grpc(handlers, tenants, address)
    except (RuntimeError, ValueError) as exc:  # grpc says it cannot bind with RuntimeError
        raise ValueError(f"--grpc-listen {address}: cannot listen there ({exc})") from None
    print(f"mq9-a2a-gateway: gRPC on {address}", flush=True)
    return server


async def _stopped_with(endpoint: Any, closing: asyncio.Event) -> None:
    """The operator's endpoint, stopped when the gateway stops (or this task is cancelled)."""
    try:
        await closing.wait()
    finally:
        await endpoint.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        from a2a.server.routes import create_jsonrpc_routes  # noqa: F401

        if args.grpc_listen or args.allow_push_host:  # the gRPC server, the pushes' signatures
            import cryptography  # noqa: F401
            import grpc  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        sys.exit(
            f"mq9-a2a-gateway needs the a2a-gateway extra ({exc.name} is missing): "
            "in a clone, pip install ./wire ./broker './platform[a2a-gateway]' (README.md#install)"
        )
    from mq9_wire.metrics import MetricsUnavailable
    from mq9_wire.protocol.errors import Mq9Error

    try:
        asyncio.run(_run(args))
    # a configuration, or a broker, refusing: one line
    except (ValueError, Mq9Error, MetricsUnavailable) as exc:
        sys.exit(f"mq9-a2a-gateway: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
