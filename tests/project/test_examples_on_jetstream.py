"""Every example and notebook runs on the JetStream store, pointed at it as a user points them
(issue #55 item 3).

A JetStream nats-server on loopback, and ``mq9-dev-broker --nats <it> --store jetstream`` started
as a user starts it (the command line, in a process of its own, ``python -m mq9_broker``).
Each example runs with ``--server <the broker>`` and must tell its story as
tests/project/test_examples.py checks it, and must have written its state to the broker's stream;
they run one at a time on one broker, as on a shared RobustMQ (tests/robustmq/
test_examples_in_a_row.py): each takes names of its own there and unregisters its agents. Each
notebook runs top to bottom as tests/project/test_notebooks.py runs it, with ``MQ9_SERVER``
naming a broker of its own (the notebooks use fixed names).

All run in every session: about 40 s on a quiet 2-core machine (examples 23 s, notebooks 15 s).
"""

from __future__ import annotations

import pytest
from project.test_examples import EXPECTED, check_run, run_example
from project.test_notebooks import NOTEBOOKS, clean_env, run_notebook
from project.test_notebooks import kernel_specs as kernel_specs  # the fixture, used here

from testbed.support.store_lane import records_in, store_broker

pytestmark = pytest.mark.slow  # nats-server, the dev broker, examples and kernels: processes


@pytest.fixture(scope="module")
def examples_broker():
    with store_broker() as broker:
        yield broker


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_example_tells_its_story_on_the_store(name, examples_broker):
    before = records_in(examples_broker)
    result = run_example(name, examples_broker.url)
    check_run(name, f"{name} on mq9-dev-broker --store jetstream", result)
    assert records_in(examples_broker) > before  # what it did is in JetStream


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_on_the_store(path, kernel_specs):
    with store_broker() as broker:
        run_notebook(path, kernel_specs, {**clean_env(), "MQ9_SERVER": broker.url})
        assert records_in(broker) > 0
