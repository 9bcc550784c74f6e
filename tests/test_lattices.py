"""trajden.lattices: the two-element prototypes have the right coordination, stoichiometry and bond length."""

import numpy as np
import pytest

from trajden.lattices import COMPOUNDS, STRUCTURES, make_crystal
from trajden.neighbors import build_graph

# prototype -> (atoms of role 0 : role 1, coordination of role 0, of role 1) within 1.05 shortest bonds
EXPECTED = {
    "b2": ((1, 1), 8, 8),
    "l10": ((1, 1), 12, 12),
    "l12": ((3, 1), 12, 12),
    "b1": ((1, 1), 6, 6),
    "b3": ((1, 1), 4, 4),
    "b4": ((1, 1), 4, 4),
    "c1": ((1, 2), 8, 4),
    "beta-cristobalite": ((1, 2), 4, 2),
    "alpha-cristobalite": ((1, 2), 4, 2),
    "alpha-quartz": ((1, 2), 4, 2),
    "beta-quartz": ((1, 2), 4, 2),
}


@pytest.mark.parametrize("proto", COMPOUNDS)
def test_prototype_geometry(proto):
    assert set(EXPECTED) == set(COMPOUNDS)
    (na, nb), cn_a, cn_b = EXPECTED[proto]
    c = make_crystal(proto, 300, d_nn=2.0)
    counts = np.bincount(c.types, minlength=2)
    assert counts[0] * nb == counts[1] * na
    g = build_graph(c.positions, c.cell, 2.0 * 1.05)
    import torch

    d = np.linalg.norm(g.edge_vec(torch.tensor(c.positions)).numpy(), axis=1)
    assert d.min() == pytest.approx(2.0, abs=1e-5)  # the shortest bond is d_nn (float32 edges)
    cn = np.bincount(g.dst.numpy(), minlength=c.n_atoms)
    assert set(cn[c.types == 0]) == {cn_a}
    assert set(cn[c.types == 1]) == {cn_b}
    # unlike-neighbour bonds only where the prototype has them (a silica O never touches O)
    src, dst = g.src.numpy(), g.dst.numpy()
    if proto in ("b1", "b3", "b4", "b2") or "cristobalite" in proto or "quartz" in proto:
        assert np.all(c.types[src] != c.types[dst])


def test_one_element_structures_unchanged():
    for s in STRUCTURES:
        c = make_crystal(s, 200)
        assert set(np.unique(c.types)) == {0}
        assert np.allclose(np.triu(c.cell, 1), 0) and np.allclose(np.tril(c.cell, -1), 0)
