"""mq9-platform's version, in a leaf the command lines (mq9-wake, mq9-a2a-gateway, mq9-mcp,
mq9) import. Every distribution of this repository is released at the same one:
tests/project/test_distributions.py keeps them equal."""

__version__ = "0.5.0"
