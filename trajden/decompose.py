"""Spatial decomposition of one frame: blocks with halos, evaluated serially or as Dask tasks.

A frame too large for one worker (or one GPU's memory) is split into ``nx x ny x nz`` blocks of its periodic
cell (in fractional coordinates). Each block *owns* the atoms whose reference positions fall inside it and
carries a *halo*: every atom within ``halo`` of the block, as the periodic image nearest the block. The model's
output for an atom depends only on atoms within ``n_layers`` hops of ``cutoff`` (its receptive field), so with

    halo >= n_layers * cutoff + skin

the owned atoms' updates computed on the block alone equal those of the whole frame, for as long as no atom
has moved more than ``skin / 2`` from the reference positions (the same rule that keeps the neighbour list
valid). Halos are refreshed every iteration: the driver holds the frame's positions, sends each block its
owned and halo atoms' current positions and receives the owned atoms' updates (a few MB per 10^6 atoms).

Along a split axis the block and its two halos must fit in one period (``1/n + 2 halo/h <= 1``, ``h`` the
cell's height along that axis): a block's atoms then appear once each, and the split axis is made
non-periodic by stretching that cell vector (x3) for the block's neighbour list. Unsplit axes stay periodic.

Results equal the undivided evaluation to float32 rounding (per-atom sums run over the same neighbours in a
different order); :func:`trajden.denoise.denoise` uses the same convergence, active-set and divergence rules
either way.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from trajden.model.evaluate import BlockedEvaluator, with_neighbours
from trajden.model.options import EvaluatorOptions
from trajden.neighbors import build_graph

#: at most this factor: a split axis' cell vector in a block's own cell (see :func:`plan`)
_STRETCH = 3.0


@dataclass
class Block:
    """One block of a :class:`Plan`: global indices of its atoms (owned first), their image shifts."""

    index: tuple[int, int, int]
    atoms: np.ndarray  # (n_local,) global atom indices; the first n_owned are owned
    n_owned: int
    shift: np.ndarray  # (n_local, 3) Cartesian image shift added to the global positions
    cell: np.ndarray  # (3, 3) the block's neighbour-list cell (split axes stretched)


@dataclass
class Plan:
    """The blocks of one frame for one set of reference positions."""

    counts: tuple[int, int, int]
    halo: float
    blocks: list[Block]
    version: int = 0



def heights(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell (rows are lattice vectors)."""
    cell = np.asarray(cell, dtype=np.float64)
    vol = abs(float(np.linalg.det(cell)))
    return np.array([vol / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)])


def check_counts(counts, cell: np.ndarray, halo: float) -> tuple[int, int, int]:
    """Validate block counts for ``cell`` and ``halo``; raise ``ValueError`` naming the axis that is too thin."""
    counts = tuple(int(c) for c in counts)
    if len(counts) != 3 or min(counts) < 1:
        raise ValueError(f"blocks must be three positive integers, not {counts}")
    h = heights(cell)
    for a, n in enumerate(counts):
        if n > 1 and 1.0 / n + 2.0 * halo / h[a] > 1.0:
            need = 2.0 * halo / (1.0 - 1.0 / n)
            raise ValueError(
                f"{n} blocks along axis {'xyz'[a]}: the cell is {h[a]:.3g} thick there, a block plus two halos of "
                f"{halo:.3g} needs at least {need:.3g}; use fewer blocks along that axis"
            )
    return counts


def auto_counts(n_atoms: int, cell: np.ndarray, halo: float, atoms_per_block: int) -> tuple[int, int, int]:
    """Block counts giving at most about ``atoms_per_block`` owned atoms per block (fewest blocks, then
    least halo), or ``(1, 1, 1)`` when the frame is small enough or too thin to split."""
    want = max(1, math.ceil(n_atoms / max(int(atoms_per_block), 1)))
    if want == 1:
        return (1, 1, 1)
    h = heights(cell)
    best = None
    top = [1 + int(max(0, h[a] - 2 * halo) // max(halo, 1e-9)) for a in range(3)]  # rough upper bounds
    for nx in range(1, max(top[0], 1) + 1):
        for ny in range(1, max(top[1], 1) + 1):
            for nz in range(1, max(top[2], 1) + 1):
                c = (nx, ny, nz)
                try:
                    check_counts(c, cell, halo)
                except ValueError:
                    continue
                nb = nx * ny * nz
                # local volume (owned + halo) relative to the owned volume, summed over blocks
                overhead = np.prod([1.0 + (2.0 * halo * n / h[a] if n > 1 else 0.0) for a, n in enumerate(c)])
                key = (nb < want, nb, overhead)
                if best is None or key < best[0]:
                    best = (key, c)
    return best[1] if best is not None else (1, 1, 1)


def plan(ref: np.ndarray, cell: np.ndarray, counts, halo: float, version: int = 0) -> Plan:
    """Split atoms at reference positions ``ref`` into ``counts`` blocks with halos of width ``halo``."""
    cell = np.asarray(cell, dtype=np.float64)
    counts = check_counts(counts, cell, halo)
    frac = np.asarray(ref, dtype=np.float64) @ np.linalg.inv(cell)
    wrap = np.floor(frac)  # positions need not be wrapped into the cell: images are relative to them
    frac -= wrap
    wrap[frac >= 1.0] += 1.0
    frac[frac >= 1.0] = 0.0
    margin = halo / heights(cell)
    cells = [np.minimum((frac[:, a] * counts[a]).astype(np.int64), counts[a] - 1) for a in range(3)]
    # a block's own cell: along a split axis just long enough (its slab, two halos and one more) that the
    # block never meets its own periodic image within a halo, so no pair is found twice. The neighbour
    # list's bins then cover the block, not 3x the frame (a 3x-stretched cell made vesin 3x slower).
    local_cell = cell.copy()
    for a in range(3):
        if counts[a] > 1:
            local_cell[a] *= min(_STRETCH, 1.0 / counts[a] + 3.0 * margin[a] + 1e-6)
    blocks = []
    for bx in range(counts[0]):
        for by in range(counts[1]):
            for bz in range(counts[2]):
                b = (bx, by, bz)
                inside = np.ones(len(frac), dtype=bool)
                img = np.zeros((len(frac), 3), dtype=np.float64)
                for a in range(3):
                    if counts[a] == 1:
                        continue
                    lo = b[a] / counts[a] - margin[a]
                    hi = (b[a] + 1) / counts[a] + margin[a]
                    t = np.ceil(lo - frac[:, a])  # smallest image with frac + t >= lo
                    inside &= frac[:, a] + t < hi
                    img[:, a] = t - wrap[:, a]
                owned = (cells[0] == bx) & (cells[1] == by) & (cells[2] == bz)
                halo_atoms = np.flatnonzero(inside & ~owned)
                own_atoms = np.flatnonzero(owned)
                atoms = np.concatenate([own_atoms, halo_atoms])
                blocks.append(Block(b, atoms, len(own_atoms), img[atoms] @ cell, local_cell))
    return Plan(counts, float(halo), blocks, version)


_GRAPHS: OrderedDict[tuple, object] = OrderedDict()
#: neighbour graphs kept per process (a block's graph is reused while its plan is unchanged), up to this many
#: edges in all (about 770 MB of edge indices: the five 250k-atom blocks of a 1e6-atom frame). Graphs of
#: other frames go first (least recently used); a graph of the current plan that does not fit is not kept, so
#: that blocks visited in turn keep hitting the ones that are (an LRU cache would miss every time).
GRAPH_CACHE_EDGES = 48_000_000


_GRAPHS_LOCK = threading.Lock()


def _graph(key: tuple | None, ref: np.ndarray, cell: np.ndarray, cutoff: float, skin: float, device):
    """The neighbour graph of a block at ``ref``, cached under ``key = (frame token, plan version, block
    index)``."""
    with _GRAPHS_LOCK:  # a Dask worker may run several blocks at once
        if key and key in _GRAPHS:
            _GRAPHS.move_to_end(key)
            return _GRAPHS[key]
        if key:  # this block's lists of earlier plans are stale: freed before the new one is built
            for old in [k for k in _GRAPHS if k[0] == key[0] and k[2:] == key[2:] and k[1] != key[1]]:
                del _GRAPHS[old]
    graph = build_graph(ref, cell, cutoff, skin, device=device, sort=True)
    if key:
        with _GRAPHS_LOCK:
            used = sum(g.src.numel() for g in _GRAPHS.values())
            for old in [k for k in _GRAPHS if k[:2] != key[:2]]:  # other frames' or plans' graphs, oldest first
                if used + graph.src.numel() <= GRAPH_CACHE_EDGES:
                    break
                used -= _GRAPHS.pop(old).src.numel()
            if used + graph.src.numel() <= GRAPH_CACHE_EDGES:
                _GRAPHS[key] = graph
    return graph


def block_update(
    model,
    x_local: np.ndarray,
    ref_local: np.ndarray,
    types_local: np.ndarray,
    cell: np.ndarray,
    n_owned: int,
    moving_local: np.ndarray | None,
    skin: float,
    block_edges: int,
    key: tuple = (),
    options: EvaluatorOptions | None = None,
) -> tuple[np.ndarray, bool]:
    """Updates ``Delta`` (n_owned, 3) of one block's owned atoms (model units), and whether the evaluator
    ran compiled code (it decides per process and block size: :func:`compile_request`).

    ``model``: a :class:`~trajden.model.package.LoadedModel`, or ``(name_or_path, device)`` to get it on a
    Dask worker (:func:`trajden.cluster.get_model`). ``moving_local``: which local atoms moved more than the
    active-set tolerance in the previous iteration (``None``: all owned atoms are recomputed); an owned atom is
    recomputed when it or a neighbour moved, as in the undivided run. ``options``: the evaluator's switches
    (``None``: the packaged defaults).
    """
    if isinstance(model, tuple):
        from trajden.cluster import get_model

        model = get_model(*model)
    device = model.device
    ref_local = np.ascontiguousarray(ref_local, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    graph = _graph(key or None, ref_local, cell, model.cutoff, skin, device)
    with torch.no_grad():
        x = torch.as_tensor(x_local, dtype=torch.float32, device=device)
        types = torch.as_tensor(types_local, dtype=torch.long, device=device)
        owned = torch.zeros(len(x_local), dtype=torch.bool, device=device)
        owned[:n_owned] = True
        if moving_local is None:
            active = owned
        else:
            moving = torch.as_tensor(moving_local, dtype=torch.bool, device=device)
            active = with_neighbours(moving, graph.src, graph.dst) & owned
        evaluate = evaluator(model, block_edges, compile_request(len(x_local), device), options)
        delta = evaluate(x, graph, types, active)
    return delta[:n_owned].cpu().numpy(), bool(evaluate.compiled)


def evaluator(model, block_edges: int, compile: bool | str | None = None,
              options: EvaluatorOptions | None = None) -> BlockedEvaluator:
    """The model's cached :class:`BlockedEvaluator` for ``block_edges``, with fused tensor products
    (:mod:`trajden.model.fused`) unless ``options.fused`` is false.

    ``compile``: what the caller asks for a frame: ``torch.compile`` the layers (a CPU's) or the tensor-product
    sums (a GPU's); ``None``: on CUDA only; ``"auto"``: compiled where that measures faster than eager on this
    machine (:func:`trajden.model.evaluate.compiled_is_faster`; what :func:`compile_request` asks for on large
    CPU frames). ``options`` (:class:`~trajden.model.options.EvaluatorOptions`, ``None``: the packaged
    defaults) overrides it: ``compile="off"`` never, ``"on"`` always; ``aggregate`` picks what is compiled
    (see :func:`trajden.model.evaluate.compiled_names`).
    """
    options = EvaluatorOptions() if options is None else options
    from trajden.model import aot

    cpu = torch.device(model.device).type == "cpu"
    directory = aot.cache_dir(options.aot_cache) if cpu and options.fused else None
    # packages are built only where compiled code is forced (``compile="on"``, ``trajden models --compile``:
    # about a minute per model, once per machine); "auto" loads them when they are there and otherwise
    # compiles large runs in-process with torch.compile, as before (a run never waits for a build it did not
    # ask for)
    request = options.compile_arg(compile)
    with _EVALUATOR_LOCK:  # e3nn builds modules with torch.fx tracing, which is not thread-safe
        if request is None and options.compile == "auto" and directory is not None:
            # the model's layers are already compiled ahead of time on this machine: no compile penalty, so
            # frames of any size run them (compiled_is_faster still has the last word)
            base = _evaluator(model, block_edges, True, None, options.forced_aggregate)
            if base.tensor_products and base.radial_tables and aot.cached(
                    base.tensor_products, base.radial_tables, base.inv_sqrt_nb, model.sha256, directory):
                request = "auto"
        return _evaluator(model, block_edges, options.fused, request, options.forced_aggregate, directory)


#: CPU frames (or spatial blocks) of at least this many atoms ask for compiled code (``compile="auto"``) when
#: the model's layers are not yet compiled ahead of time on this machine (:mod:`trajden.model.aot`; once they
#: are, every frame runs them, see :func:`evaluator`).
#: Compiling takes 10-45 s once per process (about 20-25 s per worker on a cold inductor cache, 2 cores), which
#: such frames repay within an iteration or two.
CPU_COMPILE_MIN_ATOMS = 100_000
#: Smaller frames gain as much per atom (a 32k-atom frame: 0.58 vs 2.83 s until converged, fcc-bcc-hcp-fast,
#: 2 cores) but repay the compilation only over several frames: 6 hot-fcc frames of 32k atoms end to end took
#: 31.4 s eager, 48.7 s compiled from a cold cache (25.5 s warm), a break-even near 350k atom-frames per
#: worker; the 24 real-MD frames of 23k atoms of pipelines/study_solidification.py (560k atom-frames, more
#: iterations per frame) took 204.9 s eager and 105.9 s compiled, serially. A run asks for it when each
#: worker gets at least this many atom-frames of frames of at least :data:`CPU_COMPILE_MIN_RUN_ATOMS` atoms.
CPU_COMPILE_MIN_WORK = 500_000
CPU_COMPILE_MIN_RUN_ATOMS = 10_000


def compile_request(n_atoms: int, device, frames_per_worker: int = 1) -> str | None:
    """``compile`` argument of :func:`evaluator` for a frame of ``n_atoms`` on ``device``, one of
    ``frames_per_worker`` frames that this process denoises in the run: ``"auto"`` on a CPU for frames of at
    least :data:`CPU_COMPILE_MIN_ATOMS` atoms, or of at least :data:`CPU_COMPILE_MIN_RUN_ATOMS` in a run of at
    least :data:`CPU_COMPILE_MIN_WORK` atom-frames per worker; else ``None`` (the device's default)."""
    if torch.device(device).type != "cpu":
        return None
    if n_atoms >= CPU_COMPILE_MIN_ATOMS:
        return "auto"
    if n_atoms >= CPU_COMPILE_MIN_RUN_ATOMS and n_atoms * max(int(frames_per_worker), 1) >= CPU_COMPILE_MIN_WORK:
        return "auto"
    return None


_EVALUATOR_LOCK = threading.Lock()


def _evaluator(model, block_edges: int, fused: bool, compile: bool | str | None = None,
               aggregate: str | None = None, aot_dir=None) -> BlockedEvaluator:
    cache = model.__dict__.setdefault("_evaluators", {})  # one per set-up (small and large frames alternate)
    aot_dir = aot_dir if compile else None  # only compiled set-ups use it
    key = (block_edges, fused, compile, aggregate, None if aot_dir is None else str(aot_dir))
    ev = cache.get(key)
    if ev is None:
        tps = None
        if fused:
            if not hasattr(model, "_fused"):
                from trajden.model.fused import fused_tensor_products

                model._fused = fused_tensor_products(model.module, model.metadata)
            tps = model._fused
            if tps is not None:
                tps = [t.to(model.device) for t in tps]
        ev = BlockedEvaluator(model.module, block_edges, cutoff=model.cutoff, tensor_products=tps, compile=compile,
                              aggregate=aggregate,
                              aot=None if aot_dir is None else (getattr(model, "sha256", None), aot_dir,
                                                                compile is True))
        cache[key] = ev
    return ev


def halo_width(model, skin: float) -> float:
    """Halo (model units) that makes a block's owned updates exact: receptive field plus the skin."""
    return float(model.receptive_field) + float(skin) + 1e-6
