"""Iterative denoising (the paper's Algorithm 1): ``r <- r - Delta(r)`` until converged.

Lengths are divided by ``scale`` (the input's nearest-neighbour distance over the model's) before the model
sees them and multiplied back afterwards. With ``scale="auto"`` the input's nearest-neighbour distance is
estimated from g(r) (:mod:`trajden.scale`), and checked once more on the denoised positions, whose peaks are
sharp (in the volume the raw frame occupies): if the two disagree by more than ``refine_tol`` the frame is
denoised again with the refined value.

The atoms are put in Morton order of space for the computation (:func:`trajden.neighbors.spatial_order`)
and the result back into the input's order. Neighbour lists are built with a skin and reused across
iterations until an atom has moved more than half of it. A frame whose RMS update grows for several
iterations, becomes non-finite or makes atoms overlap is flagged as diverged
(:data:`trajden.names.FRAME_STATUS_DIVERGED`) and its raw positions are returned.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch

from trajden import decompose, names
from trajden.decompose import evaluator
from trajden.errors import InputError
from trajden.model.evaluate import min_edge_length, with_neighbours
from trajden.model.options import EvaluatorOptions
from trajden.model.package import LoadedModel
from trajden.neighbors import build_graph, spatial_order
from trajden.scale import estimate_nn_distance, occupied_volume
from trajden.scope import MoveGuard, SurfaceFinder
from trajden.spans import span

#: default maximum number of iterations (the paper uses 8)
DEFAULT_ITERATIONS = 8
#: default tolerance on the RMS update of one iteration, in nearest-neighbour distances
DEFAULT_TOL_NN = 0.005
#: edges per evaluation block on CPU and on GPU (see ``block_edges``)
CPU_BLOCK_EDGES = 4096
GPU_BLOCK_EDGES = 1 << 22
#: an atom counts as still moving (``DenoiseResult.mobile_fraction``) when its last update exceeded this many
#: tolerances: at convergence (RMS update just below ``tol``) about a quarter of a hot crystal's atoms are
#: still above ``tol`` itself but none above twice it (tests/data/md/cu_fcc_hot.dump: 23 % and 0 %), while
#: a melt stopped at k = 8 has most above it (cu_liquid.dump: 68 %; the grain boundary + liquid: 26 %)
MOBILE_TOL_FACTOR = 2.0
#: with ``blocks="auto"``, frames are split into blocks of at most about this many owned atoms
AUTO_BLOCK_ATOMS = 250_000


@dataclass
class DenoiseResult:
    """Outcome of :func:`denoise` for one frame (lengths in the input's unit)."""

    positions: np.ndarray
    iterations: int
    rms_history: list[float] = field(default_factory=list)
    scale: float = 1.0
    status: int = names.FRAME_STATUS_CONVERGED
    #: fraction of atoms whose last update exceeded :data:`MOBILE_TOL_FACTOR` tolerances (NaN with ``tol=0``):
    #: what is still moving when a frame stops at ``k`` (:data:`trajden.names.FRAME_STATUS_MAX_ITERATIONS`)
    mobile_fraction: float = math.nan
    #: :data:`trajden.names.EVALUATOR_COMPILED` if any evaluation ran compiled code, else ``EVALUATOR_EAGER``
    evaluator: int = names.EVALUATOR_EAGER
    #: (N,) int8 per-atom :data:`trajden.names.SCOPE_NAMES` code: 0 denoised, else why the atom was left raw
    scope: np.ndarray | None = None

    @classmethod
    def left_raw(cls, positions: np.ndarray, scope_code: int) -> DenoiseResult:
        """A frame the model does not apply to: its raw positions, status ``out_of_scope``, every atom flagged
        ``scope_code`` (:data:`trajden.names.SCOPE_NAMES`)."""
        positions = np.array(positions, dtype=np.float64)
        return cls(positions, 0, [], math.nan, names.FRAME_STATUS_OUT_OF_SCOPE,
                   scope=np.full(len(positions), scope_code, dtype=np.int8))

    @property
    def n_kept_raw(self) -> int:
        """Atoms left at their raw positions because the model cannot apply to them."""
        return 0 if self.scope is None else int(np.count_nonzero(self.scope))

    @property
    def residual(self) -> float:
        """RMS update of the last iteration (0 if none ran)."""
        return self.rms_history[-1] if self.rms_history else 0.0


def map_types(types: np.ndarray, num_types: int) -> np.ndarray:
    """Model species indices (N,) int64 of ``types``.

    A one-species model treats every atom alike (all 0, whatever the labels). For a model with several
    species ``types`` must already be its species indices ``0..num_types-1``
    (:func:`trajden.model.coverage.model_types` maps elements onto them).
    """
    types = np.asarray(types)
    if num_types == 1:
        return np.zeros(len(types), dtype=np.int64)
    if types.dtype.kind not in "iu" or (len(types) and (types.min() < 0 or types.max() >= num_types)):
        raise ValueError(f"a model with {num_types} species needs species indices 0..{num_types - 1} "
                         "(trajden.model.coverage.model_types), not the input's own type labels")
    return types.astype(np.int64)


class _Whole:
    """Evaluate the whole frame at once (memory bounded by :class:`BlockedEvaluator`'s edge blocks)."""

    def __init__(self, model: LoadedModel, cell: np.ndarray, types: torch.Tensor, skin: float, block_edges: int,
                 frames_per_worker: int = 1, options: EvaluatorOptions | None = None, pbc=None):
        self.model, self.cell, self.types, self.skin, self.pbc = model, cell, types, skin, pbc
        with span("start-up"):  # cached per model and set-up: compiles (if asked) only the first time
            self.evaluate = evaluator(model, block_edges,
                                      decompose.compile_request(len(types), model.device, frames_per_worker), options)
        self.graph = None
        self.compiled = bool(self.evaluate.compiled)  # whether an evaluation ran compiled code

    def rebuild(self, ref: torch.Tensor) -> None:
        # build_graph takes the tensor where it is: on a GPU the list is built there (no host round trip)
        self.graph = None  # the old list goes first: two lists at once were the frame's peak memory
        self.graph = build_graph(ref, self.cell, self.model.cutoff, self.skin, device=self.model.device, sort=True,
                                 pbc=self.pbc)

    def step(self, x: torch.Tensor, moving: torch.Tensor | None) -> torch.Tensor:
        # atoms that moved, and their neighbours, are recomputed; the rest keep their positions
        active = None if moving is None else with_neighbours(moving, self.graph.src, self.graph.dst)
        return self.evaluate(x, self.graph, self.types, active)

    def min_pair_distance(self, x: torch.Tensor, held: torch.Tensor | None = None) -> float:
        return min_edge_length(self.graph, x, held)


class _Blocks:
    """Evaluate the frame as spatial blocks with halos (:mod:`trajden.decompose`), serially or on a Dask
    client; the owned atoms' updates equal :class:`_Whole`'s."""

    def __init__(self, model: LoadedModel, cell: np.ndarray, types: torch.Tensor, skin: float, block_edges: int,
                 counts, client=None, options: EvaluatorOptions | None = None):
        self.model, self.cell, self.skin, self.block_edges, self.client = model, cell, skin, block_edges, client
        self.options = options
        self.types = types.cpu().numpy()
        self.halo = decompose.halo_width(model, skin)
        self.counts = decompose.check_counts(counts, cell, self.halo)
        self.plan = None
        self.ref = None
        self.token = uuid.uuid4().hex
        self.compiled = False  # whether a block's evaluation ran compiled code (each worker decides)
        self.spec = (model.path, "auto")  # how a Dask worker gets the model (its own device)
        self.workers = None  # the client's workers when the frame started: block i prefers workers[i % n]

    def rebuild(self, ref: torch.Tensor) -> None:
        self.ref = ref.double().cpu().numpy()
        version = 0 if self.plan is None else self.plan.version + 1
        self.plan = decompose.plan(self.ref, self.cell, self.counts, self.halo, version)

    def step(self, x: torch.Tensor, moving: torch.Tensor | None) -> torch.Tensor:
        xs = x.cpu().numpy()
        mv = None if moving is None else moving.cpu().numpy()
        jobs = []
        for b in self.plan.blocks:
            jobs.append((
                (xs[b.atoms] + b.shift).astype(np.float32),
                self.ref[b.atoms] + b.shift,
                self.types[b.atoms],
                b.cell,
                b.n_owned,
                None if mv is None else mv[b.atoms],
                self.skin,
                self.block_edges,
                (self.token, self.plan.version, b.index),
                self.options,
            ))
        if self.client is None:
            results = [decompose.block_update(self.model, *job) for job in jobs]
        else:
            if self.workers is None:
                self.workers = sorted(self.client.scheduler_info().get("workers", {}))
            # each block goes back to the worker that has its neighbour list cached (another one if it left)
            futures = [self.client.submit(decompose.block_update, self.spec, *job, pure=False,
                                          workers=self._worker(i), allow_other_workers=True)
                       for i, job in enumerate(jobs)]
            results = self.client.gather(futures)
        delta = np.zeros_like(xs)
        for b, (r, compiled) in zip(self.plan.blocks, results):
            delta[b.atoms[: b.n_owned]] = r
            self.compiled |= compiled
        return torch.as_tensor(delta, device=x.device)

    def _worker(self, i: int) -> list | None:
        return [self.workers[i % len(self.workers)]] if self.workers else None

    def min_pair_distance(self, x: torch.Tensor, held: torch.Tensor | None = None) -> float:
        return min_edge_length(build_graph(x.double().cpu().numpy(), self.cell, 0.5), x.cpu(),
                               None if held is None else held.cpu())


@torch.no_grad()
def _iterate(
    backend,
    x0: np.ndarray,
    k: int,
    tol: float,
    skin: float,
    active_tol: float,
    device,
    fixed: np.ndarray | None = None,
) -> tuple[np.ndarray, list[float], int, float]:
    """Run Algorithm 1 in model units. Returns (positions, rms per iteration, status, mobile fraction).

    Each atom stops on its own: an atom whose last update was below ``active_tol`` and whose neighbours' were
    too is not recomputed (its update is zero) until a neighbour moves again. The frame stops when the RMS
    update falls below ``tol``; a frame that reaches ``k`` above it (liquid atoms keep moving) is
    :data:`~trajden.names.FRAME_STATUS_MAX_ITERATIONS`, with the fraction of atoms whose last update was
    above :data:`MOBILE_TOL_FACTOR` ``* tol``. Atoms where ``fixed`` (N,) is True are never moved (they stay in
    the graph as neighbours).
    """
    x = torch.as_tensor(x0, dtype=torch.float32, device=device)
    hold = None if fixed is None or not np.any(fixed) else torch.as_tensor(np.asarray(fixed), device=device)
    ref = x.clone()
    with span("graph"):
        backend.rebuild(ref)
    history: list[float] = []
    growing = 0
    status = names.FRAME_STATUS_CONVERGED
    moving = None
    step = None
    for _ in range(k):
        # Verlet rule: the list (and the blocks' halos) stay exact while no atom moved more than skin / 2
        if float(((x - ref) ** 2).sum(-1).max()) > (0.5 * skin) ** 2:
            ref = x.clone()
            with span("graph"):
                backend.rebuild(ref)
        with span("model"):
            delta = backend.step(x, moving)
        if hold is not None:
            delta = delta.masked_fill(hold[:, None], 0.0)
        x = x - delta
        step = (delta * delta).sum(-1)
        rms = float(torch.sqrt(step.mean()))
        history.append(rms)
        if not math.isfinite(rms) or rms > 0.5:
            status = names.FRAME_STATUS_DIVERGED
            break
        growing = growing + 1 if len(history) > 1 and rms > history[-2] * 1.05 else 0
        if growing >= 3:
            status = names.FRAME_STATUS_DIVERGED
            break
        if rms < tol:
            break
        if active_tol > 0:
            moving = step > active_tol**2
    mobile = math.nan
    if step is not None and tol > 0:
        mobile = float((step > (MOBILE_TOL_FACTOR * tol) ** 2).float().mean())
    if status == names.FRAME_STATUS_CONVERGED:
        with span("graph"):
            # two atoms held at their input positions (a free surface) may be as close as the input had them
            overlap = backend.min_pair_distance(x, hold) < 0.5
        if overlap:
            status = names.FRAME_STATUS_DIVERGED
        elif history and history[-1] >= tol and len(history) == k and tol > 0:
            status = names.FRAME_STATUS_MAX_ITERATIONS
    return x.double().cpu().numpy(), history, status, mobile


def denoise(
    positions: np.ndarray,
    cell: np.ndarray,
    types: np.ndarray | None,
    model: LoadedModel,
    k: int = DEFAULT_ITERATIONS,
    tol: float | None = None,
    scale: float | str = "auto",
    skin: float = 0.2,
    refine_tol: float = 0.02,
    active_tol: float | None = None,
    block_edges: int | None = None,
    blocks=None,
    client=None,
    frames_per_worker: int = 1,
    guard: MoveGuard | bool = True,
    options: EvaluatorOptions | None = None,
    pbc=None,
    surfaces: SurfaceFinder | bool = True,
) -> DenoiseResult:
    """Denoise one frame.

    Parameters
    ----------
    positions : (N, 3) Cartesian positions (any length unit, e.g. angstrom)
    cell : (3, 3) cell, lattice vectors as rows
    types : (N,) model species indices (:func:`map_types`; None: all species 0)
    model : a loaded trajden model (:func:`trajden.model.package.load_model`)
    k : maximum number of iterations
    tol : stop when the RMS update of an iteration falls below this (input length unit); ``None``:
        :data:`DEFAULT_TOL_NN` nearest-neighbour distances; ``0``: always run ``k`` iterations
    scale : ``"auto"`` or the input's nearest-neighbour distance (input unit); lengths are divided by
        ``scale / model.nn_distance`` before the model sees them
    skin : neighbour-list skin in model units (nearest-neighbour distances)
    refine_tol : with ``scale="auto"``, relative disagreement between the raw and the denoised estimate
        above which the frame is denoised again with the denoised estimate
    active_tol : atoms whose last update was below this (model units) and whose neighbours' were too are not
        recomputed; ``None``: the tolerance itself (0 when ``tol`` is 0: every atom, every iteration)
    block_edges : edges evaluated at once (bounds memory; results do not depend on it); ``None``:
        :data:`CPU_BLOCK_EDGES` on CPU (cache-sized blocks are fastest there, with one thread per worker),
        :data:`GPU_BLOCK_EDGES` on a GPU
        (few large blocks: each block costs a host synchronisation)
    blocks : ``None`` (the whole frame at once), ``(nx, ny, nz)`` spatial blocks with halos
        (:mod:`trajden.decompose`; same result to float32 rounding), or ``"auto"``
        (:data:`AUTO_BLOCK_ATOMS` owned atoms per block at most)
    client : a ``distributed.Client`` to evaluate the blocks as parallel tasks (``None``: one after another
        in this process)
    frames_per_worker : how many frames this process denoises in the run: on a CPU, a long run of smaller
        frames asks for the compiled layers too (:func:`trajden.decompose.compile_request`; the result is the
        same to float32 rounding)
    guard : a :class:`trajden.scope.MoveGuard` (``True``: the default one; ``False``: none) that puts atoms
        back whose neighbourhood moved further than any thermal crystal the model was trained on, and leaves
        the frame raw when most atoms did (status :data:`trajden.names.FRAME_STATUS_OUT_OF_SCOPE`). With
        ``scale="auto"`` a frame without a length scale (too few pairs: a dilute gas, molecules in vacuum)
        is left raw with that status too, not an error.
    options : the evaluator's switches (:class:`~trajden.model.options.EvaluatorOptions`: compile, fused
        tensor products, compiled aggregate); ``None``: ``trajden.evaluator.*`` from trajden's configuration
        (:func:`trajden.cluster.evaluator_options`)
    pbc : periodic along each cell vector (three booleans; None: all). No neighbour images are made across
        a non-periodic direction (free surfaces of slabs, particles, droplets); ``blocks`` need all periodic.
    surfaces : a :class:`trajden.scope.SurfaceFinder` (``True``: the default one; ``False``: none): atoms at a
        free surface (in frames with vacuum: slabs, particles, voids) are held at their raw positions, as
        neighbours of the others, and flagged :data:`trajden.names.SCOPE_SURFACE`

    Returns
    -------
    DenoiseResult
        positions in the input unit, number of iterations, RMS update per iteration (input unit), the scale
        used (input nn distance), why it stopped (:data:`trajden.names.FRAME_STATUS_NAMES`), the fraction
        of atoms still moving then, and the per-atom scope codes.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if options is None:
        from trajden.cluster import evaluator_options

        options = evaluator_options()
    if block_edges is None:
        # fixed per device type, not per thread count: the same blocks give bit-identical results whatever the
        # number of threads (a serial run and Dask workers agree exactly)
        block_edges = GPU_BLOCK_EDGES if torch.device(model.device).type != "cpu" else CPU_BLOCK_EDGES
    if types is None:
        types = np.zeros(len(positions), dtype=np.int64)
    # atoms in Morton order of space for the whole computation (cache-friendly gathers, faster cell lists);
    # the result is put back into the input's order
    with span("graph"):
        order = spatial_order(positions, cell)
    positions = positions[order]
    t = torch.as_tensor(map_types(np.asarray(types)[order], model.num_types), device=model.device)
    auto = isinstance(scale, str)
    occupied = None  # the raw frame's (volume, empty fraction), computed once (trajden.scale.occupied_volume)
    if auto:
        if scale != "auto":
            raise ValueError(f"scale must be 'auto' or a number, not {scale!r}")
        try:
            with span("scale"):
                occupied = occupied_volume(positions, cell, pbc)
                nn = estimate_nn_distance(positions, cell, pbc=pbc, volume=occupied[0])
        except ValueError:
            if not guard:
                raise
            # nothing lattice-like to denoise (a dilute gas, molecules in vacuum): left where it is, flagged
            return DenoiseResult.left_raw(positions[np.argsort(order)], names.SCOPE_NO_SCALE)
    else:
        nn = float(scale)
        if not nn > 0:
            raise ValueError(f"scale must be positive, not {scale}")
    fixed = None
    if surfaces:
        with span("scale"):
            fixed = (SurfaceFinder() if surfaces is True else surfaces).compute(
                positions, cell, nn, pbc, empty_fraction=None if occupied is None else occupied[1])
    for attempt in range(2):
        factor = nn / model.nn_distance
        tol_model = DEFAULT_TOL_NN if tol is None else float(tol) / factor
        act = tol_model if active_tol is None else float(active_tol)
        cell_m = cell / factor
        if blocks is None:
            backend = _Whole(model, cell_m, t, skin, block_edges, frames_per_worker, options, pbc)
        else:
            if pbc is not None and not np.all(pbc):
                raise InputError("spatial blocks (--blocks) need periodic boundaries in x, y and z",
                                 hint="process non-periodic frames without --blocks")
            halo = decompose.halo_width(model, skin)
            counts = (decompose.auto_counts(len(positions), cell_m, halo, AUTO_BLOCK_ATOMS)
                      if isinstance(blocks, str) else blocks)
            backend = (_Whole(model, cell_m, t, skin, block_edges, frames_per_worker, options, pbc)
                       if tuple(counts) == (1, 1, 1) and client is None
                       else _Blocks(model, cell_m, t, skin, block_edges, counts, client, options))
        x, history, status, mobile = _iterate(backend, positions / factor, k, tol_model, skin, act, model.device,
                                              fixed)
        if not auto or attempt == 1 or status == names.FRAME_STATUS_DIVERGED:
            break
        try:
            # the raw frame's occupied volume stands for the denoised one's: it only sets g(r)'s window and
            # ideal-gas reference, and denoising moves atoms by a fraction of nn within the same cell. A frame
            # that fills its cell has the cell's volume either way; a slab or a particle keeps its region (its
            # surface atoms are held). On a hot fcc slab and particle in vacuum the refined nn agreed with the
            # one from the denoised frame's own volume to 4e-8 relative (3e-5 with surfaces=False): far below
            # refine_tol
            with span("scale"):
                refined = estimate_nn_distance(x * factor, cell, pbc=pbc, volume=occupied[0])
        except ValueError:  # the denoised frame has no clear first peak either: keep the raw frame's scale
            break
        if abs(refined / nn - 1.0) <= refine_tol:
            break
        nn = refined
    result = positions if status == names.FRAME_STATUS_DIVERGED else x * factor
    if fixed is not None and status != names.FRAME_STATUS_DIVERGED:
        result[fixed] = positions[fixed]  # exactly (not through float32)
    scope = np.zeros(len(positions), dtype=np.int8)
    if guard and status != names.FRAME_STATUS_DIVERGED:
        checked = (MoveGuard() if guard is True else guard).compute(
            positions, result, cell, nn, model.sigma_max, pbc)
        result, scope = checked.positions, checked.flags
        if checked.frame_left_raw:
            status = names.FRAME_STATUS_OUT_OF_SCOPE
    if fixed is not None and status != names.FRAME_STATUS_DIVERGED and not np.all(scope == names.SCOPE_FRAME):
        scope[fixed] = names.SCOPE_SURFACE
    out = np.empty_like(positions)
    out[order] = result
    flags = np.empty_like(scope)
    flags[order] = scope
    code = names.EVALUATOR_COMPILED if backend.compiled else names.EVALUATOR_EAGER
    return DenoiseResult(out, len(history), [h * factor for h in history], nn, status, mobile, code, flags)
