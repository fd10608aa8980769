"""The mq9 wire and the NATS floor (the ``mq9-wire`` distribution): what the client side
(``langchain-mq9``) and the broker (``mq9-broker``) both stand on, and nothing above it.

- ``protocol``: what travels (subjects, bodies, ``Message``, cards, error texts and classes);
- ``nats_floor``: nats-py's internals behind their version checks, URLs and their redaction, and
  JetStream as the broker uses it;
- ``semantic``: agent discovery by meaning, the ranking and its embedding models;
- ``metrics``: what a server tells its operator (``/metrics``, ``/healthz``, ``/readyz``);
- ``_cli``: what the command lines share (argparse's value types, logging on stderr).

Nothing is imported here: each room is imported by name (its version: ``mq9_wire._version``).
"""
