"""Periodic neighbour lists (vesin) as torch graphs for :class:`trajden.model.network.ScoreNet`."""

from __future__ import annotations

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
    positions: np.ndarray, cell: np.ndarray, cutoff: float, skin: float = 0.0, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Graph:
    """Full neighbour list within ``cutoff + skin`` under periodic boundaries (cell rows = lattice vectors)."""
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff + skin), full_list=True)
    i, j, S = nl.compute(pos, box, periodic=True, quantities="ijS")
    shift = S.astype(np.float64) @ box
    # vesin: D = r_j - r_i + S @ box; the message flows from j (src) to the centre i (dst)
    return Graph(
        torch.from_numpy(j.astype(np.int64)).to(device),
        torch.from_numpy(i.astype(np.int64)).to(device),
        torch.from_numpy(shift).to(device=device, dtype=dtype),
        cutoff,
        skin,
    )
