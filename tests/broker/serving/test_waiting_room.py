"""#88: the broker's waiting room for costly requests (serving/waiting_room.py), on its own.

On the open cluster nats-server vouches for each request's connection and address: many
connections of one address hold at most ``per_address`` together, and a full room keeps no
one out who holds less than the largest holder (that holder's newest request is refused in
its place). A requester nothing vouches for (a reply inbox the client chose) is kept within
its own bounds and the room's, as before, and neither pushes out nor is pushed out."""

from __future__ import annotations

import pytest

from mq9_broker.serving.waiting_room import RoomFull, WaitingRoom


def _fill(room: WaitingRoom, who: str, address: str | None, times: int) -> list[str]:
    """Items ``who-0``, ``who-1``... entered; the items pushed out, and the refusals' texts."""
    out = []
    for i in range(times):
        try:
            out += room.enter(who, address, f"{who}-{i}")
        except RoomFull as full:
            out.append(f"refused: {full}")
    return out


def test_many_connections_of_one_address_hold_its_share_only():
    room: WaitingRoom[str] = WaitingRoom(per_requester=64, per_address=128, in_all=256)
    for c in range(6):  # the flooder: six connections of one address, 70 each
        _fill(room, f"conn{c}", "CLIENTS@10.0.0.9", 70)
    assert len(room) == 128  # before: 256, the whole room
    # another address: all five in, nothing of the flooder's pushed out
    assert _fill(room, "victim", "CLIENTS@10.0.0.5", 5) == []
    assert room.waiting("victim") == 5


def test_a_connection_of_a_flooded_address_takes_the_largest_holders_place():
    room: WaitingRoom[str] = WaitingRoom(per_requester=64, per_address=128, in_all=256)
    _fill(room, "flood1", "A@h", 64)
    _fill(room, "flood2", "A@h", 64)
    pushed = _fill(room, "neighbour", "A@h", 5)  # behind the same NAT as the flooder
    assert pushed == ["flood1-63", "flood2-63", "flood1-62", "flood2-62", "flood1-61"]
    assert room.waiting("neighbour") == 5 and len(room) == 128
    # the largest holder itself cannot push anyone out
    assert _fill(room, "flood1", "A@h", 1) == ["refused: 128 of your address's"]


def test_a_full_room_lets_in_an_address_holding_less_than_the_largest():
    room: WaitingRoom[str] = WaitingRoom(per_requester=64, per_address=128, in_all=256)
    for address in ("A@1", "B@2"):
        for c in range(2):
            _fill(room, f"{address}/{c}", address, 64)
    assert len(room) == 256
    # each from the address, then the connection, holding most at that moment
    assert _fill(room, "victim", "C@3", 3) == ["A@1/0-63", "B@2/0-63", "A@1/1-63"]
    assert len(room) == 256 and room.waiting("victim") == 3


def test_who_nothing_vouches_for_pushes_no_one_out_and_is_not_pushed_out():
    room: WaitingRoom[str] = WaitingRoom(per_requester=4, per_address=8, in_all=6)
    _fill(room, "_INBOX.a", None, 4)
    assert _fill(room, "_INBOX.a", None, 1) == ["refused: 4 of your"]
    _fill(room, "_INBOX.b", None, 2)
    assert _fill(room, "_INBOX.c", None, 1) == ["refused: 6"]  # as before #88
    assert _fill(room, "vouched", "X@1", 1) == ["refused: 6"]  # no vouched holder to push
    assert len(room) == 6


@pytest.mark.parametrize("vouched", [True, False])
def test_turns_go_round_and_what_is_taken_leaves_the_room(vouched):
    room: WaitingRoom[str] = WaitingRoom(per_requester=8, per_address=8, in_all=16)
    for who in ("a", "b"):
        _fill(room, who, f"{who}@h" if vouched else None, 3)
    order = []
    while (taken := room.take(lambda who: True)) is not None:
        order.append(taken[1])
    assert order == ["a-0", "b-0", "a-1", "b-1", "a-2", "b-2"]
    assert len(room) == 0
    # an address emptied holds nothing: its share is whole again
    assert _fill(room, "a", "a@h" if vouched else None, 8) == []
    assert room.take(lambda who: who != "a") is None  # "a" may not run: nothing taken
    assert len(room.clear()) == 8 and len(room) == 0
