"""The NATS servers the broker stands on: starting them, and reading their cluster."""
