"""trajden.scope: atoms the model does not know are left where they were, thermal crystals and melts are not."""

import numpy as np
import pytest

from trajden import names
from trajden.denoise import denoise
from trajden.lattices import add_noise, make_crystal
from trajden.model.package import load_model
from trajden.scope import MoveGuard


@pytest.fixture(scope="module")
def lite():
    return load_model("fcc-bcc-hcp-lite")


def _nanotube():
    from ase.build import nanotube

    t = nanotube(10, 10, length=4)
    t.center(vacuum=6.0, axis=(0, 1))
    return t.positions, np.array(t.cell)


def test_guard_bound_is_tied_to_the_models_training_noise():
    g = MoveGuard(kappa=2.0)
    assert g.bound(0.1) == pytest.approx(2.0 * np.sqrt(3) * 0.1)
    with pytest.raises(ValueError):
        MoveGuard(kappa=0)


def test_guard_flags_only_the_region_that_moved_too_far():
    c = make_crystal("fcc", 2000, d_nn=2.5)
    rng = np.random.default_rng(0)
    raw = c.positions
    den = raw + 0.1 * rng.standard_normal(raw.shape)  # 0.04 nn: thermal
    centre = raw[0]
    d = raw - centre
    d -= np.round(d @ np.linalg.inv(c.cell)) @ c.cell
    blob = np.linalg.norm(d, axis=1) < 4.0
    den[blob] += rng.standard_normal((blob.sum(), 3)) * 1.5  # ~1 nn moves: a rewrite
    res = MoveGuard().compute(raw, den, c.cell, 2.5, sigma_max=0.13)
    flagged = res.flags == names.SCOPE_MOVE_BOUND
    assert flagged[blob].mean() > 0.9
    far = np.linalg.norm(d, axis=1) > 4.0 + 2 * 1.6 * 2.5  # beyond the blob's neighbourhood
    assert not flagged[far].any()
    np.testing.assert_array_equal(res.positions[flagged], raw[flagged])
    np.testing.assert_array_equal(res.positions[~flagged], den[~flagged])
    assert not res.frame_left_raw


def test_a_nanotube_is_left_in_place_and_flagged():
    model = load_model("fcc-bcc-hcp")  # the lite model diverges on it (kept raw anyway); this one rewrites it
    pos, cell = _nanotube()
    unguarded = denoise(pos, cell, None, model, k=8, guard=False)
    assert np.sqrt(((unguarded.positions - pos) ** 2).sum(1).mean()) > 0.5  # what the guard prevents
    res = denoise(pos, cell, None, model, k=8)
    assert res.status == names.FRAME_STATUS_OUT_OF_SCOPE
    assert np.all(res.scope == names.SCOPE_FRAME)
    np.testing.assert_array_equal(res.positions, pos)


@pytest.mark.parametrize("structure", ["fcc", "bcc", "hcp"])
def test_hot_crystals_at_the_training_ceiling_are_not_flagged(lite, structure):
    c = make_crystal(structure, 1500, d_nn=2.5)
    noisy, _ = add_noise(c.positions, 0.13 * 2.5, np.random.default_rng(1))
    res = denoise(noisy, c.cell, None, lite, k=8)
    assert res.n_kept_raw == 0
    assert res.status != names.FRAME_STATUS_OUT_OF_SCOPE


def test_a_dilute_gas_is_left_raw_not_an_error(lite):
    rng = np.random.default_rng(2)
    cell = np.eye(3) * 60.0
    pos = rng.random((200, 3)) * 60.0  # an ideal gas: g(r) has no peak
    res = denoise(pos, cell, None, lite)
    assert res.status == names.FRAME_STATUS_OUT_OF_SCOPE
    assert np.all(res.scope == names.SCOPE_NO_SCALE)
    np.testing.assert_array_equal(res.positions, pos)
    with pytest.raises(ValueError, match="no peak in g"):
        denoise(pos, cell, None, lite, guard=False)
