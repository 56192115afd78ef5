"""The worker half of the engine: the supervisor behind ``engine run`` and what it drives.

``supervisor`` is the loop; ``inbox``, ``intake``, ``ledger``, ``recovery`` and ``commands``
are its parts; ``lanes`` (with ``isolation`` for lanes in a process of their own),
``writer``, ``runner`` and ``presence`` are what it drives; ``ossignals`` is the only caller
of ``signal.signal``. This package imports nothing at import time, so that a pool child can
take ``ossignals`` alone.
"""
