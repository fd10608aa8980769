"""The ``metrics`` extra: ``prometheus-client``, asked for only when an operator asks for
metrics; without it, one line saying what to install."""

from __future__ import annotations

import sys
from types import ModuleType

EXTRA = "metrics"


class MetricsUnavailable(Exception):
    """Metrics were asked for and cannot be served: one line, for a person."""


def need_prometheus() -> ModuleType:
    """``prometheus_client``, or ``MetricsUnavailable`` saying how to install it."""
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable(
            f"--metrics needs mq9-wire's '{EXTRA}' extra (prometheus-client), missing from "
            f"{sys.prefix}: install mq9-wire as you did, with [{EXTRA}] after its name (in a "
            f"clone: {sys.executable} -m pip install -e './wire[{EXTRA}]')"
        ) from None
    return prometheus_client
