"""task_routes on the wire: delay, apply_async, send_task and delay_many put the message on
the routed queue's stream, and a worker of that queue runs it."""

from tests.conftest import DEADLINE


def stream_len(app, queue):
    return app.client.xlen(app.broker.keys.queue(queue))


def test_sends_land_on_the_routed_queues(app):
    from tests.apps.basic import add, echo
    app.conf.task_routes = {"tests.apps.basic.add": "math", "tests.apps.basic.*": "rest"}
    try:
        add.delay(1, 2)
        add.apply_async((1, 2), queue="explicit")
        echo.delay(1)
        app.send_task("tests.apps.basic.add", args=(3, 4))
        add.delay_many([(1, 1), (2, 2)])
        assert stream_len(app, "math") == 4
        assert stream_len(app, "explicit") == 1
        assert stream_len(app, "rest") == 1
        assert stream_len(app, "default") == 0
    finally:
        app.conf.task_routes = None


def test_delay_many_with_a_router_reading_arguments_routes_each_call(app):
    from tests.apps.basic import add

    def by_size(name, args, kwargs, options, task=None, **kw):
        return "big" if args and args[0] > 10 else None

    app.conf.task_routes = [by_size]
    try:
        add.delay_many([(1, 1), (100, 1), (200, 1)])
        assert (stream_len(app, "big"), stream_len(app, "default")) == (2, 1)
    finally:
        app.conf.task_routes = None


def test_a_worker_of_the_routed_queue_runs_it(app, run_worker):
    from tests.apps.basic import add
    app.conf.task_routes = {"tests.apps.basic.add": {"queue": "math"}}
    try:
        run_worker("--pool", "threads", "-c", "1", "-Q", "math")
        assert add.delay(20, 22).get(timeout=DEADLINE) == 42
    finally:
        app.conf.task_routes = None
