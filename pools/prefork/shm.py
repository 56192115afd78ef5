"""Shared-memory plumbing of the prefork pool: the work slots and the per-child outboxes.

Everything here lives in anonymous ``MAP_SHARED`` mappings made by the supervisor before it
forks, so children inherit them without names, files or a resource tracker. This module owns
the byte layouts and the claim/wake protocol; ``pools.prefork`` decides what the records mean.

Work (supervisor -> children), one table shared by every child:

* ``S`` fixed slots; a slot holds one job's raw message (or the path of an overflow file when
  the message is larger than a slot) and stays reserved from ``submit`` until the job's outcome.
* per slot a POSIX semaphore that is 1 while the slot is offered. A child claims a slot with a
  non-blocking ``sem_trywait`` (an atomic compare-and-swap in user space): no lock is ever held,
  so a child that dies anywhere cannot wedge the others.
* ``items`` is the wake-up: an idle child sleeps on it (a futex). A child that finishes a job
  looks for the next offer itself, without a token; the supervisor posts a token with an
  offer only while ``sleepers`` says more children may be asleep than tokens wait, so a
  busy pool does no syscall and no wake-up per task, and a surplus token only costs a
  spurious wake-up.

Completions (child -> supervisor), one single-producer single-consumer byte ring per child:
8-byte-aligned records ``u32 length | u8 kind | payload``; a length of 0 means "wrap to the
start". The child posts the shared ``done`` semaphore after each record it wants seen now.
The ring header also carries the child's *status* (what it holds), read after its death and,
for the starts a child posts no record of (jobs without a time limit), while it runs.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import tempfile
import time

_ctx = multiprocessing.get_context("fork")   # semaphores unlinked at once: nothing to leak

#: bytes of message stored inline in a work slot; larger messages go through an overflow file
SLOT_SIZE = 16 * 1024
#: bytes of completion ring per child; records above a quarter of it go through a file
OUTBOX_SIZE = 256 * 1024
#: where overflow files live (tmpfs when there is one)
OVERFLOW_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()

# slot states (one byte each, at the start of the work table)
EMPTY, OFFERED, CLAIMED = 0, 1, 2
_STATE_BYTES = {OFFERED: b"\x01"}

_OVERFLOW = 1 << 63          # slot length flag: the slot holds an overflow file's path
_SELF_STORE = 1 << 62        # slot length flag: the child stores the result itself
_NOTIFY_START = 1 << 61      # slot length flag: the child posts ``done`` when the job starts
_SIZE_FLAGS = _OVERFLOW | _SELF_STORE | _NOTIFY_START

# child phases, in the outbox header; what a dead child's phase means is decided by the pool
IDLE, CLAIMING, OWNS, RUNNING, EXITED = 0, 1, 2, 3, 4

# outbox header: u64 words
_HEAD, _TAIL, _PHASE, _SLOT, _SEQ, _TARGET, _FLAGS, _REASON, _DONE, _RSS = range(10)
_HEADER = 128
RETIRE = 1                   #: flag bit: exit when idle (shrink)

# record kinds
STARTED, FINISHED, FINISHED_FILE, WRAP = 1, 2, 3, 0
_REC = struct.Struct("<IB")  # length of payload, kind
_SEQ_STRUCT = struct.Struct("<Q")


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _overflow_write(data: bytes, prefix: str) -> str:
    fd, path = tempfile.mkstemp(prefix=prefix, dir=OVERFLOW_DIR)
    try:
        os.write(fd, data) if len(data) < (1 << 30) else _write_all(fd, data)
    finally:
        os.close(fd)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _overflow_read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class WorkTable:
    """The shared work slots. Supervisor side: ``offer``/``withdraw``/``release``; child side:
    ``claim``/``read``/``unclaim``."""

    def __init__(self, nslots: int) -> None:
        self.nslots = nslots
        self._meta = _align8(nslots) + 64               # state bytes, then the claim hint
        self._hdr = self._meta                          # per slot: seq u64, length u64
        self._bodies = _align8(self._hdr + 16 * nslots + 64)
        self.mm = mmap.mmap(-1, self._bodies + SLOT_SIZE * nslots)
        self.words = memoryview(self.mm).cast("Q")
        self.items = _ctx.Semaphore(0)
        # how many children are about to sleep on ``items`` or sleep there now: an offer
        # posts a token only while one may be asleep (a post that wakes a sleeper is a
        # syscall and, on a busy machine, a preemption of the supervisor holding its GIL)
        self.sleepers = _ctx.Semaphore(0)
        self.claims = [_ctx.Semaphore(0) for _ in range(nslots)]
        # children waiting for the supervisor's loop to turn (``wait_turn``), and the tokens
        # ``mark_turn`` posts them
        self.gated = _ctx.Semaphore(0)
        self.turns = _ctx.Semaphore(0)
        self.overflow: dict[int, str] = {}              # slot -> path (supervisor side)

    # -- supervisor side -------------------------------------------------------------------
    def offer(self, slot: int, seq: int, body: bytes, *, self_store: bool = False,
              notify_start: bool = False) -> None:
        """Write ``body`` into ``slot`` and offer it; the caller owns the slot.
        ``self_store``: the child that runs it should store its result itself.
        ``notify_start``: the child should wake the supervisor when it starts the job (its
        time limits count from then) instead of letting the start ride with the next wake."""
        size = len(body)
        if size <= SLOT_SIZE:
            start = self._bodies + slot * SLOT_SIZE
            self.mm[start:start + size] = body
        else:
            path = _overflow_write(body, "engine-job-")
            self.overflow[slot] = path
            raw = path.encode()
            start = self._bodies + slot * SLOT_SIZE
            self.mm[start:start + len(raw)] = raw
            size = len(raw) | _OVERFLOW
        w = (self._hdr >> 3) + 2 * slot
        self.words[w] = seq
        if self_store:
            size |= _SELF_STORE
        if notify_start:
            size |= _NOTIFY_START
        self.words[w + 1] = size
        self.reoffer(slot)

    def reoffer(self, slot: int) -> None:
        # order: contents, then state byte (scanned by children), then the claim token, then
        # the wake-up; a child that sees the byte before the token just tries again later.
        # The claim token's post is an atomic read-modify-write, a full barrier: the state
        # byte is visible before we read ``sleepers``, and a child counts itself a sleeper
        # (also a barrier) before it looks at the bytes one last time, so one of the two
        # always sees the other (no lost wake-up)
        self.mm[slot] = OFFERED
        self.claims[slot].release()
        if self.sleepers.get_value() > self.items.get_value():
            self.items.release()

    def withdraw(self, slot: int) -> bool:
        """Take an offered slot back before any child claims it; True when we got it."""
        if self.claims[slot].acquire(False):
            self.mm[slot] = CLAIMED
            return True
        return False

    def is_claimed(self, slot: int) -> bool:
        return self.claims[slot].get_value() == 0

    def release(self, slot: int) -> None:
        """The job in ``slot`` is over: the slot may be offered again."""
        self.mm[slot] = EMPTY
        path = self.overflow.pop(slot, None)
        if path:
            unlink_quietly(path)

    @property
    def stopping(self) -> bool:
        return self.words[(self._meta - 16) >> 3] != 0

    def stop_word(self) -> tuple[memoryview, int]:
        """(words, index) of the stopping flag, for a reader that checks it often."""
        return self.words, (self._meta - 16) >> 3

    def set_stopping(self) -> None:
        """Warm stop: children take no new slot and exit when idle."""
        self.words[(self._meta - 16) >> 3] = 1

    def mark_turn(self) -> None:
        """The supervisor's loop turned: stamp the turn word (CLOCK_MONOTONIC, shared by
        every process) and wake the children waiting for a turn. The stamp is a plain store
        and ``gated`` a plain load, which may pass each other: a child that counted itself
        in just then sleeps out its timeout instead (``wait_turn``), nothing worse."""
        self.words[(self._meta - 24) >> 3] = time.monotonic_ns()
        waiting = self.gated.get_value()
        if waiting:
            for _ in range(waiting - self.turns.get_value()):
                self.turns.release()

    def turn_word(self) -> tuple[memoryview, int]:
        """(words, index) of the last turn's stamp in ns, 0 until the first turn."""
        return self.words, (self._meta - 24) >> 3

    def seq_of(self, slot: int) -> int:
        return self.words[(self._hdr >> 3) + 2 * slot]

    def wake(self, n: int = 1) -> None:
        """Extra ``items`` tokens: a child that finds nothing to claim goes back to sleep."""
        for _ in range(n):
            self.items.release()

    def close(self) -> None:
        for path in self.overflow.values():
            unlink_quietly(path)
        self.overflow.clear()
        self.words.release()
        self.mm.close()

    # -- child side ------------------------------------------------------------------------
    def claim(self, status: "Outbox") -> int:
        """Claim one offered slot, or return -1 when none is offered (a spurious wake-up).

        The child's status says CLAIMING the slot *before* the compare-and-swap, so that if it
        dies in between the supervisor knows which slot to look at. A pass that only lost
        races is repeated: the slot may have been offered behind our scan (its byte before
        its claim token). A pass that sees no offered byte at all means another child was
        faster, or a token was spurious.
        """
        mm, n, words, hint_w = self.mm, self.nslots, self.words, (self._meta - 8) >> 3
        claims = self.claims
        passes = 0
        while True:
            start = words[hint_w] % n
            seen = False
            for lo, hi in ((start, n), (0, start)):
                pos = lo
                while pos < hi:
                    idx = mm.find(b"\x01", pos, hi)
                    if idx < 0:
                        break
                    seen = True
                    status.set_phase(CLAIMING, idx)
                    if claims[idx].acquire(False):
                        mm[idx] = CLAIMED
                        status.set_phase(OWNS, idx)
                        words[hint_w] = idx + 1
                        return idx
                    pos = idx + 1
            status.set_phase(IDLE)
            if not seen:
                return -1
            passes += 1
            if passes > 50:
                time.sleep(0.001)   # a slot stuck by a dead claimer: the supervisor repairs it
            elif passes > 3:
                os.sched_yield()

    def has_offer(self) -> bool:
        """Is any slot on offer now (a scan of the state bytes, no lock)?"""
        return self.mm.find(b"\x01", 0, self.nslots) >= 0

    def wait_for_offer(self, timeout: float) -> bool:
        """Child side: return at once while a slot is on offer (a busy child goes from one
        job to the next without a token or a wake-up), else sleep on ``items`` up to
        ``timeout``, counted among the sleepers. True when an offer may be waiting."""
        if self.has_offer():
            return True
        sleepers = self.sleepers
        sleepers.release()
        try:
            if self.has_offer():      # offered while we counted ourselves in
                return True
            return self.items.acquire(True, timeout) or self.has_offer()
        finally:
            sleepers.acquire(False)

    def wait_turn(self, fresh_ns: int, timeout: float) -> None:
        """Child side: sleep until the supervisor's loop turns (``mark_turn``) or
        ``timeout``, unless its last turn is at most ``fresh_ns`` old by now."""
        words, index = self.turn_word()
        gated = self.gated
        gated.release()
        try:
            if time.monotonic_ns() - words[index] > fresh_ns:
                self.turns.acquire(True, timeout)
        finally:
            gated.acquire(False)

    def read(self, slot: int) -> tuple[int, bytes, bool, bool]:
        """(seq, body, self_store, notify_start) of a claimed slot."""
        w = (self._hdr >> 3) + 2 * slot
        seq, size = self.words[w], self.words[w + 1]
        start = self._bodies + slot * SLOT_SIZE
        length = size & ~_SIZE_FLAGS
        if size & _OVERFLOW:
            body = _overflow_read(self.mm[start:start + length].decode())
        else:
            body = self.mm[start:start + length]
        return seq, body, bool(size & _SELF_STORE), bool(size & _NOTIFY_START)

    def unclaim(self, slot: int) -> None:
        """Give a claimed, unstarted slot back (a child told to stop after claiming)."""
        self.reoffer(slot)


class Outbox:
    """One child's completion ring plus its status words.

    Single producer (the child) and single consumer (the supervisor's reader, under the
    pool's drain lock). ``head`` and ``tail`` are byte counters that only grow; aligned 8-byte
    stores keep each of them whole.
    """

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self.size = size
        self.mm = mmap.mmap(-1, _HEADER + size)
        self.words = memoryview(self.mm).cast("Q")
        self.reset()

    def reset(self) -> None:
        for i in range(_HEADER // 8):
            self.words[i] = 0

    def close(self) -> None:
        self.words.release()
        self.mm.close()

    # -- status words ----------------------------------------------------------------------
    def set_phase(self, phase: int, slot: int = 0) -> None:
        self.words[_SLOT] = slot
        self.words[_PHASE] = phase

    def set_running(self, seq: int) -> None:
        self.words[_SEQ] = seq
        self.words[_PHASE] = RUNNING

    @property
    def phase(self) -> int:
        return self.words[_PHASE]

    @property
    def slot(self) -> int:
        return self.words[_SLOT]

    @property
    def seq(self) -> int:
        return self.words[_SEQ]

    @property
    def target(self) -> int:
        return self.words[_TARGET]

    @target.setter
    def target(self, seq: int) -> None:
        self.words[_TARGET] = seq

    @property
    def flags(self) -> int:
        return self.words[_FLAGS]

    def flags_word(self) -> tuple[memoryview, int]:
        """(words, index) of the flags word, for a reader that checks it often."""
        return self.words, _FLAGS

    @flags.setter
    def flags(self, value: int) -> None:
        self.words[_FLAGS] = value

    @property
    def reason(self) -> int:
        return self.words[_REASON]

    @reason.setter
    def reason(self, value: int) -> None:
        self.words[_REASON] = value

    @property
    def done(self) -> int:
        return self.words[_DONE]

    def count_done(self) -> None:
        self.words[_DONE] += 1

    @property
    def rss(self) -> int:
        return self.words[_RSS]

    @rss.setter
    def rss(self, kib: int) -> None:
        self.words[_RSS] = kib

    # -- producer (child) ------------------------------------------------------------------
    def put(self, kind: int, payload: bytes, alive=None) -> None:
        """Append one record; waits (briefly sleeping) while the ring is full."""
        if len(payload) > self.size // 4:
            payload = _overflow_write(payload, "engine-out-").encode()
            kind = FINISHED_FILE
        need = _align8(_REC.size + len(payload))
        words, size = self.words, self.size
        tail = words[_TAIL]
        off = tail % size
        pad = size - off if size - off < need else 0
        while tail + pad + need - words[_HEAD] > size:
            if alive is not None and not alive():
                raise SystemExit(1)
            time.sleep(0.001)
        mm = self.mm
        if pad:
            _REC.pack_into(mm, _HEADER + off, 0, WRAP)
            tail += pad
            off = 0
        base = _HEADER + off
        mm[base + _REC.size:base + _REC.size + len(payload)] = payload
        _REC.pack_into(mm, base, len(payload), kind)
        words[_TAIL] = tail + need   # publish last

    def put_started(self, seq: int) -> None:
        self.put(STARTED, _SEQ_STRUCT.pack(seq))

    # -- consumer (supervisor) -------------------------------------------------------------
    def drain(self) -> list[tuple[int, bytes]]:
        """Every published record, oldest first, as (kind, payload)."""
        words, size, mm = self.words, self.size, self.mm
        head, tail = words[_HEAD], words[_TAIL]
        if head == tail:
            return []
        out = []
        while head < tail:
            off = head % size
            length, kind = _REC.unpack_from(mm, _HEADER + off)
            if kind == WRAP and length == 0:
                head += size - off
                continue
            start = _HEADER + off + _REC.size
            payload = mm[start:start + length]
            if kind == FINISHED_FILE:
                path = payload.decode()
                payload, kind = _overflow_read(path), FINISHED
                unlink_quietly(path)
            out.append((kind, payload))
            head += _align8(_REC.size + length)
        words[_HEAD] = head
        return out


def started_seq(payload: bytes) -> int:
    return _SEQ_STRUCT.unpack(payload)[0]
