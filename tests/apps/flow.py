"""The app of the flow-control tests (engine.flow): limited tasks that record their starts.

Broker and prefix come from the environment, as in ``basic``; lost workers are noticed
within seconds, and two deliveries make a poison message (held tasks must never be one).
"""

import time

from engine import Engine

app = Engine("flow")
app.conf.update(worker_lost_after=3.0, task_max_deliveries=2)

#: records the running count and its peak, atomically: KEYS running, peak
_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


def key(name):
    return f"{app.conf.key_prefix}:test:{name}"


@app.task(rate_limit="5/s")
def limited(tag):
    app.client.rpush(key("starts"), repr(time.time()))
    return tag


@app.task
def free(tag):
    return tag


@app.task(max_concurrency=2)
def exclusive(seconds):
    app.client.eval(_ENTER, 2, key("running"), key("peak"))
    try:
        time.sleep(seconds)
    finally:
        app.client.decr(key("running"))
    app.client.incr(key("done"))
    return seconds


@app.task(unique_for=60)
def once(tag, seconds=0.0):
    app.client.incr(key(f"runs:{tag}"))
    time.sleep(seconds)
    return tag


@app.task
def ordered(tag):
    app.client.rpush(key("order"), tag)
    return tag
