import pytest

import pools
from engine.exceptions import ConfigurationError
from pools.base import Pool


@pytest.mark.parametrize("alias", ["solo", "threads", "prefork"])
def test_aliases_resolve_to_pool_classes(alias):
    cls = pools.resolve(alias)
    assert issubclass(cls, Pool) and cls.name == alias


def test_custom_reads_the_environment_when_called(monkeypatch):
    monkeypatch.setenv("ENGINE_CUSTOM_POOL", "pools.solo:SoloPool")
    assert pools.resolve("custom").__name__ == "SoloPool"
    monkeypatch.setenv("ENGINE_CUSTOM_POOL", "pools.threads:ThreadsPool")
    assert pools.resolve("custom").__name__ == "ThreadsPool"


def test_class_path_resolves():
    assert pools.resolve("pools.solo:SoloPool").name == "solo"


@pytest.mark.parametrize("name, text", [
    ("nonsense", "unknown pool 'nonsense'"),
    ("no.such.module:Pool", "cannot import pool module"),
    ("pools.solo:Missing", "has no 'Missing'"),
    ("engine.config:Config", "not a subclass of pools.base.Pool"),
    (":Class", "must look like"),
])
def test_bad_names_give_one_clear_error(name, text):
    with pytest.raises(ConfigurationError, match=text):
        pools.resolve(name)


def test_custom_without_environment_is_clear(monkeypatch):
    monkeypatch.delenv("ENGINE_CUSTOM_POOL", raising=False)
    with pytest.raises(ConfigurationError, match="ENGINE_CUSTOM_POOL"):
        pools.resolve("custom")
