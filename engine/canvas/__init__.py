"""The canvas: signatures and the work-flows built from them (chain, group, chord, chunks,
map, starmap), sent by producers and carried on by the workers that finish each step.

``signature`` (producer API), ``plan`` (wire signatures -> messages, shared by both sides),
``worker`` (what a settled step owes Redis: its successors, a chord's count), ``result``
(GroupResult), ``builtins`` (the map and starmap tasks every app has).
"""

from engine.canvas.plan import CanvasError
from engine.canvas.result import GroupResult
from engine.canvas.signature import (Signature, chain, chord, chunks, group, maybe_signature,
                                     signature, xmap, xstarmap)

__all__ = ["CanvasError", "GroupResult", "Signature", "chain", "chord", "chunks", "group",
           "maybe_signature", "signature", "xmap", "xstarmap"]
