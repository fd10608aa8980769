"""0.5's private path of the NATS floor, kept for one release: ``mq9_wire.nats_floor`` now."""

from ..moved import forward

__getattr__ = forward(__name__, "mq9_wire.nats_floor")
