"""The pool conformance suite, shipped for plugin authors: ``class TestMine(PoolTests)`` with
``pool_class = MyPool`` in a test module, or ``python -m pools.testing POOL`` (an alias such as
``threads``, ``custom``, or ``pkg.mod:Class``). This package only gathers the public names: the
cases are ``suite``, the supervisor's side ``harness``, the work ``tasks``, the command line
``__main__``; docs/pool-authors.md tells how to use them."""

from pools.testing.harness import STATES, Harness, assert_time_limit, value
from pools.testing.suite import PoolTests
from pools.testing.tasks import (POLL, TASKS, SampleError, SampleRunner, encode_body,
                                 sample_task, touch)

__all__ = ["POLL", "STATES", "TASKS", "Harness", "PoolTests", "SampleError", "SampleRunner",
           "assert_time_limit", "encode_body", "sample_task", "touch", "value"]
