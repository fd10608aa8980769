"""The NATS servers the broker stands on: starting them (``servers``) and reading their
cluster (``survey``). The fast path of its connections is the NATS floor's (``nats_floor``)."""
