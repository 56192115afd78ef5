"""``engine.testing`` without processes: the environment it builds and the server command."""

from pathlib import Path

import pytest

from engine import embedded
from engine.testing import engine_env


def test_engine_env_puts_the_root_first_drops_and_sets():
    # Given a base environment with an app, a path and another variable
    base = {"ENGINE_APP": "x", "PYTHONPATH": "/elsewhere", "HOME": "/h"}
    # When an engine process's environment is built from it
    env = engine_env({"ENGINE_KEY_PREFIX": "p"}, root=Path("/checkout"), base=base,
                     drop=("ENGINE_APP",))
    # Then the root comes first on PYTHONPATH, the dropped variable is gone, the rest kept
    assert env == {"PYTHONPATH": "/checkout:/elsewhere", "HOME": "/h", "ENGINE_KEY_PREFIX": "p"}
    assert base["ENGINE_APP"] == "x"    # the base itself is left alone
    # And with no PYTHONPATH before, there is no empty entry (which would mean the cwd)
    assert engine_env({}, root=Path("/checkout"), base={})["PYTHONPATH"] == "/checkout"


def test_server_args_listen_on_a_socket_or_on_loopback_only(tmp_path):
    on_socket = embedded.server_args(tmp_path, socket=tmp_path / "s.sock", daemonize=False)
    assert on_socket[on_socket.index("--port") + 1] == "0"
    assert on_socket[on_socket.index("--unixsocket") + 1] == str(tmp_path / "s.sock")
    on_port = embedded.server_args(tmp_path, socket=None, port=6390, daemonize=False)
    assert on_port[on_port.index("--port") + 1] == "6390"
    assert on_port[on_port.index("--bind") + 1] == "127.0.0.1"
    assert "--unixsocket" not in on_port
    with pytest.raises(ValueError):
        embedded.server_args(tmp_path, socket=None)
