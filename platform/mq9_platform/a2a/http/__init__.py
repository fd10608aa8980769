"""HTTP A2A agents reached from mq9 (the ``a2a`` extra: a2a-sdk's client, httpx), every
request through the host allow-list (``mq9_platform/_http/``):

- ``caller.py``: calls to them for ``AgentCaller`` (``call_agent`` on an agent whose card has an
  HTTP interface), kept in the caller's reply mailbox as a call over mq9 is;
- ``cards.py``: their cards imported into the mq9 registry (``import_card``, ``CardImporter``),
  so discovery ranks them beside the mq9 agents.

The other way, mq9 agents served to HTTP A2A clients, is the gateway (``a2a/gateway/``).
"""
