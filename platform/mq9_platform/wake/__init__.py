"""Mail that wakes its agent (docs/wake.md): wake rules kept on the broker, and a
waker that delivers one wake per burst of mail to a webhook, a LangGraph Agent Server run, a
command or a callback."""

from .book import RuleBook
from .deliver import (
    Deliverer,
    Destinations,
    Refused,
    Wake,
    push_headers,
    run_input,
    sign,
    verify,
)
from .limits import Limits
from .rules import RuleError, WakeRule, failed_address, rules_address
from .waker import Waker

__all__ = [
    "Deliverer",
    "Destinations",
    "Limits",
    "Refused",
    "RuleBook",
    "RuleError",
    "Wake",
    "WakeRule",
    "Waker",
    "failed_address",
    "push_headers",
    "rules_address",
    "run_input",
    "sign",
    "verify",
]
