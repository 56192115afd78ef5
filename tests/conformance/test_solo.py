"""The conformance suite on the solo pool (jobs run inside maintain(), limits by SIGALRM)."""

from pools.solo import SoloPool
from pools.testing import PoolTests


class TestSoloPool(PoolTests):
    pool_class = SoloPool
    concurrency = 1
