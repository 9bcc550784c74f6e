"""The main job: frames -> (scale, denoise, label) -> store, serially or as a Dask graph.

The data path follows MDAnalysis' analysis pattern:

* prepare  (:func:`prepare_store`): open or create the store, decide which frame chunks are pending;
* per frame (:func:`process_frame`): read one frame, label the raw positions, denoise, label again;
* per chunk (:func:`process_chunk`): run the frames of one store chunk and region-write them (each task
  writes its own chunk, no process collects everything);
* conclude (:func:`run`): progress, failures, summary.

The same :func:`process_chunk` runs in serial mode, on Dask workers and in tests, so serial and distributed
runs write identical stores. Workers receive file names and frame indices, never open readers.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from trajden import __version__, names
from trajden.classify import DEFAULT_PTM_RMSD_CUTOFF, classify
from trajden.denoise import DEFAULT_ITERATIONS, denoise
from trajden.errors import InputError, ModelError, TrajdenError
from trajden.io.readers import Frame, Trajectory
from trajden.io.species import require_elements
from trajden.model.options import EvaluatorOptions
from trajden.spans import add, span, take


@dataclass
class ProcessSettings:
    """Everything a worker needs to process a frame (picklable, recorded in the store)."""

    #: a shipped model's name or a file; "auto": chosen by the input's number of elements
    #: (:func:`resolve_model`; "none" when no shipped model covers them: frames are left raw, flagged)
    model: str = "auto"
    device: str = "auto"
    method: str = "denoise"  # or "average" (vibration averaging over a window of frames)
    iterations: int = DEFAULT_ITERATIONS
    tol: float | None = None  # angstrom; None: the model-unit default
    scale: float | str = "auto"
    classifiers: tuple[str, ...] = (names.ACNA, names.PTM)
    ptm_rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF
    keep_raw: bool = False
    window: int = 5
    torch_threads: int | None = None
    ovito_threads: int | None = None
    #: spatial blocks per frame: None (whole frame), "auto" or (nx, ny, nz); on a Dask worker the blocks of
    #: a frame run as separate tasks (:mod:`trajden.decompose`); results equal the undivided run
    blocks: tuple[int, int, int] | str | None = None
    #: frames each worker denoises in this run (set by :func:`run`): a long run of smaller frames asks for
    #: compiled layers on a CPU too (:func:`trajden.decompose.compile_request`)
    frames_per_worker: int = 1
    #: element -> model species index (:func:`trajden.model.coverage.species_map`); set by :func:`resolve_model`
    species_map: dict[str, int] | None = None
    #: element whose sublattice PTM labels on its own (e.g. "Si": cristobalite's cubic-diamond sublattice)
    sublattice: str | None = None
    #: how the model is evaluated (``trajden.evaluator.*``: compile, fused, aggregate), passed to the evaluator
    evaluator: EvaluatorOptions = field(default_factory=EvaluatorOptions)

    def run_config(self) -> dict:
        """The settings that must match for a store to be resumed (device, threads, blocks, evaluator options
        and the run's share per worker excluded: they do not change the result beyond float32 rounding)."""
        d = asdict(self)
        for k in ("device", "torch_threads", "ovito_threads", "blocks", "frames_per_worker", "evaluator"):
            d.pop(k)
        d["classifiers"] = list(self.classifiers)
        return d


@dataclass
class ChunkReport:
    """What a chunk task returns to the driver (small: no arrays)."""

    frames: list[int]
    n_atoms: int
    seconds: float
    failures: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    kept_raw: dict[int, int] = field(default_factory=dict)  # frame -> atoms left raw (trajden.scope)
    #: seconds per stage in this task (:mod:`trajden.spans`)
    stages: dict[str, float] = field(default_factory=dict)
    #: failed frames that a re-run can process (a lost worker, a full disk, a held lock)
    retryable: set[int] = field(default_factory=set)


def _failure_status(exc: BaseException) -> int:
    """FRAME_STATUS_BAD_INPUT for a known input problem, FRAME_STATUS_FAILED for anything else."""
    return names.FRAME_STATUS_BAD_INPUT if isinstance(exc, InputError) else names.FRAME_STATUS_FAILED


def _retryable(exc: BaseException) -> bool:
    """Whether running again can succeed: a TrajdenError that says so, or the environment (OSError)."""
    return bool(getattr(exc, "retryable", False)) if isinstance(exc, TrajdenError) else isinstance(exc, OSError)


#: ``ProcessSettings.model`` when no shipped model covers the input's elements
NO_MODEL = "none"


def resolve_model(first: Frame, settings: ProcessSettings, log=None) -> ProcessSettings:
    """Settings with the model chosen (``model="auto"``) and the input's elements mapped onto its species.

    ``auto`` picks the shipped model that covers the input's number of elements
    (:func:`trajden.model.coverage.choose_model`), or :data:`NO_MODEL` when none does (more than two
    elements): such frames are left at their raw positions and flagged, not rewritten. A model given by name
    or file that cannot take the input's elements raises :class:`trajden.model.coverage.ModelScopeError`.
    ``log`` (e.g. ``print``) is told which model was chosen and why.
    """
    from trajden.cluster import get_model
    from trajden.model import coverage

    if settings.method == "average" or (settings.species_map is not None and settings.model != coverage.AUTO):
        return settings
    distinct = coverage.distinct_elements(first.elements)
    shown = ", ".join(distinct) if distinct else "unnamed"
    name = settings.model
    if name == coverage.AUTO:
        name = coverage.choose_model(first.elements) or NO_MODEL
        if log is not None:
            why = (f"no shipped model covers {len(distinct)} elements: frames are left raw, flagged"
                   if name == NO_MODEL else "chosen for")
            log(f"model {name} ({why} {len(distinct) or 1} element{'s' if len(distinct) > 1 else ''}: {shown})"
                if name != NO_MODEL else f"model none ({why}; elements {shown})")
    if name == NO_MODEL:
        return replace(settings, model=NO_MODEL, species_map={})
    m = get_model(name, "cpu")  # loaded once per process (cached): the run's later calls get this one
    mapping = coverage.species_map(first.elements, m.num_types, f"model {m.name}", m.named_species)
    return replace(settings, model=name, species_map=mapping)


def label_frame(positions, cell, origin, settings: ProcessSettings, elements=None, pbc=None) -> dict[str, np.ndarray]:
    """a-CNA/PTM labels of one frame; with two or more ``elements`` also PTM's chemical ordering, and with
    ``settings.sublattice`` the PTM labels of that element's atoms alone (keys: classifier or variable names)."""
    kinds = None if elements is None or len(set(np.asarray(elements).tolist())) < 2 else np.asarray(elements)
    mask = None
    if settings.sublattice:
        mask = np.zeros(len(positions), dtype=bool) if elements is None else np.asarray(elements) == settings.sublattice
    with span("classify"):
        return classify(positions, cell, settings.classifiers, origin=origin,
                        ptm_rmsd_cutoff=settings.ptm_rmsd_cutoff, types=kinds, sublattice=mask, pbc=pbc)


def extra_label_vars(elements, settings: ProcessSettings) -> tuple[str, ...]:
    """The store's label variables besides the classifiers' (PTM ordering, sublattice) for this input."""
    if names.PTM not in settings.classifiers:
        return ()
    out: tuple[str, ...] = ()
    if elements is not None and len(set(np.asarray(elements).tolist())) > 1:
        out += (names.ordering_var(False), names.ordering_var(True))
    if settings.sublattice:
        out += (names.sublattice_var(False), names.sublattice_var(True))
    return out




def process_frame(frame: Frame, settings: ProcessSettings, model=None):
    """Denoise and label one frame; returns a :class:`trajden.store.FrameResult`."""
    from trajden.store import FrameResult

    if settings.model == "auto" or settings.species_map is None:
        settings = resolve_model(frame, settings)
    check_frame(frame)
    require_elements(frame)
    raw_labels = label_frame(frame.positions, frame.cell, frame.origin, settings, frame.elements, _pbc(frame))
    if settings.model == NO_MODEL:
        from trajden.denoise import DenoiseResult

        result = DenoiseResult.left_raw(frame.positions, names.SCOPE_SPECIES)
    else:
        if model is None:
            from trajden.cluster import get_model

            with span("start-up"):  # once per process (cached), or the worker plugin's model
                model = get_model(settings.model, settings.device)
        result = _denoise(frame, settings, model)
    out = _frame_result(frame, result.positions, raw_labels, settings, result.iterations, result.residual,
                        result.scale, result.status, FrameResult)
    out.rms_history = np.asarray(result.rms_history, dtype=np.float32)
    out.evaluator = result.evaluator
    out.scope = result.scope
    out.mobile_fraction = result.mobile_fraction
    return out


def _denoise(frame: Frame, settings: ProcessSettings, model):
    from trajden.model.coverage import model_types

    types = model_types(frame.elements, settings.species_map, len(frame.positions))
    kw = dict(k=settings.iterations, tol=settings.tol, scale=settings.scale,
              frames_per_worker=settings.frames_per_worker, options=settings.evaluator, pbc=_pbc(frame))
    blocks = settings.blocks
    if blocks is not None and not isinstance(blocks, str):
        blocks = tuple(blocks)
    if blocks is None or blocks == (1, 1, 1):
        return denoise(frame.positions, frame.cell, types, model, **kw)
    from trajden.cluster import _current_worker

    if _current_worker() is None:
        return denoise(frame.positions, frame.cell, types, model, blocks=blocks, **kw)
    from distributed import worker_client

    with worker_client() as client:  # this task leaves the worker's thread pool while its blocks run
        return denoise(frame.positions, frame.cell, types, model, blocks=blocks, client=client, **kw)


def _pbc(frame) -> np.ndarray:
    """The frame's periodic directions (all, for frames made without them)."""
    return np.asarray(getattr(frame, "pbc", (True, True, True)), dtype=bool)


def _frame_result(frame, positions, raw_labels, settings, iterations, residual, scale, status, FrameResult):
    labels = label_frame(positions, frame.cell, frame.origin, settings, frame.elements, _pbc(frame))
    out = {}
    for c in settings.classifiers:
        out[names.structure_var(c)] = labels[c]
        out[names.structure_var(c, raw=True)] = raw_labels[c]
    for key, var in ((names.VAR_ORDERING, names.ordering_var), (names.VAR_SUBLATTICE, names.sublattice_var)):
        if key in labels:
            out[var(False)] = labels[key]
            out[var(True)] = raw_labels[key]
    disp = np.sqrt(((positions - frame.positions) ** 2).sum(-1))
    return FrameResult(
        index=frame.index,
        positions=positions.astype(np.float32),
        displacement=disp.astype(np.float32),
        labels=out,
        cell=frame.cell,
        origin=frame.origin,
        pbc=_pbc(frame),
        iterations=int(iterations),
        residual=float(residual),
        scale=float(scale),
        status=int(status),
        positions_raw=frame.positions.astype(np.float32) if settings.keep_raw else None,
    )


def process_average_chunk(traj: Trajectory, pairs: list[tuple[int, int]], settings: ProcessSettings):
    """Vibration-averaging baseline: each frame becomes the centred time average of ``window`` frames.

    ``pairs`` are (store index, trajectory index); the window runs over trajectory frames.
    """
    from trajden.analysis import unwrap, vibration_average
    from trajden.store import FrameResult

    half = settings.window // 2
    tidx = [t for _, t in pairs]
    lo, hi = max(0, min(tidx) - half), min(len(traj), max(tidx) + half + 1)
    frames = [check_frame(traj.frame(i)) for i in range(lo, hi)]
    unwrapped = unwrap(np.stack([f.positions for f in frames]), np.stack([f.cell for f in frames]))
    averaged = vibration_average(unwrapped, settings.window)
    results = []
    for j, t in pairs:
        f = frames[t - lo]
        # keep each atom's periodic image of the raw frame, so displacements are the averaging's own motion
        pos = averaged[t - lo] - (unwrapped[t - lo] - f.positions)
        raw_labels = label_frame(f.positions, f.cell, f.origin, settings, f.elements, _pbc(f))
        r = _frame_result(f, pos, raw_labels, settings, 0, 0.0, math.nan, names.FRAME_STATUS_OK, FrameResult)
        r.index = j
        results.append(r)
    return results


def process_chunk(
    traj: Trajectory, pairs: list[tuple[int, int]], settings: ProcessSettings, store_path: str
) -> ChunkReport:
    """Process the frames of one store chunk and region-write them; failures are reported, not raised.

    ``pairs`` are (store index, trajectory index). A frame that raises is written with a status saying why
    (BAD_INPUT for an :class:`~trajden.errors.InputError`, FAILED otherwise), no data and not complete, and is
    named in the report; the other frames of the run go on.
    """
    from trajden.store import FrameResult, Store

    t0 = time.perf_counter()
    take()  # this task's stage times only
    failures: dict[int, str] = {}
    retryable: set[int] = set()
    results = []
    if settings.method != "average" and (settings.model == "auto" or settings.species_map is None):
        settings = resolve_model(traj.frame(pairs[0][1]), settings)
    if settings.method == "average":
        try:
            results = process_average_chunk(traj, pairs, settings)
        except Exception as exc:  # noqa: BLE001 - reported per frame to the driver
            failures = {j: _describe(exc) for j, _ in pairs}
            results = [FrameResult.failed(j, status=_failure_status(exc)) for j, _ in pairs]
            if _retryable(exc):
                retryable.update(failures)
    else:
        for j, t in pairs:
            try:
                with span("read"):
                    frame = traj.frame(t)
                r = process_frame(frame, settings)
                r.index = j
            except Exception as exc:  # noqa: BLE001 - reported per frame to the driver
                failures[j] = _describe(exc)
                r = FrameResult.failed(j, status=_failure_status(exc))
                if _retryable(exc):
                    retryable.add(j)
            results.append(r)
    with span("write"):
        Store.open(store_path, mode="r+").write_frames(results)
    return ChunkReport(
        frames=[r.index for r in results],
        n_atoms=traj.n_atoms,
        seconds=time.perf_counter() - t0,
        failures=failures,
        statuses={r.index: r.status for r in results},
        kept_raw={r.index: int(np.count_nonzero(r.scope)) for r in results if r.scope is not None},
        stages=take(),
        retryable=retryable,
    )


#: margin (angstrom) around the atoms of a frame without any cell: its non-periodic box (see check_frame)
FREE_BOX_MARGIN = 1.0


def check_frame(frame: Frame) -> Frame:
    """Raise InputError (one line naming file and frame) unless ``frame`` has a finite 3-D cell.

    The cell may be non-periodic along some directions (``frame.pbc``, e.g. LAMMPS ``pp pp ff``). A frame
    without any cell (all zeros and no periodic direction: an XYZ file or an MDAnalysis frame without a box, a
    molecule or cluster in vacuum) is given one here, in place: the atoms' bounding box widened by
    :data:`FREE_BOX_MARGIN` on every side, non-periodic in x, y and z (no image is ever made across it; it is
    what the store records and exports write). A flat cell would otherwise fail deep inside OVITO.
    """
    cell = np.asarray(frame.cell, dtype=np.float64)
    where = f"{frame.source}: frame {frame.index}"
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise InputError(f"{where}: the cell is not a finite 3x3 matrix")
    if not np.any(cell):
        if np.any(frame.pbc):
            raise InputError(f"{where}: no cell, but periodic boundaries declared")
        pos = np.asarray(frame.positions, dtype=np.float64)
        lo = pos.min(axis=0) - FREE_BOX_MARGIN if len(pos) else np.zeros(3)
        hi = pos.max(axis=0) + FREE_BOX_MARGIN if len(pos) else np.ones(3)
        frame.cell, frame.origin = np.diag(hi - lo), lo
        frame.pbc = np.zeros(3, dtype=bool)
        return frame
    volume = abs(float(np.linalg.det(cell)))
    if not volume > 1e-9 * max(1.0, float(np.prod(np.linalg.norm(cell, axis=1)))):
        raise InputError(f"{where}: zero-volume box (volume {volume:.3g}); trajden needs a periodic 3-D cell")
    return frame


def _check_types(first: Frame, model) -> None:
    """A model with several species cannot take more distinct atom types than it knows (one-line error)."""
    if model.num_types <= 1:
        return  # single-species models treat every atom alike (see trajden.denoise.map_types)
    kinds = np.unique(first.types)
    if len(kinds) > model.num_types:
        shown = ", ".join(str(k) for k in kinds[:10]) + (", ..." if len(kinds) > 10 else "")
        raise ModelError(f"{first.source}: {len(kinds)} atom types ({shown}) but model {model.path} knows "
                         f"{model.num_types} species ({', '.join(map(str, model.metadata['species']))})")


def _describe(exc: BaseException) -> str:
    """One line: a TrajdenError's message and hint; for anything else its type, message and where it rose."""
    if isinstance(exc, TrajdenError):
        return exc.one_line()
    msg = str(exc).splitlines()[0] if str(exc) else ""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {msg}{loc}"


def store_attrs(traj: Trajectory, settings: ProcessSettings, model_meta: tuple[str, str], argv=None,
                execution: tuple[str, str] | None = None) -> dict:
    """The store's root attributes; ``execution``: (mode, reason) of the run that creates the store."""
    name, sha = model_meta
    attrs = {
        names.ATTR_VERSION: __version__,
        names.ATTR_MODEL: name,
        names.ATTR_MODEL_SHA256: sha,
        names.ATTR_ITERATIONS: settings.iterations,
        names.ATTR_TOL: -1.0 if settings.tol is None else float(settings.tol),
        names.ATTR_CLASSIFIERS: ",".join(settings.classifiers),
        "ptm_rmsd_cutoff": settings.ptm_rmsd_cutoff,
        names.ATTR_INPUTS: list(traj.paths),
        names.ATTR_COMMAND: shlex.join(argv if argv is not None else sys.argv),
        names.ATTR_METHOD: settings.method,
        "scale_mode": str(settings.scale),
        names.ATTR_MODEL_SPECIES: json.dumps(settings.species_map or {}, sort_keys=True),
        names.ATTR_SUBLATTICE: settings.sublattice or "",
    }
    if settings.method == "denoise":
        attrs[names.ATTR_EVALUATOR_OPTIONS] = settings.evaluator.as_dict()
    if execution is not None:
        attrs[names.ATTR_EXECUTION], attrs[names.ATTR_EXECUTION_REASON] = execution
    return attrs


def prepare_store(traj: Trajectory, frames: list[int], store_path: str, settings: ProcessSettings, overwrite=False,
                  frames_per_chunk: int = 1, argv=None, execution: tuple[str, str] | None = None):
    """Open (resume) or create the store for ``frames`` of ``traj``."""
    from trajden.cluster import get_model
    from trajden.store import Store

    m = None
    # validate what the store is built from before touching the output path
    first = check_frame(traj.frame(frames[0]))
    if settings.method == "average":
        model_meta = ("vibration-average", "")
    elif settings.model == NO_MODEL or (settings.model == "auto" and settings.species_map is None
                                        and _no_model(first)):
        model_meta = (NO_MODEL, "")
    else:
        name = settings.model if settings.model != "auto" else _auto_name(first)
        m = get_model(name, "cpu")  # verified against its recorded sha256 when loaded, once per process
        model_meta = (m.name, m.sha256)
    if m is not None:
        _check_types(first, m)
    require_elements(first)  # several atom types and no elements: a one-line error, nothing written
    settings = resolve_model(first, settings)
    if settings.sublattice and (first.elements is None or settings.sublattice not in set(first.elements.tolist())):
        known = ", ".join(sorted(set(first.elements.tolist()))) if first.elements is not None else "none named"
        raise InputError(f"{first.source}: --sublattice {settings.sublattice}: no atom of that element "
                         f"(elements: {known})")
    times, steps = [], []
    for i in frames:
        t, s = traj.frame_time_step(i)
        times.append(t)
        steps.append(s)
    species = {str(t): e for t, e in sorted(first.type_elements.items())}
    run_config = settings.run_config() | {"frames": [int(f) for f in frames], "inputs": [str(p) for p in traj.paths],
                                          names.ATTR_SPECIES: species}
    store, created = Store.open_or_create(
        store_path,
        overwrite=overwrite,
        n_frames=len(frames),
        atom_ids=first.ids,
        types=first.types,
        times=np.asarray(times, dtype=np.float64),
        steps=np.asarray(steps, dtype=np.int64),
        classifiers=tuple(settings.classifiers),
        keep_raw=settings.keep_raw,
        attrs=store_attrs(traj, settings, model_meta, argv, execution),
        run_config=run_config,
        frames_per_chunk=frames_per_chunk,
        max_iterations=settings.iterations if settings.method == "denoise" else None,
        elements=first.elements,
        type_elements=first.type_elements,
        species_source=first.elements_origin,
        extra_labels=extra_label_vars(first.elements, settings),
    )
    return store, created


def _auto_name(first: Frame) -> str:
    from trajden.model.coverage import choose_model

    return choose_model(first.elements) or NO_MODEL


def _no_model(first: Frame) -> bool:
    return _auto_name(first) == NO_MODEL


@dataclass
class RunSummary:
    """What :func:`run` did."""

    store: str
    frames_total: int
    frames_done: int
    frames_skipped: int
    n_atoms: int
    seconds: float
    failures: dict[int, str]
    statuses: dict[int, int]
    kept_raw: dict[int, int] = field(default_factory=dict)
    #: summed over tasks: seconds per stage (:mod:`trajden.spans`), and ``"tasks"``: the tasks' own wall time
    stages: dict[str, float] = field(default_factory=dict)
    #: seconds spent before the frames started (store preparation: model file check, first frame, times)
    prepare_seconds: float = 0.0
    #: worker processes the frames ran on (1: serial)
    n_workers: int = 1
    retryable: set[int] = field(default_factory=set)


def run(
    traj: Trajectory,
    frames: list[int],
    store_path: str,
    settings: ProcessSettings,
    client=None,
    overwrite: bool = False,
    frames_per_chunk: int = 1,
    progress: bool = True,
    argv=None,
    execution: tuple[str, str] | None = None,
) -> RunSummary:
    """Process ``frames`` of ``traj`` into the store at ``store_path`` (resuming it if compatible).

    With ``client=None`` chunks run one after another in this process; with a ``distributed.Client`` each
    chunk is one task (retried on another worker if its worker dies). Completed frames are skipped.
    ``execution``: (mode, reason) recorded in a new store's attributes (default: ``serial`` or ``client``).
    """
    from tqdm.auto import tqdm

    settings = resolve_model(check_frame(traj.frame(frames[0])), settings)
    if execution is None:
        execution = ("serial", "no client given") if client is None else ("client", "a client was given")
    t_prepare = time.perf_counter()
    store, created = prepare_store(traj, frames, store_path, settings, overwrite, frames_per_chunk, argv,
                                   execution)
    t0 = time.perf_counter()
    failures: dict[int, str] = {}
    statuses: dict[int, int] = {}
    stages: dict[str, float] = {}
    retryable: set[int] = set()
    kept_raw: dict[int, int] = {}
    with store.lock():
        pending = store.pending_chunks(retry_failed=True)
        n_pending = sum(len(c) for c in pending)
        skipped = len(frames) - n_pending
        bar = tqdm(total=len(frames), initial=skipped, unit="frame", disable=not progress, dynamic_ncols=True,
                   desc="trajden", file=sys.stderr)
        jobs = [[(j, frames[j]) for j in chunk] for chunk in pending]
        n_workers = 1 if client is None else max(len(client.scheduler_info().get("workers", {})), 1)
        settings = replace(settings, frames_per_worker=math.ceil(n_pending / n_workers))
        done_atoms = 0

        def collect(report: ChunkReport):
            nonlocal done_atoms
            failures.update(report.failures)
            statuses.update(report.statuses)
            kept_raw.update(report.kept_raw)
            add(stages, report.stages)
            add(stages, {"tasks": report.seconds})
            retryable.update(report.retryable)
            done_atoms += report.n_atoms * len(report.frames)
            # atoms/s of this run so far and the time left at that rate (set before update() draws the bar)
            rate = done_atoms / max(time.perf_counter() - t0, 1e-9)
            left = (n_pending * traj.n_atoms - done_atoms) / rate if rate > 0 else math.inf
            bar.set_postfix_str(f"{rate:.3g} atoms/s, ETA {_clock(left)}", refresh=False)
            bar.update(len(report.frames))

        if client is None:
            for pairs in jobs:
                collect(process_chunk(traj, pairs, settings, str(store.path)))
        else:
            from distributed import as_completed

            futures = [
                client.submit(process_chunk, traj, pairs, settings, str(store.path), retries=2, pure=False,
                              key=f"trajden-chunk-{pairs[0][0]}-{time.time_ns()}")
                for pairs in jobs
            ]
            chunk_of = {fut.key: pairs for fut, pairs in zip(futures, jobs)}
            for fut in as_completed(futures):
                try:
                    report = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker, a failed write: report, go on
                    pairs = chunk_of[fut.key]
                    why = f"chunk task failed, frames not written: {_describe(exc)}"
                    report = ChunkReport(frames=[j for j, _ in pairs], n_atoms=traj.n_atoms, seconds=0.0,
                                         failures={j: why for j, _ in pairs},
                                         statuses={j: names.FRAME_STATUS_FAILED for j, _ in pairs},
                                         retryable={j for j, _ in pairs})
                collect(report)
        bar.close()
    return RunSummary(
        store=str(store.path), frames_total=len(frames), frames_done=n_pending, frames_skipped=skipped,
        n_atoms=traj.n_atoms, seconds=time.perf_counter() - t0, failures=failures, statuses=statuses,
        kept_raw=kept_raw,
        stages=stages, prepare_seconds=t0 - t_prepare, n_workers=n_workers,
        retryable=retryable,
    )


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``mm:ss``) for a progress bar; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    m, sec = divmod(int(round(max(seconds, 0.0))), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def summary_text(summary: RunSummary, method: str = "ptm") -> str:
    """A one-screen summary: frames, atoms, time, failures, phase fractions of the last frame."""
    import xarray as xr

    from trajden.analysis import phase_fractions

    lines = [
        f"store      {summary.store}",
        f"frames     {summary.frames_done} processed, {summary.frames_skipped} already complete,"
        f" {summary.frames_total} in the store",
        f"atoms      {summary.n_atoms} per frame",
        f"time       {summary.seconds:.1f} s"
        + (f" ({summary.frames_done / summary.seconds:.2f} frames/s,"
           f" {summary.frames_done * summary.n_atoms / summary.seconds:.3g} atoms/s)" if summary.frames_done else ""),
    ]
    ds = xr.open_zarr(summary.store, consolidated=False)
    lines += _convergence_lines(summary, ds)
    n_kept = sum(summary.kept_raw.values())
    if n_kept:
        frames_kept = sorted(j for j, v in summary.kept_raw.items() if v)
        why = ""
        if names.VAR_SCOPE in ds:  # why, by scope code, over the frames of this run that kept atoms raw
            codes = np.asarray(ds[names.VAR_SCOPE].isel({names.DIM_FRAME: frames_kept}).values).ravel()
            counts = np.bincount(codes[codes > 0].astype(np.int64), minlength=max(names.SCOPE_NAMES) + 1)
            why = " (" + ", ".join(f"{names.SCOPE_NAMES[c]} {int(n)}" for c, n in enumerate(counts) if n) + ")"
        lines.append(f"kept raw   {n_kept} atoms in {len(frames_kept)} frame(s){why}: the model cannot apply to "
                     f"them (per atom in '{names.VAR_SCOPE}')")
    for j, why in sorted(summary.failures.items())[:10]:
        lines.append(f"FAILED     frame {j}: {why}")
    species = json.loads(ds.attrs.get(names.ATTR_SPECIES, "{}"))
    if species:
        lines.insert(3, "species    " + ", ".join(f"type {t} {e}" for t, e in species.items())
                     + f" ({ds.attrs.get(names.ATTR_SPECIES_SOURCE, '')})")
    methods = [c for c in names.CLASSIFIERS if names.structure_var(c) in ds]
    ok = ds[names.VAR_COMPLETE].values & ~np.isin(ds[names.VAR_STATUS].values, names.FRAME_STATUS_NO_RESULT)
    complete = np.flatnonzero(ok)
    if len(complete) and methods:
        last = int(complete[-1])
        lines.append(f"last frame {last} (step {int(ds[names.COORD_STEP].values[last])}): phase fractions")
        for c in methods:
            for raw in (True, False):
                fr = phase_fractions(ds.isel({names.DIM_FRAME: [last]}), method=c, raw=raw).isel(
                    {names.DIM_FRAME: 0}).compute()
                parts = [f"{str(s)} {float(v) * 100:5.1f}%" for s, v in zip(fr["structure"].values, fr.values)
                         if float(v) >= 0.0005]
                lines.append(f"  {c:4s} {'raw' if raw else 'denoised':8s} " + "  ".join(parts))
    return "\n".join(lines)


def _convergence_lines(summary: RunSummary, ds) -> list[str]:
    """Why this run's frames stopped: converged, or k reached with atoms still moving (liquid, expected: how
    much of the frame moved is said, not counted as a problem), and the problems apart (diverged, failed)."""
    codes = summary.statuses
    if not codes:
        return []
    count = {c: sum(1 for v in codes.values() if v == c) for c in names.FRAME_STATUS_NAMES}
    at_k = [j for j, v in codes.items() if v == names.FRAME_STATUS_MAX_ITERATIONS]
    parts = [f"{count[names.FRAME_STATUS_CONVERGED]} converged"]
    if at_k:
        k = int(ds.attrs.get(names.ATTR_ITERATIONS, 0)) or "?"
        text = f"{len(at_k)} stopped at k = {k} with atoms still moving"
        if names.VAR_MOBILE_FRACTION in ds:
            mobile = ds[names.VAR_MOBILE_FRACTION].values[sorted(at_k)]
            mobile = mobile[np.isfinite(mobile)]
            if mobile.size:
                text += f" ({100 * mobile.min():.0f}-{100 * mobile.max():.0f} % of atoms"
                text += "; expected where liquid or disordered regions remain)"
        parts.append(text)
    lines = [] if ds.attrs.get(names.ATTR_METHOD) == "average" else ["denoising  " + ", ".join(parts)]
    problems = [f"{count[c]} {names.FRAME_STATUS_NAMES[c]}" for c in (names.FRAME_STATUS_DIVERGED,
                                                                     names.FRAME_STATUS_FAILED) if count[c]]
    if problems:
        lines.append("problems   " + ", ".join(problems)
                     + (" (diverged: raw positions kept)" if count[names.FRAME_STATUS_DIVERGED] else ""))
    return lines
