"""``GroupResult``: the handle of a group (and of a chord's header), results in member order.

Members are AsyncResults, or GroupResults for members that are groups themselves. ``save``
stores the member ids under ``P:group:{g:GROUP_ID}`` (expiring with ``result_expires``) so
that another process can ``GroupResult.restore(id)`` the handle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

from engine import message
from engine.results import FAILURE, READY_STATES, SUCCESS, AsyncResult, ResultSet, \
    decode_record

if TYPE_CHECKING:
    from engine.app import Engine


def group_key(prefix: str, group_id: str) -> str:
    return f"{prefix}:group:{{g:{group_id}}}"


class GroupResult(ResultSet):
    def __init__(self, id: str, results: Iterable[Any], app: "Engine | None" = None, *,
                 parent: Any = None) -> None:
        super().__init__(results)
        if app is None:
            from engine.registry import current_app
            app = current_app()
        self.id = id
        self.app = app
        self.parent = parent
        self._children: list | None = None

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} [{', '.join(str(r.id) for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id \
            and other.results == self.results

    __hash__ = None   # type: ignore[assignment]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    @property
    def children(self) -> list:
        return list(self.results)

    def _leaves(self) -> list[AsyncResult]:
        leaves: list[AsyncResult] = []
        for r in self.results:
            leaves.extend(r._leaves() if isinstance(r, GroupResult) else [r])
        return leaves

    # -- waiting -----------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True,
            disable_sync_subtasks: bool = True) -> list[Any]:
        """Every member's value in member order (nested lists for nested groups); raises
        the first failed member's exception unless ``propagate`` is False."""
        values = iter(ResultSet(self._leaves()).get(
            timeout=timeout, propagate=propagate, disable_sync_subtasks=disable_sync_subtasks))
        return self._shape(values)

    join = get

    def _shape(self, values: Iterator[Any]) -> list[Any]:
        return [r._shape(values) if isinstance(r, GroupResult) else next(values)
                for r in self.results]

    def _states(self) -> list[str]:
        leaves = self._leaves()
        if not leaves:
            return []
        states = []
        raws = self.app.backend.peek_many([r.id for r in leaves if r._record is None])
        fresh = iter(raws)
        for r in leaves:
            if r._record is not None:
                states.append(r._record["state"])
                continue
            raw = next(fresh)
            if raw:
                r._record = decode_record(raw)
                states.append(r._record["state"])
            else:
                states.append("PENDING")
        return states

    def ready(self) -> bool:
        return all(state in READY_STATES for state in self._states())

    def completed_count(self) -> int:
        """How many members succeeded (as Celery counts it)."""
        return sum(state == SUCCESS for state in self._states())

    def successful(self) -> bool:
        return all(state == SUCCESS for state in self._states())

    def failed(self) -> bool:
        return any(state == FAILURE for state in self._states())

    def waiting(self) -> bool:
        return not self.ready()

    def revoke(self, terminate: bool = False) -> None:
        for r in self._leaves():
            r.revoke(terminate=terminate)

    # -- storing -----------------------------------------------------------------------
    def save(self) -> "GroupResult":
        """Store the member ids so that ``GroupResult.restore(id)`` works anywhere."""
        backend = self.app.backend
        backend.client.set(group_key(backend.prefix, self.id), message.dumps(self._tree()),
                           ex=backend.expires)
        return self

    def _tree(self) -> list:
        return [[r.id, r._tree()] if isinstance(r, GroupResult) else r.id
                for r in self.results]

    @classmethod
    def restore(cls, id: str, app: "Engine | None" = None) -> "GroupResult | None":
        """The saved group of that id, or None when none was saved (or it expired)."""
        if app is None:
            from engine.registry import current_app
            app = current_app()
        backend = app.backend
        raw = backend.client.get(group_key(backend.prefix, id))
        if raw is None:
            return None
        return cls._from_tree(id, message.loads(raw), app)

    @classmethod
    def _from_tree(cls, id: str, tree: list, app: "Engine") -> "GroupResult":
        members = [cls._from_tree(item[0], item[1], app) if isinstance(item, list)
                   else AsyncResult(item, app) for item in tree]
        return cls(id, members, app=app)

    def delete(self) -> None:
        backend = self.app.backend
        backend.client.delete(group_key(backend.prefix, self.id))
