"""The chaos lane's count of messages handed out after a ``done`` covering them returned
(``bench/js_chaos.py``, issue #72): the lane's verdict is only as good as this rule, so each
way a repeat could hide from it is tried here."""

from __future__ import annotations

from bench.js_chaos import _handed_out_after_done as count


def test_a_fetch_sent_after_the_done_of_an_id_that_hands_it_out_is_counted() -> None:
    handed = [(1.0, [10, 11]), (3.0, [11, 12])]
    dones = [(2.0, [10, 11], -1)]
    assert count(handed, dones) == 1  # 11, by the second fetch (12 was never done)


def test_a_fetch_sent_before_the_done_returned_is_not_counted() -> None:
    # the other reader's fetch left before the done returned: it may hand the id out
    handed = [(1.0, [10]), (1.5, [10])]
    dones = [(2.0, [10], -1)]
    assert count(handed, dones) == 0


def test_an_id_below_the_group_position_another_reader_acked_is_counted() -> None:
    # reader A's done acked up to 20; reader B, fetching later, is handed 15 (never in a done)
    handed = [(1.0, [15]), (5.0, [15, 21])]
    dones = [(2.0, [20], 20)]
    assert count(handed, dones) == 1


def test_the_highest_acked_position_holds_after_a_lower_one() -> None:
    # a later done whose reader had acked less does not lower what is covered
    handed = [(9.0, [18])]
    dones = [(2.0, [20], 20), (3.0, [5], 5)]
    assert count(handed, dones) == 1


def test_dones_out_of_order_in_the_record_are_read_by_time() -> None:
    handed = [(2.5, [7])]
    dones = [(3.0, [8], 8), (2.0, [7], -1)]
    assert count(handed, dones) == 1


def test_nothing_done_nothing_counted() -> None:
    assert count([(1.0, [1, 2, 3]), (2.0, [1, 2, 3])], []) == 0
