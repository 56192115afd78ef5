"""Jobs a pool holds that must not start: revoked, or expired, while they wait in the pool's
own queue behind the running ones (its prefetch).

In the lane's buffer such a message never reaches a pool: the supervisor checks revocations
and expiry when it submits (``Supervisor._admit``). A pool that queues jobs of its own past
that point and can give one back (``Pool.withdraw``: prefork's ring, the threads and
asyncio pools) is asked to, and the job is settled REVOKED without running, as Celery
discards a revoked or expired task it holds. A pool that cannot (a plugin without
``withdraw``) runs what it holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.worker.lanes import Delivery
    from engine.worker.supervisor import Supervisor


def can_withdraw(delivery: "Delivery") -> bool:
    pool = getattr(delivery.lane, "pool", None)
    return pool is not None and pool.withdraw is not None


def withdrawn(delivery: "Delivery") -> bool:
    """Did its pool take it back before it started (where the pool can)?"""
    return can_withdraw(delivery) and delivery.lane.pool.withdraw(delivery.job.id)


def revoke_withdrawn(sup: "Supervisor", delivery: "Delivery", why: str) -> None:
    """Settle a job its pool gave back (``withdrawn``) as REVOKED, never run; copies of it
    waiting aside for it take their turn (where a revoked id is revoked too)."""
    job_id = delivery.job.id
    del sup.inflight[job_id]
    sup.settler.revoked(delivery, why)
    delivery.lane.returned += 1
    for waiting in reversed(sup.aside.pop(job_id, ())):
        waiting.lane.buffer.appendleft(waiting)


def learn_revoked(sup: "Supervisor", fresh: set[str], *, forget_ended: bool) -> set[str]:
    """The worker's revoked set once the fleet's (``fresh``, read from Redis) joins it: a
    job it names anew that waits in its pool's queue is taken back and REVOKED, as a revoke
    message does (``commands._revoke``). ``forget_ended``: of the ids known before, keep only
    those still in flight (the fleet's set keeps the others)."""
    for job_id in fresh - sup.revoked:
        delivery = sup.inflight.get(job_id)
        if delivery is not None and delivery.started is None and withdrawn(delivery):
            revoke_withdrawn(sup, delivery, "revoked")
    if forget_ended:
        return fresh | {job_id for job_id in sup.revoked if job_id in sup.inflight}
    return sup.revoked | fresh


class Expiring:
    """The submitted jobs with an expiry whose pool can withdraw them, checked once a loop
    turn: one that expires before it starts is taken back and revoked ("expired")."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup
        self._held: dict[str, "Delivery"] = {}

    def add(self, delivery: "Delivery") -> None:
        """On submit: kept when it has an expiry and its pool can give it back."""
        if delivery.expires is not None and can_withdraw(delivery):
            self._held[delivery.job.id] = delivery

    def check(self) -> None:
        if not self._held:
            return
        now, inflight = time.time(), self.sup.inflight
        for job_id, delivery in list(self._held.items()):
            if inflight.get(job_id) is not delivery or delivery.started is not None:
                del self._held[job_id]         # ended, or started: it runs to its end
            elif delivery.expires <= now:
                del self._held[job_id]
                if withdrawn(delivery):
                    revoke_withdrawn(self.sup, delivery, "expired")
