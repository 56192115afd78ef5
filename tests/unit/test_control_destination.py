"""Which workers a control command's destination names: exact names and shell patterns."""

import pytest

from engine.control import addressed, is_pattern


@pytest.mark.parametrize("name, destination, expected", [
    ("w@h-1", None, True),                 # no destination: every worker
    ("w@h-1", [], True),
    ("w@h-1", ["w@h-1"], True),
    ("w@h-10", ["w@h-1"], False),          # a plain name is exact, never a prefix
    ("w@h-2", ["w@h-*"], True),            # the supervisors of one --processes N
    ("x@h-2", ["w@h-*"], False),
    ("w@h-2", ["w@h-[13]"], False),
    ("w@h-3", ["other", "w@h-[13]"], True),
    ("W@h-1", ["w@h-*"], False),           # case-sensitive, as names are
    ("w@h-1", [5, None], False),           # junk from the wire never matches or raises
])
def test_addressed(name, destination, expected):
    assert addressed(name, destination) is expected


def test_is_pattern():
    assert is_pattern("w@h-*") and is_pattern("w?") and is_pattern("w[12]")
    assert not is_pattern("w@h-1")
