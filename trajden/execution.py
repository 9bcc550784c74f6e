"""Where a ``trajden process`` run executes its frames, and how many frames go into one task.

A ``distributed.LocalCluster`` costs start-up (worker processes, a torch import and a model load in each) that
only pays when there is enough work to share out. With the default ``--cluster auto`` a run stays in this
process (serial, all usable cores for torch and OVITO) when

* the machine has one usable core, or
* only one frame is selected (one chunk task could use only one worker anyway), or
* the selected frames hold fewer than :data:`SERIAL_MAX_ATOM_FRAMES` atom-frames,

and starts a LocalCluster otherwise; ``--cluster local``, ``--workers``, ``--scheduler-file`` or
``--cluster slurm`` ask for Dask explicitly. The decision and its reason are logged and recorded in the
store's attributes (:data:`trajden.names.ATTR_EXECUTION`, :data:`trajden.names.ATTR_EXECUTION_REASON`).

``--frames-per-chunk auto`` (the default) puts about :data:`CHUNK_ATOMS` atoms into each store chunk (one task),
so that small frames share a task's set-up, keeping at least :data:`MIN_CHUNKS` chunks where there are frames
for them.
"""

from __future__ import annotations

import math

#: below this many atom-frames (atoms x selected frames) ``--cluster auto`` runs serially. The issue's
#: 20 x 13.5k hot-fcc run (270k) and ``make demo`` (25 x 5.3k = 133k) fall below it; a LocalCluster's start-up
#: (a process, a torch import and a model load per worker: about 10-20 s on 2 cores) is then a large part of
#: the run. Revisit with ``pipelines/profile_default.py``.
SERIAL_MAX_ATOM_FRAMES = 300_000
#: ``--frames-per-chunk auto``: atoms per store chunk (= per task) to aim for
CHUNK_ATOMS = 100_000
#: ``--frames-per-chunk auto`` keeps at least this many chunks (load balance over workers, resume granularity)
MIN_CHUNKS = 8

AUTO = "auto"


def usable_cores() -> int:
    """CPU cores this process may run on (affinity, cgroup quota: :func:`dask.system.cpu_count`)."""
    import dask.system

    return max(1, int(dask.system.cpu_count()))


def choose_execution(requested: str, n_frames: int, n_atoms: int, *, cores: int | None = None,
                     explicit_dask: bool = False) -> tuple[str, str]:
    """``(kind, reason)``: ``kind`` is ``"serial"``, ``"local"`` or ``"slurm"``.

    Parameters
    ----------
    requested : ``"auto"``, ``"serial"``, ``"local"`` or ``"slurm"`` (the command line's choice)
    n_frames, n_atoms : selected frames and atoms per frame
    cores : usable cores (``None``: :func:`usable_cores`)
    explicit_dask : options that only make sense with Dask were given (``--workers``, ``--scheduler-file``)
    """
    if requested != AUTO:
        return requested, f"{requested} requested"
    if explicit_dask:
        return "local", "--workers/--scheduler-file given"
    cores = usable_cores() if cores is None else int(cores)
    work = int(n_frames) * int(n_atoms)
    if cores <= 1:
        return "serial", "one usable core"
    if n_frames <= 1:
        return "serial", "a single frame"
    if work < SERIAL_MAX_ATOM_FRAMES:
        return "serial", (f"small input: {n_frames} frames x {n_atoms} atoms = {work} atom-frames "
                          f"< {SERIAL_MAX_ATOM_FRAMES}")
    return "local", f"{n_frames} frames x {n_atoms} atoms = {work} atom-frames >= {SERIAL_MAX_ATOM_FRAMES}"


def frames_per_chunk(value: int | str | None, n_frames: int, n_atoms: int) -> int:
    """Frames per store chunk (and per task): ``value`` if an integer, else (``"auto"``/``None``) about
    :data:`CHUNK_ATOMS` atoms per chunk, at least one frame, and no more than leaves :data:`MIN_CHUNKS`
    chunks. Depends only on the input, so a resumed run chooses what the first one did (a store keeps its
    own chunking in any case)."""
    if value is not None and value != AUTO:
        n = int(value)
        if n < 1:
            raise ValueError(f"--frames-per-chunk must be a positive integer or 'auto', not {value!r}")
        return n
    by_atoms = max(1, math.ceil(CHUNK_ATOMS / max(int(n_atoms), 1)))
    by_count = max(1, int(n_frames) // MIN_CHUNKS)
    return max(1, min(by_atoms, by_count))
