"""Nearest-neighbour distance estimate: independent of structure and of the length unit."""

import numpy as np
import pytest

from trajden.lattices import STRUCTURES, add_noise, make_crystal
from trajden.scale import OCCUPANCY_ATOMS_PER_BIN, estimate_nn_distance, first_peak, occupied_volume


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


def _slab(vacuum_factor: float, noise: float = 0.08):
    """An fcc slab (6x6x6 cells, d_nn 2.55) with its box stretched along z by ``vacuum_factor``."""
    c = make_crystal("fcc", reps=(6, 6, 6), d_nn=2.55)
    pos = c.positions + np.random.default_rng(3).normal(0.0, noise * 2.55, c.positions.shape)
    cell = c.cell.copy()
    cell[2, 2] *= vacuum_factor
    return pos, cell, abs(np.linalg.det(c.cell))


def test_occupied_volume_is_the_cell_for_a_filled_box():
    pos, cell, _ = _slab(1.0)
    volume, empty = occupied_volume(pos, cell)
    assert volume == abs(np.linalg.det(cell)) and empty == 0.0  # exactly: filled frames are not affected


def test_occupied_volume_finds_the_vacuum_beside_a_slab():
    pos, cell, slab_volume = _slab(8.0)
    volume, empty = occupied_volume(pos, cell)
    assert 0.75 <= empty < 0.9  # 7/8 of the box is vacuum (on a grid of about 6 bins along z)
    # at most one partly filled bin per face: bins hold OCCUPANCY_ATOMS_PER_BIN atoms at the density found
    edge = (OCCUPANCY_ATOMS_PER_BIN * volume / len(pos)) ** (1.0 / 3.0)
    area = abs(np.linalg.det(cell)) / cell[2, 2]
    assert slab_volume <= volume <= slab_volume + 2.0 * edge * area


@pytest.mark.parametrize("vacuum_factor", [1.0, 3.0, 8.0])
def test_nn_distance_of_a_slab_in_vacuum(vacuum_factor):
    """The window of pair distances follows the density of the filled volume, not the box's (which, with
    enough vacuum, pushed the window past the first peak: 3.6 A found for Cu's 2.55)."""
    pos, cell, _ = _slab(vacuum_factor)
    assert estimate_nn_distance(pos, cell) == pytest.approx(2.55, rel=0.02)
    assert estimate_nn_distance(pos, cell, pbc=(True, True, False)) == pytest.approx(2.55, rel=0.02)


@pytest.mark.parametrize("pbc", [None, (True, True, False)])
def test_a_given_occupied_volume_is_the_one_computed(pbc):
    """``volume=``: the caller's occupied volume (computed once per frame) gives the same estimate; it is what
    sets the window."""
    pos, cell, _ = _slab(3.0)
    volume = occupied_volume(pos, cell, pbc)[0]
    assert first_peak(pos, cell, pbc=pbc, volume=volume) == first_peak(pos, cell, pbc=pbc)
    assert estimate_nn_distance(pos, cell, pbc=pbc, volume=volume) == estimate_nn_distance(pos, cell, pbc=pbc)
    assert estimate_nn_distance(pos, cell, pbc=pbc, volume=1.1 * volume) != estimate_nn_distance(pos, cell, pbc=pbc)
