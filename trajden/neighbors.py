"""Periodic neighbour lists (vesin) as torch graphs for :class:`trajden.model.network.ScoreNet`."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from vesin import NeighborList


class Graph:
    """A neighbour graph: ``src``/``dst`` atom indices and the Cartesian periodic shifts of the edges that
    cross the cell, ``cross_shift[k]`` for edge ``cross[k]`` (every other edge's shift is zero: storing only
    the ~2% that cross saves 12 bytes per edge, 320 MB for a 10^6-atom frame).

    ``edge_vec = positions[src] - positions[dst] + shift``; the graph stays valid while no atom moved
    more than half the ``skin`` it was built with.
    """

    __slots__ = ("src", "dst", "cross", "cross_shift", "cutoff", "skin")

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, cross: torch.Tensor, cross_shift: torch.Tensor,
                 cutoff: float, skin: float):
        self.src, self.dst, self.cross, self.cross_shift = src, dst, cross, cross_shift
        self.cutoff, self.skin = cutoff, skin

    @property
    def shift(self) -> torch.Tensor:
        """Dense (E, 3) shifts (zero for edges within the cell)."""
        out = torch.zeros(self.src.shape[0], 3, dtype=self.cross_shift.dtype, device=self.src.device)
        out[self.cross] = self.cross_shift
        return out

    def edge_vec(self, positions: torch.Tensor) -> torch.Tensor:
        vec = positions.index_select(0, self.src) - positions.index_select(0, self.dst)
        if self.cross.numel():
            vec.index_add_(0, self.cross, self.cross_shift.to(vec.dtype))
        return vec


def build_graph(
    positions, cell: np.ndarray, cutoff: float, skin: float = 0.0, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32, sort: bool = False, pbc=None,
) -> Graph:
    """Full neighbour list within ``cutoff + skin`` under periodic boundaries (cell rows = lattice vectors).

    ``pbc``: periodic along each cell vector (three booleans; None: all): no images are made across a
    non-periodic direction (vesin's per-direction ``periodic``), so atoms at a free surface see only real
    neighbours.

    ``positions`` is an (N, 3) array or tensor. On a CUDA ``device`` the list is computed there by vesin's
    CUDA backend (positions already on the GPU never leave it); where that backend is unavailable it falls
    back to the CPU and copies the graph over. ``sort``: edges sorted by centre atom (``dst``, stable), as
    :class:`trajden.model.evaluate.BlockedEvaluator` needs them.
    """
    device = torch.device(device)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    periodic = _periodic(pbc)
    if device.type == "cuda" and _CUDA_NEIGHBOURS.get(device.index, True):
        try:
            return _build_graph_torch(positions, box, cutoff, skin, device, dtype, sort, periodic)
        except RuntimeError as err:  # e.g. no libcudart for vesin: the CPU path gives the same graph
            _CUDA_NEIGHBOURS[device.index] = False
            warnings.warn(f"vesin on {device} failed ({err}); neighbour lists fall back to the CPU", stacklevel=2)
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    # the half list (each pair once) is 2.2x faster to compute than the full one: the graph mirrors it
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=False)
    # views into vesin's own buffers (no copy of the whole list; they live as long as ``nl``)
    i, j, S = nl.compute(pos, box, periodic=periodic, quantities="ijS", copy=False)
    graph = _assemble(torch.from_numpy(_np_int64(i)), torch.from_numpy(_np_int64(j)), torch.from_numpy(S),
                      torch.from_numpy(box), len(pos), cutoff, skin, dtype, sort, half=True)
    del nl  # vesin's buffers: the graph holds copies
    return Graph(*(t.to(device) for t in (graph.src, graph.dst, graph.cross, graph.cross_shift)), cutoff, skin)


def spatial_order(positions: np.ndarray, cell: np.ndarray, width: float | None = None) -> np.ndarray:
    """A permutation that puts the atoms in Morton (Z-curve) order of periodic bins of about ``width``.

    Atoms that are neighbours in space are then mostly neighbours in memory: the model's gathers of
    neighbour features stay in cache, and vesin's cell lists are built faster. A frame whose atoms are in
    random order (ids scrambled by melting or diffusion) denoised 1.6x slower than the same frame in lattice
    order; in this order it is as fast as in lattice order (``pipelines/benchmark_throughput.py --atom-order``).

    Parameters
    ----------
    positions : (N, 3) Cartesian positions
    cell : (3, 3) lattice vectors as rows (bins are taken along them, so triclinic cells work alike)
    width : bin width; ``None``: the mean atomic spacing ``(V / N)^(1/3)``

    Returns
    -------
    (N,) int64 indices: ``positions[order]`` is in bin order (stable within a bin). A degenerate cell or
    an empty frame gives the identity, and non-finite positions only land in arbitrary bins: callers raise
    their own errors for such frames.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    n = len(positions)
    volume = abs(float(np.linalg.det(cell))) if cell.shape == (3, 3) else 0.0
    if n < 2 or not np.isfinite(volume) or volume <= 0:
        return np.arange(n, dtype=np.int64)
    if width is None:
        width = (volume / n) ** (1.0 / 3.0)
    heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    nbins = np.clip(np.floor(heights / width), 1, 2**21 - 1).astype(np.int64)
    with np.errstate(invalid="ignore"):
        frac = positions @ np.linalg.inv(cell)
        frac -= np.floor(frac)
        bins = np.clip((frac * nbins).astype(np.int64), 0, nbins - 1)
    code = np.zeros(n, dtype=np.int64)
    for bit in range(int(nbins.max()).bit_length()):
        for axis in range(3):
            code |= ((bins[:, axis] >> bit) & 1) << (3 * bit + axis)
    return np.argsort(code, kind="stable")


def _assemble(i: torch.Tensor, j: torch.Tensor, S: torch.Tensor, box: torch.Tensor, n_atoms: int, cutoff: float,
              skin: float, dtype: torch.dtype, sort: bool, half: bool = False) -> Graph:
    """A :class:`Graph` from vesin's pairs ``i``, ``j`` and integer cell shifts ``S`` (``D = r_j - r_i + S @
    box``: the message flows from ``j``, the source, to the centre ``i``), on the device of the inputs; only
    the edges that cross the cell get a Cartesian shift. ``half``: a half list, mirrored here (pair ``k`` also
    gives the edge ``i -> j`` with shift ``-S[k]``, as edge ``len(i) + k`` before sorting)."""
    n_pairs = i.shape[0]
    if half:
        dst, src, crossing = torch.cat([i, j]), torch.cat([j, i]), S.any(dim=1).repeat(2)
    else:
        dst, src, crossing = i, j, S.any(dim=1)
    if sort:
        order = _order_by(dst, n_atoms)
        src, crossing = src[order], crossing[order]
        dst = torch.repeat_interleave(torch.bincount(dst, minlength=n_atoms))  # = dst[order], without a gather
        cross = torch.nonzero(crossing).squeeze(1)
        pair = order[cross]
    else:
        cross = torch.nonzero(crossing).squeeze(1)
        pair = cross
    mirrored = pair >= n_pairs
    S_cross = S[pair - n_pairs * mirrored].to(torch.float64)
    S_cross[mirrored] *= -1.0
    cross_shift = (S_cross @ box.to(torch.float64)).to(dtype)  # in float64, then cast
    return Graph(src, dst, cross, cross_shift, cutoff, skin)


def _order_by(dst: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Stable order of the edges by centre (argsort of int32 keys: 1.7x faster than of int64 ones)."""
    key = dst.to(torch.int32) if n_atoms < 2**31 else dst
    return torch.argsort(key, stable=True)


def _np_int64(index: np.ndarray) -> np.ndarray:
    """vesin's size_t (uint64) indices as int64 without a copy (atom indices are far below 2**63)."""
    return index.view(np.int64) if index.dtype == np.uint64 else index.astype(np.int64)


#: per CUDA device index: whether vesin's CUDA backend worked (a failure is not retried)
_CUDA_NEIGHBOURS: dict = {}


def _periodic(pbc) -> bool | list[bool]:
    """vesin's ``periodic``: True for all-periodic (or None), else three booleans."""
    if pbc is None:
        return True
    flags = [bool(p) for p in np.asarray(pbc, dtype=bool).reshape(3)]
    return True if all(flags) else flags


def _build_graph_torch(positions, box: np.ndarray, cutoff: float, skin: float, device: torch.device,
                       dtype: torch.dtype, sort: bool = False, periodic: bool | list[bool] = True) -> Graph:
    """:func:`build_graph` with vesin on torch tensors of ``device`` (its CUDA backend)."""
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device).contiguous()
    box_t = torch.as_tensor(box, dtype=torch.float64, device=device)
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=True)
    i, j, S = nl.compute(pos, box_t, periodic=periodic, quantities="ijS")
    return _assemble(_as_int64(i), _as_int64(j), S, box_t, pos.shape[0], cutoff, skin, dtype, sort)


def _as_int64(index: torch.Tensor) -> torch.Tensor:
    """vesin's size_t (uint64) indices as int64 (the values are atom indices, far below 2**63)."""
    if index.dtype == torch.int64:
        return index
    return index.view(torch.int64) if index.dtype == torch.uint64 else index.to(torch.int64)
