"""The broker's state in memory: mailboxes, the agent registry, and the clock they age by."""
