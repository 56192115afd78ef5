"""A threads pool that garbles the outcome of every job whose id starts with ``garble-``:
a state no pool should report and no exception type (the supervisor must settle it as a
FAILURE and go on)."""

from pools.base import Outcome
from pools.threads import ThreadsPool


class GarblingPool(ThreadsPool):
    def _deliver(self, outcome: Outcome) -> None:
        if outcome.job_id.startswith("garble-"):
            outcome = Outcome(outcome.job_id, "NONSENSE", exc_type=None, exc_message=None,
                              runtime=float("nan"))
        super()._deliver(outcome)
