"""trajden.scope: atoms the model does not know are left where they were, thermal crystals and melts are not."""

import numpy as np
import pytest

from trajden import names
from trajden.denoise import denoise
from trajden.lattices import add_noise, make_crystal
from trajden.model.package import load_model
from trajden.scope import MoveGuard, SurfaceFinder


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


def _hot_slab(noise: float = 0.08, vacuum: float = 20.0):
    """A hot fcc (001) slab (6x6x5 cells: 10 layers), d_nn 2.55, in a periodic box with ``vacuum`` A along z."""
    c = make_crystal("fcc", reps=(6, 6, 5), d_nn=2.55)
    pos = c.positions + np.random.default_rng(5).normal(0.0, noise * 2.55, c.positions.shape)
    cell = c.cell.copy()
    cell[2, 2] += vacuum
    pos[:, 2] += vacuum / 2
    layer = np.round((c.positions[:, 2] - c.positions[:, 2].min()) / (c.cell[2, 2] / 10)).astype(int)
    depth = np.minimum(layer, layer.max() - layer)
    return pos, cell, depth


@pytest.mark.parametrize("pbc", [None, (True, True, False)])
def test_surface_finder_marks_the_outer_layers_only(pbc):
    pos, cell, depth = _hot_slab()
    held = SurfaceFinder().compute(pos, cell, 2.55, pbc)
    assert held[depth == 0].all()  # the outer layer
    assert held[depth == 1].mean() > 0.9  # and those within DEFAULT_SURFACE_DEPTH (1.6 d_nn: two (001) layers)
    assert held[depth == 3].mean() < 0.2 and not held[depth >= 4].any()  # the interior is denoised


def test_surface_finder_leaves_bulk_and_melts_alone():
    c = make_crystal("fcc", reps=(6, 6, 6), d_nn=2.55)
    hot = add_noise(c.positions, 0.12 * 2.55, np.random.default_rng(0))[0]
    assert not SurfaceFinder().compute(hot, c.cell, 2.55).any()
    gas_like = np.random.default_rng(1).random((864, 3)) @ c.cell  # no vacuum either: nothing to examine
    assert not SurfaceFinder().compute(gas_like, c.cell, 2.55).any()


def test_denoise_holds_the_surface_and_cleans_the_interior(lite):
    pos, cell, depth = _hot_slab()
    res = denoise(pos, cell, None, lite, pbc=(True, True, False))
    held = res.scope == names.SCOPE_SURFACE
    np.testing.assert_array_equal(res.positions[held], pos[held])
    assert held[depth == 0].all() and not held[depth >= 4].any()
    ideal = make_crystal("fcc", reps=(6, 6, 5), d_nn=2.55).positions
    ideal[:, 2] += 10.0
    inner = depth >= 4
    d_raw = pos[inner] - ideal[inner]
    d_den = res.positions[inner] - ideal[inner]
    assert np.sqrt((d_den**2).sum(1).mean()) < 0.4 * np.sqrt((d_raw**2).sum(1).mean())
    free = denoise(pos, cell, None, lite, pbc=(True, True, False), surfaces=False)
    assert not (free.scope == names.SCOPE_SURFACE).any()


def test_two_held_surface_atoms_closer_than_the_overlap_limit_do_not_make_the_frame_diverge(lite):
    """The overlap check judges the denoiser's positions: a close pair the input had at its surface is kept."""
    pos, cell, depth = _hot_slab()
    top = np.flatnonzero((depth == 0) & (pos[:, 2] > pos[:, 2].mean()))
    a = top[0]
    b = top[np.argmin(np.linalg.norm(pos[top[1:]] - pos[a], axis=1)) + 1]
    pos[b] = pos[a] + 0.45 * 2.55 * (pos[b] - pos[a]) / np.linalg.norm(pos[b] - pos[a])
    res = denoise(pos, cell, None, lite, pbc=(True, True, False))
    assert res.scope[a] == res.scope[b] == names.SCOPE_SURFACE
    assert res.status != names.FRAME_STATUS_DIVERGED
    np.testing.assert_array_equal(res.positions[[a, b]], pos[[a, b]])


@pytest.mark.parametrize("pbc", [None, (True, True, False)])
def test_denoise_computes_the_occupied_volume_once_per_frame(lite, monkeypatch, pbc):
    """The scale estimate, the surface gate and the refined scale share the raw frame's occupied volume."""
    import trajden.denoise as dn
    import trajden.scale as sc
    import trajden.scope as sp

    calls = {"occupied": 0, "estimate": 0}
    occupied, estimate = sc.occupied_volume, dn.estimate_nn_distance

    def counting_occupied(*args, **kwargs):
        calls["occupied"] += 1
        return occupied(*args, **kwargs)

    def counting_estimate(*args, **kwargs):
        calls["estimate"] += 1
        return estimate(*args, **kwargs)

    for module in (sc, sp, dn):  # every binding of the function the code can reach
        monkeypatch.setattr(module, "occupied_volume", counting_occupied, raising=False)
    monkeypatch.setattr(dn, "estimate_nn_distance", counting_estimate)
    pos, cell, _ = _hot_slab()
    res = denoise(pos, cell, None, lite, pbc=pbc)
    assert (res.scope == names.SCOPE_SURFACE).any()  # the surface gate examined the frame
    assert calls["estimate"] == 2  # the raw frame's scale and the refined one, from the denoised positions
    assert calls["occupied"] == 1


def test_surface_finder_takes_the_callers_empty_fraction():
    """``empty_fraction=``: the gate of a periodic frame uses the caller's value instead of computing it."""
    pos, cell, _ = _hot_slab()
    finder = SurfaceFinder()
    np.testing.assert_array_equal(finder.compute(pos, cell, 2.55, empty_fraction=0.4), finder.compute(pos, cell, 2.55))
    assert not finder.compute(pos, cell, 2.55, empty_fraction=0.0).any()  # told it fills its box: not examined
