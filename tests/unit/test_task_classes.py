"""Task classes: hooks found at registration, ``base=``, ``task_cls``, class-based tasks,
the eager path (``apply``, ``task_always_eager``) and argument checks at send time.

No Redis: the apps point at a port nobody listens on, so anything that tried to send would
fail with BrokerUnavailable instead of passing."""

import pytest

from engine import Engine, Task, signals
from engine.exceptions import BrokerUnavailable, Ignore

NOWHERE = "redis://127.0.0.1:9/0"


def make_app(**settings):
    app = Engine("unit", broker=NOWHERE, broker_connection_retries=0, **settings)
    return app


class Recording(Task):
    """A base class with every hook; what they saw goes to ``self.calls``."""

    calls: list = []

    def before_start(self, task_id, args, kwargs):
        self.calls.append(("before_start", tuple(args)))

    def on_success(self, retval, task_id, args, kwargs):
        self.calls.append(("on_success", retval))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(("on_failure", repr(exc), type(einfo.exception).__name__,
                           "ZeroDivisionError" in einfo.traceback))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(("on_retry", repr(exc)))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.calls.append(("after_return", status, repr(retval), einfo))


@pytest.fixture
def calls():
    Recording.calls = []
    yield Recording.calls


@pytest.fixture
def task_signals(calls):
    def prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **kw):
        calls.append(("prerun", sender.name, task is sender))

    def success(sender=None, result=None, **kw):
        calls.append(("task_success", result))

    def failure(sender=None, exception=None, **kw):
        calls.append(("task_failure", repr(exception)))

    def postrun(sender=None, state=None, retval=None, **kw):
        calls.append(("postrun", state))

    pairs = [(signals.task_prerun, prerun), (signals.task_success, success),
             (signals.task_failure, failure), (signals.task_postrun, postrun)]
    for sig, handler in pairs:
        sig.connect(handler)
    yield calls
    for sig, handler in pairs:
        sig.disconnect(handler)


def test_hooks_are_found_once_at_registration():
    app = make_app()

    @app.task
    def plain():
        pass

    @app.task(base=Recording)
    def hooked():
        pass

    class CustomCall(Task):
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs)

    @app.task(base=CustomCall)
    def called():
        return 1

    assert plain.hooked is False
    assert hooked.hooked is True and isinstance(hooked, Recording)
    assert called.hooked is True and called.apply().get() == 1


def test_apply_calls_hooks_and_signals_in_celerys_order(task_signals):
    app = make_app()

    @app.task(base=Recording, name="t.add")
    def add(x, y):
        return x + y

    result = add.apply((2, 3))
    assert result.get() == 5 and result.state == "SUCCESS"
    assert task_signals == [("prerun", "t.add", True), ("before_start", (2, 3)),
                            ("on_success", 5), ("task_success", 5),
                            ("after_return", "SUCCESS", "5", None), ("postrun", "SUCCESS")]


def test_failure_hooks_get_the_exception_and_einfo(task_signals):
    app = make_app()

    @app.task(base=Recording, name="t.div")
    def div(x):
        return 1 / x

    result = div.apply((0,))
    assert result.state == "FAILURE" and isinstance(result.result, ZeroDivisionError)
    assert "ZeroDivisionError" in result.traceback
    with pytest.raises(ZeroDivisionError):
        result.get()
    exc = "ZeroDivisionError('division by zero')"
    assert task_signals[1:] == [("before_start", (0,)), ("on_failure", exc,
                                                         "ZeroDivisionError", True),
                                ("task_failure", exc), ("after_return", "FAILURE", exc, None),
                                ("postrun", "FAILURE")]


def test_a_raising_hook_is_logged_and_the_task_keeps_its_outcome(caplog):
    app = make_app()

    class Broken(Task):
        def on_success(self, retval, task_id, args, kwargs):
            raise RuntimeError("hook bug")

    @app.task(base=Broken)
    def value():
        return 7

    assert value.apply().get() == 7
    assert "hook bug" in caplog.text


def test_before_start_raising_fails_the_task_as_in_celery(calls):
    app = make_app()

    class Guarded(Task):
        def before_start(self, task_id, args, kwargs):
            raise PermissionError("not now")

    @app.task(base=Guarded)
    def never():
        calls.append("ran")

    result = never.apply()
    assert result.state == "FAILURE" and isinstance(result.result, PermissionError)
    assert calls == []


def test_eager_retry_runs_again_with_retries_plus_one(calls):
    app = make_app()

    @app.task(base=Recording, bind=True, max_retries=3)
    def flaky(self):
        if self.request.retries < 2:
            raise self.retry(exc=KeyError(self.request.retries), countdown=60)
        return self.request.retries

    assert flaky.apply().get() == 2
    assert [c for c in calls if c[0] == "on_retry"] == [("on_retry", "KeyError(0)"),
                                                       ("on_retry", "KeyError(1)")]
    # after_return is not called for the RETRY attempts (Celery's rule)
    assert [c[1] for c in calls if c[0] == "after_return"] == ["SUCCESS"]


def test_app_task_is_bound_to_its_app_and_task_cls_takes_a_class_or_a_path():
    app = make_app()
    assert issubclass(app.Task, Task) and app.Task._app is app

    class Mine(app.Task):
        name = "t.mine"

        def run(self):
            return "mine"

    mine = app.register_task(Mine)
    assert app.tasks["t.mine"] is mine and mine.app is app and mine.apply().get() == "mine"

    by_path = Engine("unit2", broker=NOWHERE, task_cls="tests.unit.test_task_classes:Recording")

    @by_path.task
    def f():
        pass

    assert isinstance(f, Recording) and f.hooked and f.app is by_path
    by_class = Engine("unit3", broker=NOWHERE, task_cls=Recording)
    assert isinstance(by_class.task(lambda: None), Recording)
    bad = Engine("unit4", broker=NOWHERE, task_cls="tests.unit.test_task_classes:NOWHERE")
    with pytest.raises(Exception, match="task_cls"):
        bad.task(lambda: None)


def test_class_based_tasks_register_as_instance_or_class_with_celerys_default_name():
    app = make_app()

    class Refund(Task):
        def run(self, amount):
            return -amount

    instance = app.register_task(Refund())
    assert instance.name.endswith("Refund") and instance.app is app
    assert app.register_task(Refund).apply((3,)).get() == -3
    with pytest.raises(TypeError):
        app.register_task(object())


def test_task_class_misuse_is_a_clear_error():
    app = make_app()

    class HasRun(Task):
        def run(self):
            return 1

    with pytest.raises(TypeError, match="class-based task"):
        app.task(base=HasRun)(lambda: None)
    with pytest.raises(TypeError, match="no run"):
        Task()
    with pytest.raises(TypeError, match="unknown task option"):
        app.task(colour="red")(lambda: None)

    class WithOption(Task):
        db_alias = "default"

    @app.task(base=WithOption, db_alias="replica")
    def g():
        pass

    assert g.db_alias == "replica"   # an attribute the base declares is an option


def test_always_eager_runs_delay_here_and_eager_propagates_raises():
    app = make_app(task_always_eager=True)

    @app.task
    def double(x):
        return x * 2

    @app.task
    def boom():
        raise ValueError("eager boom")

    assert double.delay(4).get() == 8           # no broker touched (it is unreachable)
    assert double.apply_async((5,)).get() == 10
    assert boom.delay().state == "FAILURE"
    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError, match="eager boom"):
        boom.delay()
    with pytest.raises(ValueError):
        boom.apply(throw=True)


def test_ignore_leaves_no_state():
    app = make_app()

    @app.task
    def quiet():
        raise Ignore()

    assert quiet.apply().state == "IGNORED"


def test_arguments_that_cannot_bind_are_refused_at_send_time():
    app = make_app()

    @app.task
    def add(x, y):
        return x + y

    @app.task(bind=True)
    def bound(self, a, *, flag=False):
        return a

    @app.task
    def flexible(a, /, b=2, *rest, c, **extra):
        return a

    @app.task(typing=False)
    def unchecked(x, y):
        return x + y

    with pytest.raises(TypeError, match=r"add\(\) missing 1 required positional argument"):
        add.delay(5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        add.apply_async((1, 2), {"z": 3})
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        bound.delay(1, 2)                     # self is not the caller's to pass
    with pytest.raises(TypeError):
        flexible.delay(a=1, c=2)              # positional-only
    with pytest.raises(TypeError):
        flexible.delay(1)                     # c is keyword-only and required
    with pytest.raises(TypeError, match="call 1"):
        add.delay_many([(1, 2), (1,)])
    # arguments that bind go on to the broker (unreachable here: BrokerUnavailable)
    for send in (lambda: add.delay(1, 2), lambda: bound.delay(1, flag=True),
                 lambda: flexible.delay(1, 2, 3, 4, c=5, d=6), lambda: unchecked.delay(5)):
        with pytest.raises(BrokerUnavailable):
            send()


def test_soft_limit_past_hard_limit_is_refused():
    app = make_app()
    with pytest.raises(ValueError, match="soft_time_limit"):
        app.task(soft_time_limit=5, time_limit=2)(lambda: None)

    @app.task
    def f():
        pass

    with pytest.raises(ValueError, match="soft_time_limit"):
        f.apply_async(soft_time_limit=5, time_limit=2)


def test_current_task_and_request_inside_an_eager_run():
    from engine import current_task
    app = make_app()

    @app.task(bind=True)
    def who(self):
        return current_task.request is self.request, self.request.is_eager, \
            self.request.headers

    # eager values are not encoded: the tuple comes back as it was returned
    assert who.apply(headers={"tenant": "a"}).get() == (True, True, {"tenant": "a"})
    assert not current_task
    with pytest.raises(AttributeError, match="no task is running"):
        current_task.request


def test_task_logger_records_carry_task_id_and_name(caplog):
    from engine import get_task_logger
    app = make_app()
    log = get_task_logger("unit.logs")

    @app.task(name="unit.logging")
    def speak():
        log.warning("inside")

    result = speak.apply(task_id="id-42")
    log.warning("outside")
    inside, outside = [r for r in caplog.records if r.name == "engine.task.unit.logs"]
    assert (inside.task_id, inside.task_name) == ("id-42", "unit.logging")
    assert (outside.task_id, outside.task_name) == ("???", "???")
    assert result.successful()


def test_retry_takes_an_eta_datetime_as_celery_code_passes_it():
    import datetime
    from engine.exceptions import Retry
    app = make_app()

    @app.task(bind=True)
    def later(self):
        when = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
        try:
            self.retry(eta=when)
        except Retry as retry:
            return retry.eta

    assert later.apply().get() == datetime.datetime(2030, 1, 1,
                                                    tzinfo=datetime.timezone.utc).timestamp()
