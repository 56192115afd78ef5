import pytest

from engine import limits


def test_deadlines_fire_in_order_and_only_once():
    d = limits.Deadlines()
    d.add("a", soft=1.0, hard=2.0, start=100.0)
    d.add("b", soft=None, hard=1.5, start=100.0)
    assert d.next_deadline() == 101.0
    assert d.due(100.9) == []
    assert d.due(101.0) == [("a", "soft")]
    assert d.due(101.6) == [("b", "hard")]
    assert d.due(103.0) == [("a", "hard")]
    assert d.due(200.0) == [] and len(d) == 0


def test_cancelled_deadlines_never_fire():
    d = limits.Deadlines()
    d.add("a", soft=1.0, hard=2.0, start=0.0)
    d.cancel("a")
    assert d.next_deadline() is None
    assert d.due(10.0) == []


def test_readding_a_job_replaces_its_clock():
    d = limits.Deadlines()
    d.add("a", soft=None, hard=1.0, start=0.0)
    d.add("a", soft=None, hard=5.0, start=0.0)
    assert d.due(2.0) == []
    assert d.due(5.0) == [("a", "hard")]


@pytest.mark.parametrize("layers, expected", [
    (((None, None), (1.0, 2.0)), (1.0, 2.0)),
    (((0.5, None), (1.0, 2.0)), (0.5, 2.0)),
    (((3.0, 2.0),), (None, 2.0)),      # soft at or past hard is dropped
    (((None, None), (None, None)), (None, None)),
    (((0, -1),), (None, None)),
])
def test_resolve_limits_first_given_wins(layers, expected):
    assert limits.resolve_limits(*layers) == expected
