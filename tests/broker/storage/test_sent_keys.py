"""storage/in_process/sent_keys.py: the keys a store in this process answered, dropped once
their window ended, oldest first; ``expire`` looks no further than the soonest end it knows of
(#90: most SENDs find nothing to drop), and finds what a full look from the front finds."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mq9_broker.storage.in_process.sent_keys import SentKeys

# puts (key, until) and expiries (now), as a broker's clock runs on
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcdef"), st.integers(0, 40)),
        st.tuples(st.just("expire"), st.just(""), st.integers(0, 40)),
    ),
    max_size=40,
)


@pytest.mark.slow  # about 5 s of CPU (#89)
@settings(max_examples=1000, deadline=None)
@given(_STEPS)
# (found once: the front written again moves behind a key whose window ends sooner)
@example([("put", "b", 1), ("put", "a", 0), ("expire", "", 0), ("put", "b", 1), ("expire", "", 0)])
def test_what_is_kept_is_what_a_full_look_keeps(steps: list[tuple[str, str, int]]) -> None:
    keys, model = SentKeys(), {}  # the model: (box, key) -> until, in the order written
    for step, key, second in steps:
        if step == "put":
            keys.put("box", key, 1, b"f", second)
            model.pop(("box", key), None)
            model[("box", key)] = second
            continue
        dropped = False
        for name, until in list(model.items()):  # from the front, as far as ends have passed
            if until > second:
                break
            del model[name]
            dropped = True
        assert keys.expire(second) is dropped
        assert [(box, k, until) for box, k, _, _, until in keys.rows()] == [
            (box, k, until) for (box, k), until in model.items()
        ]
