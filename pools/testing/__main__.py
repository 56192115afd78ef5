"""``python -m pools.testing POOL``: run the conformance suite on one pool, pytest's exit code.

Owns the command line only: POOL is whatever ``pools.resolve`` accepts (an alias such as
``threads``, ``custom``, an ``engine.pools`` entry point, or ``package.module:Class``); it
writes a one-class test module naming that pool and hands it, with the rest of argv, to pytest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.exceptions import ConfigurationError
from pools import ALIASES, resolve
from pools.testing.suite import PoolTests

_MODULE = '''\
from pools import resolve
from pools.testing import PoolTests


class TestConformance(PoolTests):
    pool_class = resolve({path!r})
    concurrency = {concurrency!r}
    wait_timeout = {wait_timeout!r}
'''

_GEVENT_BOOT = ("from gevent import monkey; monkey.patch_all()\n"
                "import sys, pytest\n"
                "sys.exit(pytest.main(sys.argv[1:]))\n")


def main(argv: list[str] | None = None) -> int:
    """Run the suite on the pool named in ``argv``; pytest's exit code, 4 for a bad name."""
    parser = argparse.ArgumentParser(
        prog="python -m pools.testing",
        description="Run the pool conformance suite against a pool class. "
                    "Arguments not listed here are passed to pytest.")
    parser.add_argument("pool", help=f"a pool alias ({', '.join(ALIASES)}), 'custom', an "
                                     "engine.pools entry point, or package.module:Class")
    parser.add_argument("-c", "--concurrency", type=int, default=PoolTests.concurrency)
    parser.add_argument("--wait-timeout", type=float, default=PoolTests.wait_timeout,
                        help="ceiling of every wait, seconds (default %(default)s)")
    parser.add_argument("--gevent", action="store_true",
                        help="run pytest in a gevent monkey-patched interpreter")
    args, pytest_args = parser.parse_known_args(argv)
    try:
        pool_class = resolve(args.pool)   # one clear line for a bad name, before pytest starts
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    if pool_class.needs_own_process and not args.gevent:
        print(f"note: {pool_class.__name__} needs a process of its own "
              "(for a gevent pool, add --gevent)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pool-conformance-") as tmp:
        module = Path(tmp) / "test_pool_conformance.py"
        # the generated module resolves the same word again, in the process that runs pytest
        module.write_text(_MODULE.format(path=args.pool, concurrency=args.concurrency,
                                         wait_timeout=args.wait_timeout))
        command = [str(module), "-p", "no:cacheprovider", "--rootdir", tmp, *pytest_args]
        if args.gevent:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
            return subprocess.call([sys.executable, "-c", _GEVENT_BOOT, *command], env=env)
        return int(pytest.main(command))


if __name__ == "__main__":
    sys.exit(main())
