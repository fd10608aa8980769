"""``KeyShares`` (#106): the keys each caller of a carrier holds within the broker's window, out
of a share of its own, all of them below the carrier identity's bound; refusals name only the
caller's own count. An injected clock moves the window."""

from __future__ import annotations

import pytest

from mq9_platform.client.key_shares import (
    SLACK,
    CallerKeys,
    KeyShares,
    KeysRefused,
    callers_total,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_past_its_share_is_refused_in_its_own_words_and_others_go_on():
    clock = Clock()
    shares = KeyShares(3, total=100, window=600, where="gateway", clock=clock)
    for n in range(3):
        shares.spend("mallory", [("box", f"k{n}")])
    with pytest.raises(KeysRefused) as refused:
        shares.spend("mallory", [("box", "k3")])
    said = str(refused.value)
    assert "you hold 3 of your 3 keys at this gateway" in said
    assert "100" not in said and "\n" not in said  # nothing of the identity's, one line
    shares.spend("bob", [("box", "k0")])  # the same key is bob's own
    assert (shares.held("mallory"), shares.held("bob"), len(shares)) == (3, 1, 4)
    assert shares.refused == 1


def test_the_same_key_again_costs_nothing_and_windows_end():
    clock = Clock()
    shares = KeyShares(2, total=10, window=600, clock=clock)
    shares.spend("alice", [("box", "k"), ("other", "k")])  # two mailboxes: two keys
    shares.spend("alice", [("box", "k")])  # sent again: the broker's duplicate
    with pytest.raises(KeysRefused):
        shares.spend("alice", [("box", "new")])
    clock.now += 600 + SLACK  # the window ended (and the slack past it)
    shares.spend("alice", [("box", "new")])
    assert shares.held("alice") == 1


def test_all_callers_together_stay_below_the_total_nothing_half_counted():
    shares = KeyShares(5, total=6, clock=Clock())
    shares.spend("a", [("box", f"{n}") for n in range(5)])
    with pytest.raises(KeysRefused, match="all in use now \\(you hold 0 of your 5\\)"):
        shares.spend("b", [("box", "x"), ("box", "y")])
    assert shares.held("b") == 0
    shares.spend("b", [("box", "x")])
    assert len(shares) == 6


def test_the_callers_part_is_below_the_identity_bound():
    assert callers_total() == 9000 and callers_total(10) == 9 and callers_total(1) == 1
    with pytest.raises(ValueError):
        KeyShares(0)


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    async def send(self, mailbox, payload, *, idempotency_key=None, **options):
        self.sent.append((mailbox, idempotency_key))
        return len(self.sent)

    def keys_recognised_for(self, mailbox):
        return mailbox != "robustmq.box"


async def test_a_callers_client_counts_its_keyed_sends_only():
    shares = KeyShares(1, total=10, clock=Clock())
    inner = Sender()
    alice = CallerKeys(inner, shares, "alice")
    await alice.send("box", "a", idempotency_key="k")
    await alice.send("box", "b")  # no key: nothing counted
    await alice.send("robustmq.box", "c", idempotency_key="k2")  # a broker keeping no keys
    with pytest.raises(KeysRefused):
        await alice.send("box", "d", idempotency_key="k3")
    assert inner.sent == [("box", "k"), ("box", None), ("robustmq.box", "k2")]
    assert alice.keys_recognised_for("box") is True  # the rest is the client's


def test_callers_counted_in_a_part_fill_only_the_part_and_its_window_frees_it():
    """(#116) Callers who cost nothing to make (an identity provider's principals on a carrier's
    identity) hold at most a part of the total together: filling it refuses only them, never a
    caller outside it, nothing half counted; the part is freed as their keys' window ends."""
    clock = Clock()
    shares = KeyShares(3, total=10, window=600, where="server", clock=clock)
    free = ("principals without a credential of their own", 4)
    shares.spend("free-1", [("box", "a"), ("box", "b"), ("box", "c")], part=free)
    with pytest.raises(KeysRefused, match="are all in use now \\(you hold 0 of your 3\\)"):
        shares.spend("free-2", [("box", "a"), ("box", "b")], part=free)  # all or none
    shares.spend("free-2", [("box", "a")], part=free)
    assert shares.in_part(free[0]) == 4 and shares.held("free-2") == 1
    shares.spend("named", [("box", "a"), ("box", "b"), ("box", "c")])  # outside the part
    assert len(shares) == 7
    clock.now += 600 + SLACK
    assert shares.in_part(free[0]) == 0 and len(shares) == 0
    shares.spend("free-3", [("box", "a"), ("box", "b"), ("box", "c")], part=free)
