"""The HTTP A2A gateway, ``mq9-a2a-gateway``: mq9 agents served to HTTP A2A clients
(docs/a2a-gateway.md). Its files, by job:

- ``app.py``: the ASGI app (``gateway_app``), its tenants (``Tenants``) and the handler every
  binding shares (``GatewayHandler``);
- ``cli.py``: the command;
- ``grpc.py``: the gRPC binding, over the same handler;
- ``push.py``: push notifications to the tenants' URLs;
- ``tokens.py``: the tenants' tokens file;
- ``metrics.py``: its ``/metrics`` and health endpoint.

``from mq9_platform.a2a.gateway import gateway_app, Tenants`` hands out ``app.py``'s names,
imported at the first one asked for: the command starts without a2a-sdk and Starlette, and
says which extra brings them.
"""

from importlib import import_module
from importlib.util import find_spec


def __getattr__(name: str) -> object:
    # a submodule (``from mq9_platform.a2a.gateway import cli``) is the import system's to
    # load: looked up in app.py, it would import the extra's packages first
    if name.startswith("_") or find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(".app", __name__), name)
