"""#113: the broker's ``--metrics`` is split by what its parts are about: the endpoint, its
meter and readiness (``cli/metrics.py``), the figures a scrape of the broker reads
(``cli/broker_figures.py``) and the nats-servers watched (``cli/servers_watched.py``). The old
import path still gives everything dev_broker.py and the tests import of it, the very objects
the new modules hold."""

from __future__ import annotations

import mq9_broker.cli.metrics as metrics
from mq9_broker.cli import broker_figures, servers_watched
from mq9_broker.cli.metrics import HeldFigures, ServersWatched, broker_endpoint, is_dead_letters


def test_the_metrics_path_still_gives_what_it_gave():
    assert all(hasattr(metrics, name) for name in metrics.__all__)
    assert HeldFigures is broker_figures.HeldFigures
    assert ServersWatched is servers_watched.ServersWatched
    assert metrics.BrokerCollector is broker_figures.BrokerCollector
    assert is_dead_letters("inbox.dlq") and not is_dead_letters("dlq")
    assert callable(broker_endpoint) and metrics.PREFIX == "mq9_broker"
