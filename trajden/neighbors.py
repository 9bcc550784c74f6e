"""Periodic neighbour lists (vesin) as torch graphs for :class:`trajden.model.network.ScoreNet`."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from vesin import NeighborList


class Graph:
    """A neighbour graph: ``src``/``dst`` atom indices and ``shift`` (E, 3) Cartesian periodic shifts.

    ``edge_vec = positions[src] - positions[dst] + shift``; the graph stays valid while no atom moved
    more than half the ``skin`` it was built with.
    """

    __slots__ = ("src", "dst", "shift", "cutoff", "skin")

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, shift: torch.Tensor, cutoff: float, skin: float):
        self.src, self.dst, self.shift, self.cutoff, self.skin = src, dst, shift, cutoff, skin

    def edge_vec(self, positions: torch.Tensor) -> torch.Tensor:
        return positions[self.src] - positions[self.dst] + self.shift


def build_graph(
    positions, cell: np.ndarray, cutoff: float, skin: float = 0.0, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Graph:
    """Full neighbour list within ``cutoff + skin`` under periodic boundaries (cell rows = lattice vectors).

    ``positions`` is an (N, 3) array or tensor. On a CUDA ``device`` the list is computed there by vesin's
    CUDA backend (positions already on the GPU never leave it); where that backend is unavailable it falls
    back to the CPU and copies the graph over.
    """
    device = torch.device(device)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    if device.type == "cuda" and _CUDA_NEIGHBOURS.get(device.index, True):
        try:
            return _build_graph_torch(positions, box, cutoff, skin, device, dtype)
        except RuntimeError as err:  # e.g. no libcudart for vesin: the CPU path gives the same graph
            _CUDA_NEIGHBOURS[device.index] = False
            warnings.warn(f"vesin on {device} failed ({err}); neighbour lists fall back to the CPU", stacklevel=2)
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=True)
    i, j, S = nl.compute(pos, box, periodic=True, quantities="ijS")
    # Cartesian shifts S @ box, computed (in float64) only for the few edges that cross the cell: a dense
    # (E, 3) @ (3, 3) product took most of the time of a 10^6-atom list
    crossing = np.flatnonzero(S.any(axis=1))
    shift = np.zeros(S.shape, dtype=np.float64 if dtype == torch.float64 else np.float32)
    shift[crossing] = S[crossing].astype(np.float64) @ box
    # vesin: D = r_j - r_i + S @ box; the message flows from j (src) to the centre i (dst)
    return Graph(
        torch.from_numpy(_np_int64(j)).to(device),
        torch.from_numpy(_np_int64(i)).to(device),
        torch.from_numpy(shift).to(device=device, dtype=dtype),
        cutoff,
        skin,
    )


def _np_int64(index: np.ndarray) -> np.ndarray:
    """vesin's size_t (uint64) indices as int64 without a copy (atom indices are far below 2**63)."""
    return index.view(np.int64) if index.dtype == np.uint64 else index.astype(np.int64)


#: per CUDA device index: whether vesin's CUDA backend worked (a failure is not retried)
_CUDA_NEIGHBOURS: dict = {}


def _build_graph_torch(positions, box: np.ndarray, cutoff: float, skin: float, device: torch.device,
                       dtype: torch.dtype) -> Graph:
    """:func:`build_graph` with vesin on torch tensors of ``device`` (its CUDA backend)."""
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device).contiguous()
    box_t = torch.as_tensor(box, dtype=torch.float64, device=device)
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=True)
    i, j, S = nl.compute(pos, box_t, periodic=True, quantities="ijS")
    shift = S.to(torch.float64) @ box_t
    return Graph(_as_int64(j), _as_int64(i), shift.to(dtype), cutoff, skin)


def _as_int64(index: torch.Tensor) -> torch.Tensor:
    """vesin's size_t (uint64) indices as int64 (the values are atom indices, far below 2**63)."""
    if index.dtype == torch.int64:
        return index
    return index.view(torch.int64) if index.dtype == torch.uint64 else index.to(torch.int64)
