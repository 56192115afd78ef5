"""Finding the app: ``-A pkg`` looks in ``pkg/engine.py`` (or ``pkg/celery.py``) when the
package itself defines none, and ``-A`` may come before the command word."""

import sys
import textwrap

import pytest

from engine.app import load_app
from engine.cli import _command_index, _wants_gevent, build_parser
from engine.exceptions import ConfigurationError


@pytest.fixture
def package(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name, files):
        root = tmp_path / name
        root.mkdir()
        for filename, text in files.items():
            (root / filename).write_text(textwrap.dedent(text))
        return name

    yield make
    for module in [m for m in sys.modules if m.startswith("loaderpkg")]:
        del sys.modules[module]


APP = """
    from engine import Engine
    app = Engine("{name}")
"""


def test_a_package_without_an_app_is_searched_in_its_engine_module(package):
    name = package("loaderpkg_a", {"__init__.py": "", "engine.py": APP.format(name="from-engine")})
    assert load_app(name).main == "from-engine"


def test_celerys_file_name_works_too(package):
    name = package("loaderpkg_b", {"__init__.py": "", "celery.py": APP.format(name="from-celery")})
    assert load_app(name).main == "from-celery"


def test_an_app_in_the_package_itself_comes_first(package):
    name = package("loaderpkg_c", {"__init__.py": APP.format(name="in-init"),
                                   "engine.py": APP.format(name="in-engine")})
    assert load_app(name).main == "in-init"


def test_a_package_with_no_app_anywhere_is_one_clear_error(package):
    name = package("loaderpkg_d", {"__init__.py": ""})
    with pytest.raises(ConfigurationError, match="defines no Engine app"):
        load_app(name)


def test_the_global_app_option_before_the_command_word():
    parser = build_parser()
    args = parser.parse_args(["-A", "proj", "run", "-c", "2"])
    assert (args.global_app, args.app, args.command) == ("proj", None, "run")
    args = parser.parse_args(["run", "-A", "proj"])
    assert args.app == "proj"
    assert _command_index(["-A", "proj", "run"]) == 2
    assert _command_index(["--app=proj", "run"]) == 1
    assert _command_index(["-Aproj", "run"]) == 1
    assert _wants_gevent(["-A", "proj", "run", "--pool", "gevent"])
    assert not _wants_gevent(["-A", "proj", "purge"])
