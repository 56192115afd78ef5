"""The conformance suite on the threads pool."""

from pools.testing import PoolTests
from pools.threads import ThreadsPool


class TestThreadsPool(PoolTests):
    pool_class = ThreadsPool
    concurrency = 4


class TestThreadsPoolOfOne(PoolTests):
    pool_class = ThreadsPool
    concurrency = 1
