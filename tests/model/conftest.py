"""Shared inputs of the evaluator tests."""

import numpy as np
import pytest
import torch

from trajden.lattices import add_noise, make_crystal
from trajden.neighbors import build_graph


@pytest.fixture
def crystal_liquid():
    """``make(structure, n_atoms, seed, cutoff) -> (positions tensor, sorted graph, types)``: a crystal with
    0.1 d noise whose last 40% along x is further blurred by 0.2 d (a liquid-like region)."""

    def make(structure: str, n_atoms: int, seed: int, cutoff: float):
        c = make_crystal(structure, n_atoms)
        rng = np.random.default_rng(seed)
        pos, _ = add_noise(c.positions, 0.1, rng)
        liquid = pos[:, 0] > 0.6 * c.cell[0, 0]
        pos[liquid] += rng.normal(scale=0.2, size=(liquid.sum(), 3))
        x = torch.tensor(pos, dtype=torch.float32)
        graph = build_graph(pos, c.cell, cutoff, skin=0.2, sort=True)
        return x, graph, torch.zeros(len(pos), dtype=torch.long)

    return make
