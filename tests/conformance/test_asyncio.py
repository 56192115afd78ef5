"""The conformance suite on the asyncio pool (its sample tasks are plain functions: they run
in the pool's sync threads; coroutine jobs are in tests/unit/test_asyncio_pool.py)."""

from pools.asyncio import AsyncioPool
from pools.testing import PoolTests


class TestAsyncioPool(PoolTests):
    pool_class = AsyncioPool
    concurrency = 4


class TestAsyncioPoolOfOne(PoolTests):
    pool_class = AsyncioPool
    concurrency = 1
