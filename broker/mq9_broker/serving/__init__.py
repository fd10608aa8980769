"""Serving the engine on NATS: requests heard, answered, paced."""
