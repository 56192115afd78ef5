"""Under a real Django project (tests/django_project, sqlite in a temp dir): settings read
with a namespace, autodiscovery of every INSTALLED_APPS' tasks module once the registry is
ready, ``delay_on_commit`` sending only after commit and never after rollback, and
``engine -A proj run`` (the global -A, as Celery users type it) finding the app."""

import json
import subprocess
import sys
import textwrap

import django  # noqa: F401  (the test extra installs it: a missing Django fails here)
import pytest

from tests.conftest import DEADLINE, ROOT, Worker

PROJECT = ROOT / "tests" / "django_project"


@pytest.fixture
def django_env(env, tmp_path):
    environment = dict(env, ENGINE_TEST_DJANGO_DB=str(tmp_path / "db.sqlite3"))
    environment.pop("DJANGO_SETTINGS_MODULE", None)   # proj/engine.py sets it, as Celery's does
    run_script(environment, """
        import django
        from django.core.management import call_command
        import os; os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        django.setup()
        call_command("migrate", run_syncdb=True, verbosity=0)
        print("{}")
    """)
    return environment


def run_script(environment, source):
    """Run ``source`` in a fresh interpreter in the project directory; its last stdout line
    is JSON."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], cwd=PROJECT,
                          env=environment, capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


class ProjectWorker(Worker):
    """``engine -A proj run ...`` started in the project directory (the global -A)."""

    def __init__(self, args, env, log_path):
        self.args = args
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "-A", "proj", "run", *args],
                                     env=env, cwd=PROJECT, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid


@pytest.fixture
def project_worker(django_env, tmp_path):
    started = []

    def start(*args):
        worker = ProjectWorker(list(args), django_env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker.wait_ready()

    yield start
    for worker in started:
        worker.kill_all()


def test_settings_are_read_by_namespace_and_tasks_discovered_lazily(django_env):
    result = run_script(django_env, """
        import json, sys
        import proj                                   # makes the app, as Django's start does
        from django.apps import apps
        app = proj.engine_app
        before = {"ready": apps.ready, "shop": "shop.tasks" in sys.modules,
                  "billing": "billing.tasks" in sys.modules}
        conf = {"routes": app.conf.task_routes, "expires": app.conf.result_expires,
                "soft": app.conf.task_soft_time_limit}
        app.import_default_modules()                  # what a worker does after loading it
        after = {"ready": apps.ready, "shop": "shop.tasks" in sys.modules,
                 "billing": "billing.tasks" in sys.modules, "notes": "notes.tasks" in sys.modules,
                 "names": sorted(n for n in app.tasks if n.split(".")[0] in ("shop", "billing"))}
        print(json.dumps({"before": before, "conf": conf, "after": after}))
    """)
    # Then nothing was imported before the app was loaded for work (lazy)...
    assert result["before"] == {"ready": False, "shop": False, "billing": False}
    # ...the ENGINE_* settings were read, and only those (not CELERY_*)
    assert result["conf"] == {"routes": {"billing.tasks.*": "billing"}, "expires": 120,
                              "soft": 30}
    # ...and loading made the registry ready and imported every app's tasks module
    after = result["after"]
    assert after["ready"] and after["shop"] and after["billing"] and not after["notes"]
    assert after["names"] == ["billing.tasks.bill", "shop.tasks.count_orders",
                              "shop.tasks.order_names"]


def test_a_lookup_of_an_undiscovered_task_runs_the_pending_discovery(django_env):
    result = run_script(django_env, """
        import json, sys
        import proj
        app = proj.engine_app
        imported = "billing.tasks" in sys.modules
        task = app.tasks["billing.tasks.bill"]        # first use: discovery runs now
        print(json.dumps({"imported_before": imported, "name": task.name}))
    """)
    assert result == {"imported_before": False, "name": "billing.tasks.bill"}


def test_delay_on_commit_sends_after_commit_and_never_after_rollback(django_env, project_worker):
    # Given a producer inside Django transactions
    sent = run_script(django_env, """
        import json
        import proj, django
        django.setup()
        from django.db import transaction
        from shop.models import Order
        from shop.tasks import count_orders, order_names
        from billing.tasks import bill
        app = proj.engine_app
        depth = lambda q: app.client.xlen(app.broker.keys.queue(q))
        with transaction.atomic():
            Order.objects.create(name="committed")
            committed = count_orders.delay_on_commit()
            inside = depth("default")
        after_commit = depth("default")
        try:
            with transaction.atomic():
                Order.objects.create(name="rolled back")
                rolled = order_names.delay_on_commit()
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        after_rollback = depth("default")
        outside = bill.delay_on_commit(5)             # no transaction: sent at once
        print(json.dumps({"inside": inside, "after_commit": after_commit,
                          "after_rollback": after_rollback, "billing": depth("billing"),
                          "committed": committed.id, "rolled": rolled.id, "bill": outside.id}))
    """)
    # Then the message left only with the commit, none for the rolled back transaction,
    # and the routed task (ENGINE_TASK_ROUTES) went to its own queue
    assert (sent["inside"], sent["after_commit"], sent["after_rollback"]) == (0, 1, 1)
    assert sent["billing"] == 1
    # When `engine -A proj run` takes them (the global -A finds proj's app)
    project_worker("--pool", "prefork", "-c", "1", "-Q", "default,billing")
    from engine import AsyncResult
    from tests.apps.basic import app
    app.close()
    # Then the committed row is there for the task, and the bill ran
    assert AsyncResult(sent["committed"], app).get(timeout=DEADLINE) == 1
    assert AsyncResult(sent["bill"], app).get(timeout=DEADLINE) == 5
    assert AsyncResult(sent["rolled"], app).state == "PENDING"


def test_delay_on_commit_checks_its_arguments_at_the_call(django_env):
    result = run_script(django_env, """
        import json
        import proj, django
        django.setup()
        from billing.tasks import bill
        errors = []
        for call in (lambda: bill.delay_on_commit(), lambda: bill.apply_async_on_commit(
                (1,), colour="red")):
            try:
                call()
            except TypeError as exc:
                errors.append(str(exc))
        print(json.dumps(errors))
    """)
    assert len(result) == 2
    assert "missing 1 required positional argument" in result[0] and "colour" in result[1]


def test_global_app_option_works_for_other_commands_too(django_env):
    proc = subprocess.run([sys.executable, "-m", "engine", "-A", "proj", "purge", "-f",
                           "-Q", "default"], cwd=PROJECT, env=django_env, capture_output=True,
                          text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    assert "purged" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "engine", "-A", "nosuchproj", "purge", "-f"],
                         cwd=PROJECT, env=django_env, capture_output=True, text=True,
                         timeout=DEADLINE)
    assert bad.returncode == 2 and "nosuchproj" in bad.stderr
