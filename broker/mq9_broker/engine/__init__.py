"""The engine: every mq9 request decided against the state, in one place, in order."""
