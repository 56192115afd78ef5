"""The supervisor's inbox (engine.worker.inbox): what a loop turn takes, and that nothing put
is ever dropped, however many items wait."""

from __future__ import annotations

import queue

import pytest

from engine.worker.inbox import WakeInbox, take


@pytest.mark.parametrize("make", [WakeInbox, queue.SimpleQueue], ids=["wake", "simple"])
def test_more_items_than_a_turn_takes_all_arrive_over_several_turns(make):
    # Given more items waiting than one turn takes
    inbox = make()
    for i in range(1234):
        inbox.put(i)

    # When turns take them, at most 500 each
    turns = []
    while True:
        got = list(take(inbox, 0, [], 500))
        if not got:
            break
        turns.append(got)

    # Then every item came, once and in order, and no turn took more than its limit
    assert [len(t) for t in turns] == [500, 500, 234]
    assert [i for t in turns for i in t] == list(range(1234))


def test_a_turn_of_exactly_the_limit_leaves_the_next_item_in_the_inbox():
    inbox = WakeInbox()
    for i in range(3):
        inbox.put(i)
    assert list(take(inbox, 0, [], 2)) == [0, 1]
    assert list(take(inbox, 0, [], 2)) == [2]


def test_items_put_from_the_loop_itself_are_taken_without_a_wake_up():
    # Given items put by the loop's own thread (a polled pool's outcomes)
    inbox = WakeInbox()
    inbox.put_here("outcome")
    # Then no token was posted, and the next turn takes them at once
    assert not inbox.waker.acquire(False)
    assert list(take(inbox, 5.0, [], 10)) == ["outcome"]


def _tokens(inbox):
    count = 0
    while inbox.waker.acquire(False):
        count += 1
    return count


def test_threads_post_once_a_turn_and_again_after_the_loop_looked():
    # Given a loop asleep, and twenty items put from a thread before it wakes
    inbox = WakeInbox()
    for i in range(20):
        inbox.put(i)
    # Then one token was posted for all of them
    assert _tokens(inbox) == 1
    # When the loop's turn waits (the token taken) and reads them
    inbox.waker.release()
    assert list(take(inbox, 5.0, [], 100)) == list(range(20))
    # Then the next item put posts again: the loop sleeping on the semaphore wakes for it
    inbox.put("late")
    assert _tokens(inbox) == 1
    inbox.waker.release()
    assert list(take(inbox, 5.0, [], 100)) == ["late"]


def test_an_item_put_while_the_loop_still_reads_the_last_ones_is_not_stranded():
    # Given a turn that has woken (tokens taken, flag lowered) but not read everything yet
    inbox = WakeInbox()
    for i in range(3):
        inbox.put(i)
    turn = take(inbox, 5.0, [], 100)
    assert next(turn) == 0
    # When a thread puts meanwhile, it posts (the loop will wait again after this turn)
    inbox.put("meanwhile")
    assert _tokens(inbox) == 1
    # and the item is read, in this turn or the next
    inbox.waker.release()
    assert list(turn) + list(take(inbox, 5.0, [], 100)) == [1, 2, "meanwhile"]
