"""The engine: every mq9 request decided against the state, in one place, in order."""

# the bundled broker's count of a mailbox joins the command table (counting.py)
from . import counting as _counting  # noqa: F401
