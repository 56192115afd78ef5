"""What a lane is asked to be: ``--pool/-c/-Q`` or one ``--lane QUEUES=POOL:N[,KEY=VALUE]``.

``LaneSpec`` is the plain description the command line and configuration produce;
``engine.worker.lanes`` turns each into a running lane.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.exceptions import ConfigurationError
from pools.base import PoolOptions


@dataclass
class LaneSpec:
    """What ``--pool/-c/-Q`` or one ``--lane QUEUES=POOL:CONCURRENCY`` asks for."""

    queues: list[str]
    pool: str = "prefork"
    concurrency: int = 1
    prefetch: int = 4
    soft_time_limit: float | None = None
    time_limit: float | None = None
    name: str = ""
    options: PoolOptions = field(default_factory=PoolOptions)
    #: run the pool in a child ``engine run`` of its own (engine.worker.isolation); None: decide
    #: from the pool (``needs_own_process``, or max-memory on a pool that cannot recycle)
    isolate: bool | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = ",".join(self.queues)


#: per-lane options after ``QUEUES=POOL:N``: key -> (LaneSpec or PoolOptions field, type)
LANE_OPTIONS = {
    "prefetch": ("prefetch", int), "soft": ("soft_time_limit", float),
    "hard": ("time_limit", float), "name": ("name", str), "isolate": ("isolate", "bool"),
    "max-tasks": ("max_tasks_per_child", int), "max-memory": ("max_memory_per_child", int),
}


def parse_lane(text: str, *, prefetch: int = 4, options: PoolOptions = PoolOptions()) -> LaneSpec:
    """``QUEUES=POOL:CONCURRENCY[,KEY=VALUE...]`` -> LaneSpec.

    E.g. ``io,mail=gevent:500`` or ``cpu=prefork:4,prefetch=2,soft=5,hard=10,max-memory=200000``.
    Keys are those of LANE_OPTIONS; they override the worker-wide flags for this lane only.
    """
    queues_text, sep, rest = text.partition("=")
    pool_text, *option_texts = rest.split(",")
    pool, _, concurrency_text = pool_text.rpartition(":")
    queues = [q.strip() for q in queues_text.split(",") if q.strip()]
    if not sep or not queues or not pool:
        raise ConfigurationError(f"bad lane {text!r}: expected QUEUES=POOL:CONCURRENCY, "
                                 f"e.g. cpu=prefork:4")
    try:
        concurrency = int(concurrency_text)
        if concurrency < 1:
            raise ValueError
    except ValueError:
        raise ConfigurationError(f"bad lane {text!r}: concurrency must be a whole number "
                                 f"above 0") from None
    spec_fields: dict[str, Any] = {"prefetch": prefetch}
    pool_fields: dict[str, Any] = {}
    for option in option_texts:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key not in LANE_OPTIONS or not eq or not value:
            raise ConfigurationError(f"bad lane {text!r}: unknown option {option!r} (known: "
                                     f"{', '.join(f'{k}=...' for k in LANE_OPTIONS)})")
        attr, kind = LANE_OPTIONS[key]
        try:
            if kind == "bool":
                if value.lower() not in ("yes", "no", "true", "false", "1", "0"):
                    raise ValueError
                parsed: Any = value.lower() in ("yes", "true", "1")
            else:
                parsed = kind(value)
                if kind is not str and parsed <= 0:
                    raise ValueError
        except ValueError:
            wanted = "yes or no" if kind == "bool" else f"a positive {getattr(kind, '__name__', kind)}"
            raise ConfigurationError(f"bad lane {text!r}: {key} takes {wanted}, "
                                     f"got {value!r}") from None
        (pool_fields if attr in ("max_tasks_per_child", "max_memory_per_child")
         else spec_fields)[attr] = parsed
    if pool_fields:
        options = dataclasses.replace(options, **pool_fields)
    return LaneSpec(queues=queues, pool=pool, concurrency=concurrency, options=options,
                    **spec_fields)
