"""huey_consumer for `-k greenlet`, monkey-patched before anything else (as Huey's docs say)."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from huey.bin.huey_consumer import consumer_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(consumer_main())
