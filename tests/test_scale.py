"""Nearest-neighbour distance estimate: independent of structure and of the length unit."""

import numpy as np
import pytest

from trajden.lattices import STRUCTURES, add_noise, make_crystal
from trajden.scale import estimate_nn_distance


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("d_nn", [1.0, 2.55, 3.1])
def test_ideal(structure, d_nn):
    c = make_crystal(structure, 1500, d_nn=d_nn)
    assert estimate_nn_distance(c.positions, c.cell) == pytest.approx(d_nn, rel=0.005)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_thermal_noise(structure):
    """Per-coordinate noise of 0.05 d (real melts' correlated motion blurs pair distances about this much)."""
    rng = np.random.default_rng(3)
    c = make_crystal(structure, 2000, d_nn=2.55)
    noisy, _ = add_noise(c.positions, 0.05 * 2.55, rng)
    assert estimate_nn_distance(noisy, c.cell) == pytest.approx(2.55, rel=0.025)


def test_degenerate_input():
    with pytest.raises(ValueError):
        estimate_nn_distance(np.zeros((1, 3)), np.eye(3))
    with pytest.raises(ValueError):
        estimate_nn_distance(np.random.default_rng(0).random((10, 3)), np.zeros((3, 3)))


def test_no_length_scale_for_an_ideal_gas_but_for_a_melt_like_peak():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="no peak in g"):
        estimate_nn_distance(rng.random((500, 3)) * 30.0, np.eye(3) * 30.0)
    c = make_crystal("fcc", 2000, d_nn=2.55)
    hot = c.positions + 0.3 * rng.standard_normal(c.positions.shape)  # 0.12 nn per coordinate: still a peak
    assert estimate_nn_distance(hot, c.cell) == pytest.approx(2.55, rel=0.05)
