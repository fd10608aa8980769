"""The run a tool call belongs to (``run_context.current_run``): a call whose config names
nothing (no ``configurable``: no graph's runtime, no identity) runs with the toolkit's own
policy and no stream writer, at once; a config that names an identity gets that identity's."""

from __future__ import annotations

import pytest
from langchain_core.runnables.config import var_child_runnable_config

from langchain_mq9.run_context import current_run
from mq9_platform.operations.policy import ToolPolicy


def run_under(config, policy):
    token = var_child_runnable_config.set(config)
    try:
        return current_run(policy)
    finally:
        var_child_runnable_config.reset(token)


@pytest.mark.parametrize("config", [None, {}, {"tags": []}, {"configurable": {}}])
def test_a_config_that_names_nothing_runs_as_the_toolkit(config):
    policy = ToolPolicy()
    run = run_under(config, policy)
    assert run.policy is policy and run.writer is None


def test_a_config_that_names_an_agent_runs_as_that_agent():
    policy = ToolPolicy()
    run = run_under({"configurable": {"agent_mailbox": "agent.cat"}}, policy)
    assert run.policy is not policy and run.policy.agent_mailbox == "agent.cat"
    assert run_under({"configurable": {"agent_mailbox": "agent.cat"}}, policy).policy is run.policy
