"""An app whose signal handlers and Task hooks record what they saw, with the pid of the
process they ran in, as JSON lines in the list ``<prefix>:hooks`` (tests read it).

Recording is on only where ``HOOKS_RECORD`` is set (the workers the tests start), so a
process that merely imports this module sends nothing anywhere.
"""

import json
import os

from engine import Engine, get_task_logger, signals
from engine.exceptions import Ignore

app = Engine("hooks")


def record(kind, **fields):
    if not os.environ.get("HOOKS_RECORD"):
        return
    app.client.rpush(f"{app.conf.key_prefix}:hooks",
                     json.dumps({"kind": kind, "pid": os.getpid(), **fields}, default=repr))


# -- the worker's life ----------------------------------------------------------------------
@signals.worker_init.connect
def _worker_init(sender=None, **kwargs):
    record("worker_init", sender=type(sender).__name__)


@signals.worker_ready.connect
def _worker_ready(sender=None, **kwargs):
    record("worker_ready", name=sender.name)


@signals.worker_shutdown.connect
def _worker_shutdown(sender=None, **kwargs):
    record("worker_shutdown")


@signals.worker_process_init.connect
def _process_init(sender=None, **kwargs):
    record("process_init")


@signals.worker_process_shutdown.connect
def _process_shutdown(sender=None, pid=None, exitcode=None, **kwargs):
    record("process_shutdown", reported_pid=pid, exitcode=exitcode)


# -- messages, in the supervisor ----------------------------------------------------------
@signals.task_received.connect
def _received(sender=None, request=None, **kwargs):
    record("received", id=request.id, task=request.name)


@signals.task_unknown.connect
def _unknown(sender=None, name=None, id=None, **kwargs):
    record("unknown", name=name, id=id)


@signals.task_rejected.connect
def _rejected(sender=None, message=None, exc=None, **kwargs):
    record("rejected", message=message.decode("latin-1"), exc=str(exc))


@signals.task_revoked.connect
def _revoked(sender=None, request=None, expired=None, terminated=None, **kwargs):
    record("revoked", id=request.id, expired=expired, terminated=terminated)


# -- around each task, in the process that runs it -----------------------------------------
@signals.task_prerun.connect
def _broken(**kwargs):
    raise RuntimeError("a handler with a bug")   # logged; nothing else changes


@signals.task_prerun.connect
def _prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    record("prerun", id=task_id, task=sender.name, same=task is sender, args=args,
           headers=task.request.headers)


@signals.task_postrun.connect
def _postrun(sender=None, task_id=None, retval=None, state=None, **kwargs):
    record("postrun", id=task_id, state=state, retval=retval)


@signals.task_success.connect
def _success(sender=None, result=None, **kwargs):
    record("success", task=sender.name, id=sender.request.id, result=result)


@signals.task_failure.connect(sender="hooks.fail")
def _failure(sender=None, task_id=None, exception=None, einfo=None, traceback=None, **kwargs):
    record("failure", id=task_id, exception=repr(exception),
           einfo_has_type="ValueError" in einfo.traceback, has_tb=traceback is not None)


@signals.task_retry.connect
def _retry(sender=None, request=None, reason=None, **kwargs):
    record("retry", id=request.id, reason=repr(reason.exc))


class Audited(app.Task):
    """A base class with every hook."""

    def before_start(self, task_id, args, kwargs):
        record("before_start", id=task_id, args=args)

    def on_success(self, retval, task_id, args, kwargs):
        record("on_success", id=task_id, retval=retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        record("on_failure", id=task_id, exc=repr(exc), einfo_exc=repr(einfo.exception))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        record("on_retry", id=task_id, exc=repr(exc))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record("after_return", id=task_id, status=status, retval=retval, einfo=einfo)


@app.task(base=Audited, name="hooks.add")
def add(x, y):
    return x + y


@app.task(base=Audited, name="hooks.fail")
def fail():
    raise ValueError("boom")


@app.task(base=Audited, bind=True, name="hooks.flaky", max_retries=2, default_retry_delay=0.05)
def flaky(self):
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("again"))
    return "ok"


@app.task(name="hooks.plain")
def plain():
    return os.getpid()


@app.task(name="hooks.other_fail")
def other_fail():
    raise ValueError("not the filtered task")


class Charge(app.Task):
    """A class-based task, Celery style."""

    name = "hooks.charge"
    queue = "default"

    def run(self, amount, currency="EUR"):
        return {"charged": amount, "currency": currency, "pid": os.getpid()}


app.register_task(Charge)


@app.task(bind=True, name="hooks.progress")
def progress(self, gate, total):
    """Publishes PROGRESS, then waits for the test to open ``gate`` (a Redis list)."""
    self.update_state(state="PROGRESS", meta={"done": 3, "total": total})
    if app.client.blpop(gate, timeout=60) is None:
        raise TimeoutError("the gate was never opened")
    return "done"


@app.task(bind=True, name="hooks.headers")
def headers(self):
    return self.request.headers


@app.task(bind=True, name="hooks.ignored")
def ignored(self):
    """Sets its own state, then ends with Ignore: nothing more is written."""
    self.update_state(state="HANDLED-ELSEWHERE", meta={"by": "the task"})
    raise Ignore()


logger = get_task_logger(__name__)


@app.task(name="hooks.logs")
def logs():
    logger.warning("logged from a task")
    return True
