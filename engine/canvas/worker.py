"""The worker side of the canvas: what a settled step owes Redis for what comes after it.

Functions here return plain command tuples; the supervisor adds them to the write of the
step's own result and ack (results, then successors, then acks), so a crash between them
re-runs the step, and the step then sends the same successors again: their ids are derived
from the step's (``plan.child_id``) and every send goes through ``_SEND_ONCE``, so each is
sent once. Keys (``P`` is ``key_prefix``):

==============================  ======  ==================================================
key                             type    what
==============================  ======  ==================================================
P:sent:{Q}:<task id>            string  this successor was sent to queue Q (``_SEND_ONCE``;
                                        expires with ``result_expires``)
P:chord:{g:GROUP_ID}:results    hash    member index -> encoded result, until the body is
                                        sent (then deleted), or ``result_expires``
P:chord:{g:GROUP_ID}:failed     string  the first failed member: [id, exc type, message]
P:group:{g:GROUP_ID}            string  ``GroupResult.save`` (engine.canvas.result)
==============================  ======  ==================================================

A chord is counted in two steps, because its body's queue lives in another hash slot than
the group's keys: the member's write counts it (``_CHORD_PART``: the results when it was the
last), and only then is the body sent and the member acked (``after_chord``). A crash in
between leaves the member unacked: it runs again, finds the chord complete again, and the
once-only send keeps the body single.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import message
from engine.canvas.plan import NIL, CanvasError, Outgoing, Planner, _array, child_id
from engine.results import FAILURE, SUCCESS, encode_record

if TYPE_CHECKING:
    from engine.app import Engine
    from pools.base import Job, Outcome

log = logging.getLogger("engine.worker")

_CHORD_ERROR = "engine.exceptions.ChordError"

#: sends one message unless it was sent before. KEYS: sent marker, stream, delayed zset
#: (all in the slot of {Q}). ARGV: expiry s, body, eta ('' for now). 1 sent, 0 already.
_SEND_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
else
  redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
end
return 1
"""

#: counts a chord member by its index (a member that runs twice is counted once) and
#: returns every result (HGETALL) once all are in, else nil. KEYS: results hash.
#: ARGV: index, encoded result, size, expiry s.
_CHORD_PART = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.call('HGETALL', KEYS[1])
end
return false
"""

#: records the first failed member of a chord and returns it (whoever asks).
#: KEYS: failed marker. ARGV: encoded [member id, exc type, exc message], expiry s.
_CHORD_FAIL = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return redis.call('GET', KEYS[1])
"""


@dataclass(slots=True)
class ChordStep:
    """A chord member's count (or its failure), sent before the member's ack; what its reply
    asks for (the body, or the chord's failure) is built by ``after_chord``."""

    command: tuple
    context: dict                 #: the body's ``chord`` map: id, size, index, callback
    failed: bool
    worker: str
    traceparent: str | None = None   #: the member's ``tp``: the body is sent in its trace


@dataclass(slots=True)
class Owed:
    """What one settled canvas step owes Redis: final records (the step's own, with its
    children; steps a failure will never run), sends, and at most one chord step."""

    records: list[tuple[str, bytes]] = field(default_factory=list)
    sends: list[tuple] = field(default_factory=list)
    chord: ChordStep | None = None


def sent_key(prefix: str, queue: str, task_id: str) -> str:
    return f"{prefix}:sent:{{{queue}}}:{task_id}"


def chord_keys(prefix: str, group_id: str) -> tuple[str, str]:
    """The results hash and the failure marker of a chord."""
    tag = f"{prefix}:chord:{{g:{group_id}}}"
    return f"{tag}:results", f"{tag}:failed"


def send_commands(app: "Engine", outgoing: list[Outgoing]) -> list[tuple]:
    """Once-only sends of ``outgoing`` (and the queue names, for inspect and purge)."""
    keys = app.broker.keys
    prefix, expires = keys.prefix, int(app.conf.result_expires)
    commands: list[tuple] = []
    queues = set()
    for out in outgoing:
        q = out.queue
        queues.add(q)
        commands.append(("EVAL", _SEND_ONCE, 3, sent_key(prefix, q, out.task_id),
                         keys.queue(q), keys.delayed(q), expires, out.body,
                         "" if out.eta is None or out.eta <= time.time() else repr(out.eta)))
    commands.extend(("SADD", keys.queues, q) for q in sorted(queues))
    return commands


def settle(app: "Engine", job: "Job", outcome: "Outcome", *, store: bool,
           worker: str) -> Owed:
    """What a canvas step owes now that it ended (SUCCESS or FAILURE).

    SUCCESS: the next step of its chain (or its chord's count), its links, given its result
    first; its own record when ``store`` (with the ids it sent as children). FAILURE (its
    own record is the caller's): the chain's later steps marked FAILURE with its exception,
    its errbacks and theirs sent with its id first, its chord failed.

    A body whose canvas keys cannot be planned is dead-lettered (with the reason) beside
    the step's own result: the step ran; what should follow it cannot be sent."""
    body = job.canvas or {}
    owed = Owed()
    planner = Planner(app)
    traceparent = body.get("tp")   # tracing on: the steps after a traced one are in its trace
    if isinstance(traceparent, str):
        planner.traceparent = traceparent
    try:
        if outcome.state == SUCCESS:
            _succeeded(app, planner, job, body, outcome, owed, worker, store)
        else:
            _failed(app, planner, job, body, outcome, owed, worker)
    except Exception as exc:   # a body from anywhere: whatever it holds, the worker goes on
        log.error("task %s[%s]: its canvas cannot go on: %s", job.task, job.id, exc,
                  exc_info=not isinstance(exc, (CanvasError, TypeError, ValueError,
                                                KeyError, IndexError)))
        owed.sends = [("XADD", app.broker.keys.dlq(job.queue), "*", "m", job.body,
                       "reason", f"canvas: {exc}", "queue", job.queue,
                       "at", f"{time.time():.6f}")]
        owed.chord = None
        if outcome.state == SUCCESS and store:
            owed.records = [(job.id, _record(SUCCESS, job, outcome, worker))]
    return owed


def _record(state: str, job: "Job", outcome: "Outcome", worker: str,
            children: list[str] | None = None) -> bytes:
    return encode_record(state, outcome.result, retries=job.retries, task=job.task,
                         worker=worker, runtime=outcome.runtime, children=children)


def _succeeded(app: "Engine", planner: Planner, job: "Job", body: dict, outcome: "Outcome",
               owed: Owed, worker: str, store: bool) -> None:
    value = outcome.result or NIL
    rest, chord = body.get("chain"), body.get("chord")
    outgoing: list[Outgoing] = []
    if rest:
        # the chord context travels with a chain that is a chord member, to its last step
        outgoing += planner.plan(rest[0], seed=child_id(job.id, "next"), head=value,
                                 chord=chord, rest=rest[1:])
    elif chord is not None:
        results_key, _ = chord_keys(app.broker.keys.prefix, chord["id"])
        owed.chord = ChordStep(("EVAL", _CHORD_PART, 1, results_key, int(chord["index"]),
                                value, int(chord["size"]), int(app.conf.result_expires)),
                               chord, False, worker, planner.traceparent)
    for i, link in enumerate(body.get("link") or ()):
        outgoing += planner.plan(link, seed=child_id(job.id, f"link/{i}"), head=value)
    owed.sends = send_commands(app, outgoing)
    if store:
        owed.records.append((job.id, _record(SUCCESS, job, outcome, worker,
                                             [o.task_id for o in outgoing])))


def _failed(app: "Engine", planner: Planner, job: "Job", body: dict, outcome: "Outcome",
            owed: Owed, worker: str) -> None:
    rest = body.get("chain") or ()
    errbacks = list(body.get("link_error") or ())
    if rest:
        for task_id, sig in planner.future(rest[0], seed=child_id(job.id, "next"),
                                           rest=rest[1:]):
            owed.records.append((task_id, encode_record(
                FAILURE, exc_type=outcome.exc_type, exc_message=outcome.exc_message,
                traceback=outcome.traceback, task=sig["task"], worker=worker)))
            errbacks += sig["options"].get("link_error") or ()
    first = message.dumps(job.id)
    outgoing: list[Outgoing] = []
    for i, errback in enumerate(errbacks):
        outgoing += planner.plan(errback, seed=child_id(job.id, f"errback/{i}"), head=first)
    owed.sends = send_commands(app, outgoing)
    chord = body.get("chord")
    if chord is not None:
        _, failed_key = chord_keys(app.broker.keys.prefix, chord["id"])
        who = message.dumps([job.id, outcome.exc_type, outcome.exc_message])
        owed.chord = ChordStep(("EVAL", _CHORD_FAIL, 1, failed_key, who,
                                int(app.conf.result_expires)), chord, True, worker,
                                planner.traceparent)


def after_chord(app: "Engine", step: ChordStep, reply: Any) -> Owed:
    """What a chord step's reply asks for: nothing (members still running), the body with
    the list of results (the last member), or the chord's failure: the body and whatever
    would follow it marked FAILURE with ChordError naming the first failed member, and its
    errbacks sent once, with that member's id first."""
    owed = Owed()
    if not reply:
        return owed
    context = step.context
    gid, callback = context["id"], context["callback"]
    planner = Planner(app)
    planner.traceparent = step.traceparent
    seed = child_id(gid, "body")
    try:
        if not step.failed:
            by_index = dict(zip(reply[::2], reply[1::2]))
            values = [by_index.get(str(i).encode(), NIL) for i in range(int(context["size"]))]
            outgoing = planner.plan(callback, seed=seed, head=_array(values))
            results_key, _ = chord_keys(app.broker.keys.prefix, gid)
            # sent first, then forgotten: a crash in between leaves the results, never a
            # chord without its body
            owed.sends = send_commands(app, outgoing) + [("DEL", results_key)]
            return owed
        member, exc_type, exc_message = message.loads(reply)
        text = f"Dependency {member} raised {exc_type}: {exc_message}"
        errbacks: list = []
        for task_id, sig in planner.future(callback, seed=seed):
            owed.records.append((task_id, encode_record(
                FAILURE, exc_type=_CHORD_ERROR, exc_message=text, task=sig["task"],
                worker=step.worker)))
            errbacks += sig["options"].get("link_error") or ()
        first = message.dumps(member)
        outgoing = []
        for i, errback in enumerate(errbacks):
            outgoing += planner.plan(errback, seed=child_id(gid, f"errback/{i}"), head=first)
        owed.sends = send_commands(app, outgoing)
    except Exception as exc:
        log.error("chord %s: its body cannot be sent: %s", gid, exc, exc_info=not isinstance(
            exc, (CanvasError, TypeError, ValueError, KeyError, IndexError)))
    return owed
