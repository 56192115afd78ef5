"""Result records read back: malformed ones and the exception types they may name (no Redis)."""

import sys

import msgpack
import pytest

from engine import results
from engine.exceptions import TaskError


def record(**changes):
    fields = dict(state="FAILURE", value=None, exc_type="", exc_message="", traceback="",
                  date_done=1.0, retries=0, task="t", worker="w", runtime=0.1)
    fields.update(changes)
    return msgpack.packb(list(fields.values()), use_bin_type=True)


@pytest.mark.parametrize("raw, why", [
    (b"\xc1\xc1", "undecodable"),
    (msgpack.packb([{(1, 2): 3}]), "undecodable"),          # a tuple-keyed map
    (msgpack.packb({"state": "SUCCESS"}), "a dict, not an array"),
    (msgpack.packb("SUCCESS"), "a str, not an array"),
    (msgpack.packb([]), "an empty array"),
    (msgpack.packb([7, None]), "field 'state' is a int"),
    (record(exc_type=["x"]), "field 'exc_type' is a list"),
    (record(retries="2"), "field 'retries' is a str"),
    (record(retries=True), "field 'retries' is a bool"),
    (record(traceback=b"bytes"), "field 'traceback' is a bytes"),
])
def test_a_malformed_record_reads_as_a_failure_saying_so(raw, why):
    # Given bytes under a result key that encode_record did not write
    # When they are decoded / Then they read as a FAILURE whose message says what is wrong
    decoded = results.decode_record(raw)
    assert decoded["state"] == results.FAILURE and decoded["malformed"]
    assert decoded["exc_message"].startswith("malformed result record: ")
    assert why in decoded["exc_message"]
    exc = results.rebuild_exception(decoded)
    assert isinstance(exc, TaskError) and "malformed result record" in str(exc)


def test_well_formed_and_short_records_decode_as_before():
    raw = results.encode_record(results.SUCCESS, msgpack.packb([1, 2]), task="t", worker="w")
    decoded = results.decode_record(raw)
    assert decoded["state"] == "SUCCESS" and decoded["value"] == [1, 2]
    assert "malformed" not in decoded
    short = results.decode_record(msgpack.packb(["REVOKED", None, "", "terminated"]))
    assert short["state"] == "REVOKED" and short["exc_message"] == "terminated"
    assert short["retries"] == 0 and "malformed" not in short


@pytest.fixture
def loud_module(tmp_path, monkeypatch):
    """A module on sys.path whose import leaves a file behind: proof it was imported."""
    name = f"loud_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\n"
        "class Boom(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_record_cannot_make_the_producer_import_a_module(loud_module):
    # Given a record naming an exception type in a module this process never imported
    name, marker = loud_module
    crafted = {"state": "FAILURE", "exc_type": f"{name}.Boom", "exc_message": "hi",
               "traceback": "tb"}
    # When the exception is rebuilt
    exc = results.rebuild_exception(crafted)
    # Then it is a TaskError naming the type, and the module was not imported
    assert isinstance(exc, TaskError) and exc.exc_type == f"{name}.Boom"
    assert name not in sys.modules and not marker.exists()


def test_modules_on_the_allow_list_are_imported_and_imported_ones_are_used(loud_module):
    name, marker = loud_module
    crafted = {"state": "FAILURE", "exc_type": f"{name}.Boom", "exc_message": "hi"}
    # Given the module is on the allow-list (result_exception_modules)
    exc = results.rebuild_exception(crafted, modules=[name])
    # Then it is imported and the exception has its own type
    assert marker.exists() and type(exc).__name__ == "Boom" and str(exc) == "hi"
    # And once imported, no allow-list is needed
    assert type(results.rebuild_exception(crafted)).__name__ == "Boom"


def test_an_allowed_package_covers_its_submodules():
    assert results._find_class("json.decoder.JSONDecodeError", ["json"]).__name__ == \
        "JSONDecodeError"


@pytest.mark.parametrize("exc_type", ["builtins.SystemExit", "builtins.KeyboardInterrupt",
                                      "os.path.join", "builtins.int"])
def test_only_exception_classes_are_rebuilt(exc_type):
    # a record naming SystemExit must not make get() end the producer
    exc = results.rebuild_exception({"state": "FAILURE", "exc_type": exc_type,
                                     "exc_message": "0"})
    assert isinstance(exc, TaskError) and exc.exc_type == exc_type


def test_builtin_and_nested_types_are_rebuilt():
    assert isinstance(results.rebuild_exception(
        {"state": "FAILURE", "exc_type": "builtins.KeyError", "exc_message": "k"}), KeyError)
    from engine import exceptions
    exceptions.Outer = type("Outer", (), {"Inner": type("Inner", (Exception,), {})})
    try:
        exc = results.rebuild_exception({"state": "FAILURE", "exc_message": "deep",
                                         "exc_type": "engine.exceptions.Outer.Inner"})
        assert type(exc).__name__ == "Inner"
    finally:
        del exceptions.Outer
