"""OVITO labels of ideal and noisy lattices."""

import numpy as np
import pytest

from trajden import names
from trajden.classify import acna, classify, fractions, ptm
from trajden.lattices import STRUCTURES, add_noise, make_crystal


@pytest.mark.parametrize("structure", STRUCTURES)
def test_ideal_lattices_are_recognised(structure):
    c = make_crystal(structure, 500, d_nn=2.55)
    assert np.all(ptm(c.positions, c.cell) == c.code)
    if c.code in names.ACNA_CODES:
        assert np.all(acna(c.positions, c.cell) == c.code)


def test_noise_blurs_labels_and_origin_is_respected():
    rng = np.random.default_rng(0)
    c = make_crystal("fcc", 500, d_nn=2.55)
    noisy, _ = add_noise(c.positions, 0.255, rng)
    assert np.mean(ptm(noisy, c.cell) == names.FCC) < 0.1  # PTM's default rmsd cutoff collapses on noise
    origin = np.array([-3.0, 5.0, 1.0])
    labels = classify(c.positions + origin, c.cell, origin=origin)
    assert set(labels) == {"acna", "ptm"} and np.all(labels["acna"] == names.FCC)


def test_fractions():
    f = fractions(np.array([0, 1, 1, 3], dtype=np.int8), names.ACNA_CODES)
    assert f == {"other": 0.25, "fcc": 0.5, "hcp": 0.0, "bcc": 0.25, "ico": 0.0}


def test_labels_do_not_depend_on_the_order_of_the_atoms():
    """The atoms go to OVITO in spatial order and their labels come back in the input's order."""
    rng = np.random.default_rng(1)
    c = make_crystal("fcc", 2000, d_nn=2.55)
    noisy, _ = add_noise(c.positions, 0.17, rng)
    origin = np.array([4.0, -2.0, 7.5])
    perm = rng.permutation(len(noisy))
    a = classify(noisy + origin, c.cell, origin=origin)
    b = classify(noisy[perm] + origin, c.cell, origin=origin)
    for name in ("acna", "ptm"):
        assert 0.2 < np.mean(a[name] == names.FCC) < 0.9  # a mixture of labels: the order is visible
        np.testing.assert_array_equal(b[name], a[name][perm])
