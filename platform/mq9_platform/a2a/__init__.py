"""Agent calls: A2A tasks between agents over mq9 mailboxes. ``serve_agent`` serves a graph
on its mailbox, ``AgentCaller`` calls one; the wire forms, the task store, an a2a-sdk
``AgentExecutor`` adapter and an a2a-sdk client transport are beside them."""
