"""The conformance suite on the prefork pool."""

from pools.prefork import PreforkPool
from pools.testing import PoolTests


class TestPreforkPool(PoolTests):
    pool_class = PreforkPool
    concurrency = 2


class TestPreforkPoolOfOne(PoolTests):
    pool_class = PreforkPool
    concurrency = 1
