"""a2a-sdk over mq9 (the ``a2a`` extra): code written for a2a-sdk reaches and serves agents
through mailboxes unchanged (docs/a2a.md).

- ``transport.py``: the client side, an a2a-sdk ``ClientTransport`` for the ``mq9`` protocol
  binding (``Mq9Transport``, ``register_mq9``, ``mq9_agent_card``);
- ``executor.py``: the server side, an a2a-sdk ``AgentExecutor`` served from a mailbox
  (``serve_executor``);
- ``protojson.py``: a2a-sdk's protobuf messages to and from the A2A JSON the core keeps (the
  gateway and the HTTP callers use it too).
"""
