"""Start and stop a real ``nats-server`` on loopback: the NATS floor's
(``mq9_wire.nats_floor.server_process``), which the tests of every distribution start theirs
through too, named here for the broker's modules that start, watch and stop them."""

from mq9_wire.nats_floor.server_process import (
    LARGEST_MAX_PAYLOAD,
    NatsProcess,
    find_nats_server,
    listed_ports,
    server_urls,
    spawn_env,
    start_nats_server,
    url_login,
)

__all__ = [
    "LARGEST_MAX_PAYLOAD",
    "NatsProcess",
    "find_nats_server",
    "listed_ports",
    "server_urls",
    "spawn_env",
    "start_nats_server",
    "url_login",
]
