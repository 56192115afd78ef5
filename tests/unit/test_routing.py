"""task_routes: exact names, globs, routers, lists, and Celery's precedence (apply_async
options, then the task's own, then the routes, then task_default_queue). No Redis: routing
is decided before anything is sent."""

import re

import pytest

from engine import Engine
from engine.exceptions import ConfigurationError

NOWHERE = "redis://127.0.0.1:9/0"


@pytest.fixture
def app():
    app = Engine("routing", broker=NOWHERE)

    @app.task(name="mail.send")
    def send_mail(to):
        pass

    @app.task(name="mail.digest", queue="digests")
    def digest():
        pass

    @app.task(name="tasks.add")
    def add(x, y):
        pass

    @app.task(name="other.thing")
    def thing():
        pass

    return app


def queue_of(app, name, args=(), kwargs=None, queue=None, options=None):
    return app.route(name, app.tasks.get(name), args, kwargs or {}, queue, options or {})


def test_dict_routes_exact_names_and_globs_to_a_queue_or_options(app):
    app.conf.task_routes = {"mail.*": {"queue": "mail"}, "tasks.add": "math",
                            re.compile(r"other\..*"): {"queue": "others"}}
    assert queue_of(app, "tasks.add") == "math"
    assert queue_of(app, "mail.send") == "mail"
    assert queue_of(app, "other.thing") == "others"
    assert queue_of(app, "unrouted") == "default"


def test_exact_names_win_over_globs_and_globs_go_in_order(app):
    app.conf.task_routes = {"mail.*": "first", "*": "catch-all", "mail.send": "exact"}
    assert queue_of(app, "mail.send") == "exact"
    assert queue_of(app, "mail.other") == "first"
    assert queue_of(app, "x.y") == "catch-all"


def test_precedence_apply_async_then_task_option_then_routes_then_default(app):
    app.conf.task_routes = {"mail.*": "mail"}
    assert queue_of(app, "mail.send", queue="urgent") == "urgent"   # apply_async(queue=)
    assert queue_of(app, "mail.digest") == "digests"                # @app.task(queue=)
    assert queue_of(app, "mail.send") == "mail"                     # the route
    app.conf.task_default_queue = "fallback"
    assert queue_of(app, "tasks.add") == "fallback"


def test_a_router_callable_gets_celerys_arguments_and_may_fall_through(app):
    seen = []

    def router(name, args, kwargs, options, task=None, **kw):
        seen.append((name, args, kwargs, task.name if task else None))
        if name == "tasks.add" and args and args[0] > 100:
            return {"queue": "big"}
        if name == "mail.send":
            return "mail-by-router"
        return None

    app.conf.task_routes = [router, {"*": "rest"}]
    assert queue_of(app, "tasks.add", args=(1000, 1)) == "big"
    assert queue_of(app, "tasks.add", args=(1, 1)) == "rest"      # fell through to the dict
    assert queue_of(app, "mail.send", kwargs={"to": "a"}) == "mail-by-router"
    assert seen[0] == ("tasks.add", (1000, 1), {}, "tasks.add")


def test_a_router_named_by_path_and_a_pre_4_router_class(app):
    class Legacy:
        def route_for_task(self, task, args=None, kwargs=None):
            return {"queue": "legacy"} if task == "tasks.add" else None

    app.conf.task_routes = ["tests.unit.test_routing:path_router", Legacy()]
    assert queue_of(app, "mail.send") == "by-path"
    assert queue_of(app, "tasks.add") == "legacy"


def path_router(name, args, kwargs, options, task=None, **kw):
    return "by-path" if name.startswith("mail.") else None


def test_route_options_fill_what_apply_async_left_unset_and_amqp_keys_are_ignored(app):
    app.conf.task_routes = {"mail.*": {"queue": "mail", "routing_key": "mail.send",
                                       "exchange": "mail", "time_limit": 30}}
    options = {"time_limit": None}
    assert queue_of(app, "mail.send", options=options) == "mail"
    assert options == {"time_limit": 30}
    options = {"time_limit": 5}
    queue_of(app, "mail.send", options=options)
    assert options == {"time_limit": 5}


def test_bad_routes_are_clear_errors(app):
    app.conf.task_routes = {"mail.*": {"queue": "mail", "colour": "red"}}
    with pytest.raises(ConfigurationError, match="colour"):
        queue_of(app, "mail.send")
    app.conf.task_routes = [lambda *a, **k: 42]
    with pytest.raises(ConfigurationError, match="returned 42"):
        queue_of(app, "mail.send")
    app.conf.task_routes = ["no.such.module:router"]
    with pytest.raises(ConfigurationError, match="cannot import"):
        queue_of(app, "mail.send")


def test_a_new_setting_value_is_seen_by_the_next_send(app):
    app.conf.task_routes = {"tasks.add": "one"}
    assert queue_of(app, "tasks.add") == "one"
    app.conf.task_routes = {"tasks.add": "two"}
    assert queue_of(app, "tasks.add") == "two"
    app.conf.task_routes = None
    assert queue_of(app, "tasks.add") == "default"
