"""An app that takes over logging (setup_logging) and records beat_init in Redis."""

import logging
import os
import sys

from engine import Engine, signals

app = Engine("custom_logging")


@signals.setup_logging.connect
def configure(loglevel=None, logfile=None, format=None, colorize=None, **kwargs):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("CUSTOM %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(loglevel)


@signals.beat_init.connect
def beat_started(sender=None, **kwargs):
    app.client.rpush(f"{app.conf.key_prefix}:beat_init", f"{type(sender).__name__}:{os.getpid()}")


@app.task
def noop():
    return None
