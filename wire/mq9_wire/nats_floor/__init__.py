"""The NATS floor the client and the broker both stand on: nats-py's internals used behind
their version checks (``guard.py``, ``fast_path.py``, ``info.py``), URL lists and the redaction
of credentials in them. Every nats-py private name the project uses is in this folder."""
