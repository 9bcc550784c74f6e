"""Named time spans of the processing stages, for profiles of ``trajden process``.

:func:`span` marks a stage in the code (``with span("graph"): ...``): it opens a
``torch.profiler.record_function`` range named ``trajden.<stage>`` (visible in a torch profiler trace when one
is running; a cheap no-op otherwise) and adds the span's wall time to this thread's totals. A chunk task takes
its thread's totals with :func:`take` and returns them to the driver (:class:`trajden.pipeline.ChunkReport`),
so serial runs and Dask workers report the same way; :attr:`trajden.pipeline.RunSummary.stages` holds the sum.

Stages (:data:`STAGES`): ``start-up`` (model load and evaluator set-up, including compilation, inside tasks),
``read``, ``scale`` (nearest-neighbour estimate), ``graph`` (spatial order, neighbour lists, overlap check),
``model`` (evaluator calls), ``classify`` (OVITO a-CNA/PTM), ``write`` (store writes). Spans do not nest:
an inner span's time is not taken out of an outer one, so stages are placed side by side.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

STAGES = ("start-up", "read", "scale", "graph", "model", "classify", "write")

_LOCAL = threading.local()


def _totals() -> dict[str, float]:
    totals = getattr(_LOCAL, "totals", None)
    if totals is None:
        totals = _LOCAL.totals = {}
    return totals


@contextlib.contextmanager
def span(stage: str) -> Iterator[None]:
    """Time the enclosed code as ``stage`` (one of :data:`STAGES`) and mark it for torch's profiler."""
    from torch.profiler import record_function

    t0 = time.perf_counter()
    try:
        with record_function(f"trajden.{stage}"):
            yield
    finally:
        totals = _totals()
        totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - t0


def take() -> dict[str, float]:
    """This thread's stage totals (seconds) since the last call; resets them."""
    totals = dict(_totals())
    _totals().clear()
    return totals


def add(into: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """``into`` plus ``more``, stage by stage (``into`` is updated and returned)."""
    for k, v in more.items():
        into[k] = into.get(k, 0.0) + float(v)
    return into
