"""#78: a call that timed out while this process loads the search model says so, instead of
calling the broker unreachable (on ``memory://`` the broker is this process)."""

from __future__ import annotations

from mq9_platform.operations.errors import explain
from mq9_wire import semantic
from mq9_wire.protocol.errors import RequestTimeout, Unavailable


def test_a_timeout_during_a_model_load_names_the_load_and_only_then():
    timed_out = RequestTimeout("the mq9 call did not finish in time")
    with semantic._LOADING:  # a load under way (the broker's worker holds it while loading)
        assert semantic.loading()
        said = explain(timed_out, operation="agent_register")
        assert "loading the search model" in said and "unreachable" not in said, said
        # a broker that is not there is still said to be so, load or not
        assert "unreachable" in explain(Unavailable("no servers"), operation="agent_register")
    assert not semantic.loading()
    assert "unreachable or busy" in explain(timed_out, operation="agent_register")
