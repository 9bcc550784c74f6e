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
    dtype: torch.dtype = torch.float32, sort: bool = False,
) -> Graph:
    """Full neighbour list within ``cutoff + skin`` under periodic boundaries (cell rows = lattice vectors).

    ``positions`` is an (N, 3) array or tensor. On a CUDA ``device`` the list is computed there by vesin's
    CUDA backend (positions already on the GPU never leave it); where that backend is unavailable it falls
    back to the CPU and copies the graph over. ``sort``: edges sorted by centre atom (``dst``, stable), as
    :class:`trajden.model.evaluate.BlockedEvaluator` needs them.
    """
    device = torch.device(device)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    if device.type == "cuda" and _CUDA_NEIGHBOURS.get(device.index, True):
        try:
            return _build_graph_torch(positions, box, cutoff, skin, device, dtype, sort)
        except RuntimeError as err:  # e.g. no libcudart for vesin: the CPU path gives the same graph
            _CUDA_NEIGHBOURS[device.index] = False
            warnings.warn(f"vesin on {device} failed ({err}); neighbour lists fall back to the CPU", stacklevel=2)
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=True)
    # views into vesin's own buffers (no copy of the whole list; they live as long as ``nl``)
    i, j, S = nl.compute(pos, box, periodic=True, quantities="ijS", copy=False)
    # vesin: D = r_j - r_i + S @ box; the message flows from j (src) to the centre i (dst)
    dst_all, src_all = torch.from_numpy(_np_int64(i)), torch.from_numpy(_np_int64(j))
    crossing = torch.from_numpy(S.any(axis=1))
    if sort:
        order = _order_by(dst_all, len(pos))
        dst, src, crossing = dst_all[order], src_all[order], crossing[order]
        cross = torch.nonzero(crossing).squeeze(1)
        S_cross = S[order[cross].numpy()]
    else:
        dst, src = dst_all.clone(), src_all.clone()
        cross = torch.nonzero(crossing).squeeze(1)
        S_cross = S[cross.numpy()]
    # Cartesian shifts S @ box (float64) of the few edges that cross the cell
    cross_shift = torch.from_numpy(S_cross.astype(np.float64) @ box).to(dtype)
    del nl, i, j, S
    return Graph(src.to(device), dst.to(device), cross.to(device), cross_shift.to(device), cutoff, skin)


def _order_by(dst: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Stable order of the edges by centre (argsort of int32 keys: 1.7x faster than of int64 ones)."""
    key = dst.to(torch.int32) if n_atoms < 2**31 else dst
    return torch.argsort(key, stable=True)


def _np_int64(index: np.ndarray) -> np.ndarray:
    """vesin's size_t (uint64) indices as int64 without a copy (atom indices are far below 2**63)."""
    return index.view(np.int64) if index.dtype == np.uint64 else index.astype(np.int64)


#: per CUDA device index: whether vesin's CUDA backend worked (a failure is not retried)
_CUDA_NEIGHBOURS: dict = {}


def _build_graph_torch(positions, box: np.ndarray, cutoff: float, skin: float, device: torch.device,
                       dtype: torch.dtype, sort: bool = False) -> Graph:
    """:func:`build_graph` with vesin on torch tensors of ``device`` (its CUDA backend)."""
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device).contiguous()
    box_t = torch.as_tensor(box, dtype=torch.float64, device=device)
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=True)
    i, j, S = nl.compute(pos, box_t, periodic=True, quantities="ijS")
    dst, src = _as_int64(i), _as_int64(j)
    if sort:
        order = _order_by(dst, pos.shape[0])
        dst, src, S = dst[order], src[order], S[order]
    cross = torch.nonzero(S.any(dim=1)).squeeze(1)
    cross_shift = S[cross].to(torch.float64) @ box_t
    return Graph(src, dst, cross, cross_shift.to(dtype), cutoff, skin)


def _as_int64(index: torch.Tensor) -> torch.Tensor:
    """vesin's size_t (uint64) indices as int64 (the values are atom indices, far below 2**63)."""
    if index.dtype == torch.int64:
        return index
    return index.view(torch.int64) if index.dtype == torch.uint64 else index.to(torch.int64)
