"""The hook registry: connect (plain and as decorators), sender filters, disconnect, send."""

import gc
import logging

import pytest

from engine import signals
from engine.signals import Signal, SignalGroup


class Named:
    def __init__(self, name):
        self.name = name


def test_connect_as_a_plain_call_and_as_decorators_with_and_without_arguments():
    sig = Signal("s")
    seen = []

    def plain(sender=None, **kwargs):
        seen.append(("plain", sender, kwargs["value"]))

    sig.connect(plain)

    @sig.connect
    def bare(sender=None, **kwargs):
        seen.append(("bare", sender, kwargs["value"]))

    @sig.connect(sender="tasks.charge")
    def filtered(sender=None, **kwargs):
        seen.append(("filtered", sender, kwargs["value"]))

    assert callable(bare) and callable(filtered)   # the decorators return the handler
    sig.send(sender="tasks.other", value=1)
    sig.send(sender="tasks.charge", value=2)
    assert seen == [("plain", "tasks.other", 1), ("bare", "tasks.other", 1),
                    ("plain", "tasks.charge", 2), ("bare", "tasks.charge", 2),
                    ("filtered", "tasks.charge", 2)]


def test_sender_filter_by_name_matches_a_task_object_and_by_object_matches_its_name():
    sig = Signal("s")
    charge, refund = Named("tasks.charge"), Named("tasks.refund")
    by_name, by_object = [], []
    sig.connect(lambda sender=None, **kw: by_name.append(sender), sender="tasks.charge")
    sig.connect(lambda sender=None, **kw: by_object.append(sender), sender=charge)
    sig.send(sender=refund)
    sig.send(sender=charge)            # task signals: the sender is the task object
    sig.send(sender="tasks.charge")    # publish signals: the sender is the task name
    assert by_name == [charge, "tasks.charge"]
    assert by_object == [charge, "tasks.charge"]


def test_an_unnamed_sender_filter_matches_only_that_object():
    sig = Signal("s")
    marker, other = object(), object()
    got = []
    sig.connect(lambda sender=None, **kw: got.append(sender), sender=marker)
    sig.send(sender=other)
    sig.send(sender=None)
    sig.send(sender=marker)
    assert got == [marker]


def test_send_returns_receiver_result_pairs_and_passes_the_signal():
    sig = Signal("s")

    def one(sender=None, signal=None, **kwargs):
        return (signal.name, kwargs["x"] + 1)

    sig.connect(one)
    assert sig.send(sender=None, x=1) == [(one, ("s", 2))]


def test_a_raising_handler_is_logged_its_exception_returned_and_the_others_still_run(caplog):
    sig = Signal("s")
    after = []

    def broken(**kwargs):
        raise RuntimeError("bug in handler")

    sig.connect(broken)
    sig.connect(lambda **kw: after.append(1) or "fine")
    with caplog.at_level(logging.ERROR, logger="engine.signals"):
        responses = sig.send(sender=None)
    assert isinstance(responses[0][1], RuntimeError) and responses[1][1] == "fine"
    assert after == [1]
    assert "bug in handler" in caplog.text and "signal s" in caplog.text


def test_connecting_twice_is_once_and_disconnect_removes_by_receiver_sender_or_uid():
    sig = Signal("s")
    calls = []

    def handler(**kwargs):
        calls.append(1)

    sig.connect(handler)
    sig.connect(handler)
    sig.connect(handler, sender="x")
    sig.send(sender="x")
    assert len(calls) == 2            # once unfiltered, once for sender "x"
    assert sig.disconnect(handler) is True
    assert sig.disconnect(handler) is False
    assert sig.disconnect(handler, sender="x") is True
    assert not sig.receivers
    sig.connect(lambda **kw: calls.append(2), dispatch_uid="only-one")
    sig.connect(lambda **kw: calls.append(3), dispatch_uid="only-one")
    sig.send()
    assert calls[-1] == 2 and len(calls) == 3
    assert sig.disconnect(dispatch_uid="only-one") and not sig.receivers
    with pytest.raises(TypeError):
        sig.disconnect()


def test_bound_methods_connect_and_disconnect_by_their_object():
    sig = Signal("s")

    class Listener:
        def __init__(self):
            self.got = 0

        def on(self, **kwargs):
            self.got += 1

    a, b = Listener(), Listener()
    sig.connect(a.on)
    sig.connect(b.on)
    sig.connect(a.on)
    sig.send()
    assert (a.got, b.got) == (1, 1)
    assert sig.disconnect(a.on)
    sig.send()
    assert (a.got, b.got) == (1, 2)


def test_weak_receivers_go_with_their_handler_strong_ones_stay():
    sig = Signal("s")
    got = []

    def make():
        def inner(**kwargs):
            got.append("strong")
        return inner

    def make_weak():
        def inner(**kwargs):
            got.append("weak")
        return inner

    sig.connect(make())                # a closure nobody else holds: still connected
    sig.connect(make_weak(), weak=True)
    gc.collect()
    sig.send()
    assert got == ["strong"]
    assert len(sig.receivers) == 1     # the dead weak one was pruned


def test_a_group_knows_whether_any_member_has_a_receiver():
    group = SignalGroup()
    a, b = Signal("a", group=group), Signal("b", group=group)
    assert not group.connected

    def handler(**kwargs):
        pass

    a.connect(handler)
    b.connect(handler)
    assert group.connected
    a.disconnect(handler)
    assert group.connected
    b.disconnect(handler)
    assert not group.connected


def test_the_task_signals_form_the_runners_group():
    assert not signals.TASK_HOOKS.connected

    def handler(**kwargs):
        pass

    signals.task_retry.connect(handler)
    try:
        assert signals.TASK_HOOKS.connected
    finally:
        signals.task_retry.disconnect(handler)
    assert not signals.TASK_HOOKS.connected


def test_celerys_signal_names_are_all_there():
    for name in ("before_task_publish", "after_task_publish", "task_received", "task_prerun",
                 "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked",
                 "task_rejected", "task_unknown", "worker_init", "worker_process_init",
                 "worker_ready", "worker_shutdown", "worker_process_shutdown", "beat_init",
                 "setup_logging", "import_modules"):
        assert getattr(signals, name).name == name
    from engine import signals as public
    assert public is signals
