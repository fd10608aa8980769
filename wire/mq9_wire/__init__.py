"""The mq9 wire and the NATS floor (the ``mq9-wire`` distribution): the floor the other five
distributions stand on, importing none of them.

Above it, one way: ``mq9-broker`` (the bundled broker) and ``mq9-platform`` (the client,
consumer groups, the operations catalog, agent calls, the waker) each stand on the wire; the
faces stand on the platform: ``langchain-mq9`` (LangChain's tools and middleware), ``mq9-mcp``
(the MCP server) and ``mq9-cli`` (``mq9`` and its web console). docs/architecture.md draws them.

- ``protocol``: what travels (subjects, bodies, ``Message``, cards, the error classes and texts);
- ``nats_floor``: nats-py's internals behind their version checks, URLs and their redaction, and
  JetStream as the broker uses it;
- ``semantic``: agent discovery by meaning, the ranking and its embedding models;
- ``metrics``: what a server tells its operator (``/metrics``, ``/healthz``, ``/readyz``);
- ``command_line``: what the command lines share (argparse's value types, logging on stderr);
- ``moved``: how a module that moved keeps its old import path for one release (``_nats`` and
  ``_cli`` are this distribution's own).

Nothing is imported here: each room is imported by name (its version: ``mq9_wire._version``).
"""
