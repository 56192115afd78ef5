import types

import pytest

from engine import Engine
from engine.app import load_app
from engine.config import Config
from engine.exceptions import ConfigurationError


def test_defaults():
    conf = Config()
    assert conf.task_default_queue == "default"
    assert conf.result_expires == 86400
    assert conf.task_acks_late is True
    assert conf.worker_pool == "prefork"


def test_sources_later_wins_regardless_of_order(monkeypatch):
    # Given every source sets the broker URL
    conf = Config()
    conf.from_cli(broker_url="redis://cli")
    monkeypatch.setenv("ENGINE_BROKER_URL", "redis://env")
    conf.update(broker_url="redis://update")
    conf.from_object({"ENGINE_BROKER_URL": "redis://object"}, namespace="ENGINE")
    # Then the CLI wins, then env, then update, then the object
    assert conf.broker_url == "redis://cli"
    conf._layers["cli"].clear()
    assert conf.broker_url == "redis://env"
    monkeypatch.delenv("ENGINE_BROKER_URL")
    assert conf.broker_url == "redis://update"
    conf._layers["update"].clear()
    assert conf.broker_url == "redis://object"


def test_config_from_object_with_namespace_reads_only_prefixed_names():
    settings = types.SimpleNamespace(ENGINE_TASK_SOFT_TIME_LIMIT=5, OTHER_THING=1,
                                     ENGINE_WORKER_CONCURRENCY=3)
    app = Engine("cfgtest")
    app.config_from_object(settings, namespace="ENGINE")
    assert app.conf.task_soft_time_limit == 5
    assert app.conf.worker_concurrency == 3
    assert "other_thing" not in app.conf


def test_config_from_module_path():
    app = Engine("cfgmod")
    app.config_from_object("tests.apps.settings", namespace="ENGINE")
    assert app.conf.task_default_queue == "from-settings"


def test_conf_update_and_attribute_set():
    app = Engine("upd")
    app.conf.update(task_soft_time_limit=5)
    app.conf.result_expires = 10
    assert app.conf.task_soft_time_limit == 5 and app.conf["result_expires"] == 10


def test_unknown_setting_attribute_is_an_error():
    with pytest.raises(AttributeError):
        Config().no_such_setting


@pytest.mark.parametrize("target, text", [
    ("", "no app given"),
    ("no_such_module_xyz", "cannot import app module"),
    ("tests.apps.basic:nope", "has no attribute"),
    ("tests.apps.basic:add", "not an Engine app"),
    ("tests.apps.settings", "defines no Engine app"),
])
def test_load_app_errors_are_clear(target, text):
    with pytest.raises(ConfigurationError, match=text):
        load_app(target)


def test_load_app_finds_the_engine_of_a_module():
    app = load_app("tests.apps.basic")
    assert "tests.apps.basic.add" in app.tasks


def test_task_names_default_to_module_and_function():
    app = Engine("names")

    @app.task
    def hello(name):
        return f"hello {name}"

    @app.task(name="mail.send", queue="mail")
    def send(to):
        return to

    assert hello.name.endswith("test_config.hello") or "hello" in hello.name
    assert send.name == "mail.send" and send.queue == "mail"
    assert hello("world") == "hello world"


def test_unknown_task_option_is_refused():
    app = Engine("opts")
    with pytest.raises(TypeError, match="unknown task option"):
        app.task(colour="blue")(lambda: None)


def test_shared_task_is_registered_in_every_app():
    from engine import shared_task

    @shared_task
    def shared_add(x, y):
        return x + y

    later = Engine("later")
    assert shared_add.name in later.tasks
    assert shared_add(1, 2) == 3


def test_config_from_module_attribute_path_and_any_object_read_at_first_lookup():
    # Given a settings object whose names are not in its __dict__ (as Django's LazySettings
    # proxies them), which cannot be read until it is "configured"
    class LazySettings:
        configured = False

        def __getattr__(self, name):
            if not LazySettings.configured:
                raise RuntimeError("settings are not configured yet")
            return {"ENGINE_TASK_DEFAULT_QUEUE": "lazy-q", "OTHER": 1}[name]

        def __dir__(self):
            if not LazySettings.configured:
                raise RuntimeError("settings are not configured yet")
            return ["ENGINE_TASK_DEFAULT_QUEUE", "OTHER"]

    app = Engine("lazycfg")
    # When the app is configured from it before it can be read
    app.config_from_object(LazySettings(), namespace="ENGINE")
    LazySettings.configured = True
    # Then its names are read at the first lookup
    assert app.conf.task_default_queue == "lazy-q"
    assert "other" not in app.conf


def test_config_from_module_colon_attribute():
    app = Engine("colon")
    app.config_from_object("tests.unit.test_config:SETTINGS_OBJECT", namespace="ENGINE")
    assert app.conf.task_default_queue == "from-object"
    assert app.conf.result_expires == 7


def test_config_from_an_object_reads_class_attributes_and_properties():
    class Settings:
        ENGINE_RESULT_EXPIRES = 9

        @property
        def ENGINE_TASK_DEFAULT_QUEUE(self):   # noqa: N802
            return "from-property"

    app = Engine("objcfg")
    app.config_from_object(Settings(), namespace="ENGINE")
    assert (app.conf.result_expires, app.conf.task_default_queue) == (9, "from-property")


def test_a_bad_settings_path_fails_at_the_call_and_an_unreadable_object_at_lookup():
    import pytest
    from engine.exceptions import ConfigurationError
    app = Engine("badcfg")
    with pytest.raises(ConfigurationError, match="cannot import"):
        app.config_from_object("no.such.settings:thing")
    with pytest.raises(ConfigurationError, match="has no"):
        app.config_from_object("tests.unit.test_config:NOT_THERE")

    class Broken:
        def __dir__(self):
            raise RuntimeError("ImproperlyConfigured, say")

    app.config_from_object(Broken())
    with pytest.raises(ConfigurationError, match="ImproperlyConfigured"):
        app.conf.task_default_queue


class _SettingsObject:
    ENGINE_TASK_DEFAULT_QUEUE = "from-object"
    ENGINE_RESULT_EXPIRES = 7


SETTINGS_OBJECT = _SettingsObject()


def test_celerys_pre_4_names_are_read_as_celery_reads_them():
    # Given a settings module of an older Celery application (its "new lowercase
    # settings" table, and the 3.x spellings)
    settings = types.SimpleNamespace(
        BROKER_URL="redis://old-broker", CELERY_RESULT_BACKEND="redis://old-backend",
        CELERYD_CONCURRENCY=3, CELERY_ALWAYS_EAGER=True, CELERY_DEFAULT_QUEUE="legacy",
        CELERY_ROUTES={"a.*": {"queue": "q"}}, CELERYD_TASK_TIME_LIMIT=30,
        CELERY_TASK_RESULT_EXPIRES=60, CELERYBEAT_SCHEDULE={"x": {}})
    app = Engine("oldnames")
    app.config_from_object(settings)
    conf = app.conf
    assert conf.broker_url == "redis://old-broker"
    assert conf.result_backend == "redis://old-backend"
    assert conf.worker_concurrency == 3 and conf.task_always_eager is True
    assert conf.task_default_queue == "legacy" and conf.task_routes == {"a.*": {"queue": "q"}}
    assert conf.task_time_limit == 30 and conf.result_expires == 60
    assert conf.beat_schedule == {"x": {}}
    # and conf.update takes them too
    app.conf.update(CELERYD_SOFT_TIME_LIMIT=5)
    assert app.conf.task_soft_time_limit == 5


def test_a_new_name_given_beside_its_old_one_wins():
    app = Engine("bothnames")
    app.config_from_object({"CELERY_RESULT_BACKEND": "redis://old",
                            "result_backend": "redis://new"})
    assert app.conf.result_backend == "redis://new"
    app.conf.update({"task_default_queue": "new", "CELERY_DEFAULT_QUEUE": "old"})
    assert app.conf.task_default_queue == "new"
