"""The NATS servers the broker stands on: starting them, reading their cluster, and the fast
path of the broker's own connections to them (``fast_path``)."""
