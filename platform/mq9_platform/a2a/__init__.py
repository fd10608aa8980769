"""Agent calls: A2A tasks between agents over mq9 mailboxes (docs/a2a.md).

The core, here, needs no extra:

- ``server.py``: an agent served on its mailbox (``serve_agent``, ``AgentServer``);
- ``caller.py``: an agent called (``AgentCaller``), over mq9 or over HTTP (``http/``);
- ``mail.py``: what a request and a task's states are as mq9 mail: headers, methods, states,
  keys, ids and the A2A JSON built and read;
- ``store.py``: task state on the broker; ``arrivals.py``: waiting for mail to arrive;
  ``shapes.py``: the A2A JSON's types; ``push_auth.py``: push notifications signed with the
  sender's key.

Beside it, each behind its extra:

- ``sdk/``: a2a-sdk's client and executor over mq9;
- ``http/``: HTTP A2A agents called, and their cards imported;
- ``gateway/``: ``mq9-a2a-gateway``, mq9 agents served to HTTP A2A clients.
"""

from ._moved import keep_old_paths

keep_old_paths()
