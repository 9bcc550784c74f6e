"""Tests of trajden.analysis on small synthetic stores built directly with xarray."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from trajden import analysis, lattices, names

N_FRAMES = 5


def make_store(n_frames: int = N_FRAMES, seed: int = 0, unwritten: int | None = 3) -> xr.Dataset:
    """An fcc crystal (108 atoms) with random labels; frame ``unwritten`` has labels -1 and complete False."""
    rng = np.random.default_rng(seed)
    c = lattices.make_crystal("fcc", reps=(3, 3, 3), d_nn=2.55)
    n = c.n_atoms
    raw = c.positions[None] + 0.1 * rng.standard_normal((n_frames, n, 3))
    den = c.positions[None] + 0.01 * rng.standard_normal((n_frames, n, 3))
    ds = xr.Dataset(
        {
            names.VAR_POSITIONS: ((names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL), den.astype(np.float32)),
            names.VAR_POSITIONS_RAW: ((names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL), raw.astype(np.float32)),
            names.VAR_CELL: (
                (names.DIM_FRAME, names.DIM_CELL_VECTOR, names.DIM_SPATIAL),
                np.broadcast_to(c.cell, (n_frames, 3, 3)).copy(),
            ),
            names.VAR_TYPE: ((names.DIM_ATOM,), np.ones(n, dtype=np.int32)),
            names.VAR_COMPLETE: ((names.DIM_FRAME,), np.ones(n_frames, dtype=bool)),
        },
        coords={
            names.COORD_TIME: ((names.DIM_FRAME,), np.arange(n_frames) * 2.0),
            names.COORD_STEP: ((names.DIM_FRAME,), np.arange(n_frames, dtype=np.int64) * 1000),
            names.COORD_ATOM_ID: ((names.DIM_ATOM,), np.arange(1, n + 1, dtype=np.int64)),
        },
    )
    for cls in names.CLASSIFIERS:
        codes = np.array(analysis.structure_codes(cls))
        for raw_flag in (False, True):
            p = np.linspace(1, 2, len(codes))
            lab = rng.choice(codes, size=(n_frames, n), p=p / p.sum()).astype(np.int8)
            if unwritten is not None:
                lab[unwritten] = -1
            ds[names.structure_var(cls, raw_flag)] = ((names.DIM_FRAME, names.DIM_ATOM), lab)
    if unwritten is not None:
        ds[names.VAR_COMPLETE][unwritten] = False
    return ds


def numpy_fractions(labels: np.ndarray, codes, mask: np.ndarray | None = None) -> np.ndarray:
    out = np.full((len(labels), len(codes)), np.nan)
    for f, lab in enumerate(labels):
        sel = lab if mask is None else lab[mask if mask.ndim == 1 else mask[f]]
        if len(sel) == 0 or (sel == -1).any():
            continue
        out[f] = [(sel == c).sum() / len(sel) for c in codes]
    return out


@pytest.mark.parametrize("method", names.CLASSIFIERS)
@pytest.mark.parametrize("raw", [False, True])
def test_fractions_sum_and_match_numpy(method, raw):
    ds = make_store()
    fr = analysis.phase_fractions(ds, method=method, raw=raw)
    codes = analysis.structure_codes(method)
    assert fr.dims == (names.DIM_FRAME, analysis.DIM_STRUCTURE)
    assert list(fr[analysis.DIM_STRUCTURE].values) == [names.STRUCTURE_NAMES[c] for c in codes]
    sums = fr.sum(analysis.DIM_STRUCTURE, skipna=False).values
    written = np.arange(N_FRAMES) != 3
    np.testing.assert_allclose(sums[written], 1.0, rtol=1e-12)
    assert np.isnan(fr.values[3]).all()
    expected = numpy_fractions(ds[names.structure_var(method, raw)].values, codes)
    np.testing.assert_allclose(fr.values, expected, rtol=1e-12)
    # time coordinate travels with the frames
    np.testing.assert_array_equal(fr[names.COORD_TIME].values, ds[names.COORD_TIME].values)


def test_incomplete_flag_gives_nan():
    ds = make_store(unwritten=None)
    ds[names.VAR_COMPLETE][1] = False
    fr = analysis.phase_fractions(ds, "acna")
    assert np.isnan(fr.values[1]).all()
    assert np.isfinite(fr.values[[0, 2, 3, 4]]).all()


def test_fixed_counts():
    ds = make_store(n_frames=1, unwritten=None)
    lab = np.zeros((1, ds.sizes[names.DIM_ATOM]), dtype=np.int8)
    lab[0, :27] = names.FCC
    lab[0, 27:54] = names.BCC
    ds[names.structure_var("acna")] = ((names.DIM_FRAME, names.DIM_ATOM), lab)
    fr = analysis.phase_fractions(ds, "acna").isel(frame=0)
    assert float(fr.sel(structure="fcc")) == pytest.approx(0.25)
    assert float(fr.sel(structure="bcc")) == pytest.approx(0.25)
    assert float(fr.sel(structure="other")) == pytest.approx(0.5)
    assert float(fr.sel(structure="hcp")) == 0.0


def test_region_mask_atom_and_frame_atom():
    ds = make_store()
    lab = ds[names.structure_var("ptm")].values
    codes = analysis.structure_codes("ptm")
    rng = np.random.default_rng(1)
    mask1 = rng.random(ds.sizes[names.DIM_ATOM]) < 0.3
    fr = analysis.phase_fractions(ds, "ptm", region=xr.DataArray(mask1, dims=(names.DIM_ATOM,)))
    np.testing.assert_allclose(fr.values, numpy_fractions(lab, codes, mask1), rtol=1e-12)
    assert not np.allclose(fr.values[0], analysis.phase_fractions(ds, "ptm").values[0])
    mask2 = rng.random(lab.shape) < 0.5
    fr2 = analysis.phase_fractions(ds, "ptm", region=mask2)  # plain numpy (frame, atom)
    np.testing.assert_allclose(fr2.values, numpy_fractions(lab, codes, mask2), rtol=1e-12)


@pytest.mark.parametrize("raw", [False, True])
def test_region_slab(raw):
    ds = make_store()
    fr = analysis.phase_fractions(ds, "acna", raw=raw, region={"axis": "z", "min": 2.0, "max": 6.0})
    pos = ds[names.VAR_POSITIONS_RAW if raw else names.VAR_POSITIONS].values
    mask = (pos[..., 2] >= 2.0) & (pos[..., 2] < 6.0)
    assert 0 < mask.sum() < mask.size
    lab = ds[names.structure_var("acna", raw)].values
    np.testing.assert_allclose(fr.values, numpy_fractions(lab, names.ACNA_CODES, mask), rtol=1e-12)
    # an empty slab gives NaN everywhere
    empty = analysis.phase_fractions(ds, "acna", region={"axis": 2, "min": 1e3, "max": 2e3})
    assert np.isnan(empty.values).all()


def test_slab_wrap():
    ds = make_store(unwritten=None)
    shifted = ds.copy()
    L = float(ds[names.VAR_CELL].values[0, 0, 0])
    shifted[names.VAR_POSITIONS] = ds[names.VAR_POSITIONS] + np.float32(L)  # one image further along x
    slab = {"axis": "x", "min": 0.0, "max": L / 2}
    a = analysis.phase_fractions(ds, "acna", region={**slab, "wrap": True})
    b = analysis.phase_fractions(shifted, "acna", region={**slab, "wrap": True})
    np.testing.assert_allclose(a.values, b.values)
    assert np.isnan(analysis.phase_fractions(shifted, "acna", region=slab).values).all()


def _forbid_compute(dsk, keys, **kwargs):
    raise AssertionError("dask computation triggered")


def test_lazy_on_dask_store(tmp_path):
    ds = make_store(n_frames=6)
    path = tmp_path / "s.zarr"
    ds.chunk({names.DIM_FRAME: 2, names.DIM_ATOM: 50}).to_zarr(path, consolidated=False, zarr_format=3)
    lazy = xr.open_zarr(path, consolidated=False)
    assert isinstance(lazy[names.structure_var("ptm")].data, da.Array)
    with dask.config.set(scheduler=_forbid_compute):
        fr = analysis.phase_fractions(lazy, "ptm")
        fr_slab = analysis.phase_fractions(lazy, "ptm", region={"axis": "y", "min": 1.0, "max": 5.0, "wrap": True})
        fr_path = analysis.phase_fractions(path, "acna", raw=True)
        with pytest.raises(AssertionError, match="dask computation"):
            fr.compute()  # the guard works
    for x in (fr, fr_slab, fr_path):
        assert isinstance(x.data, da.Array)
    np.testing.assert_allclose(fr.compute().values, analysis.phase_fractions(ds, "ptm").values)
    np.testing.assert_allclose(
        fr_slab.compute().values,
        analysis.phase_fractions(ds, "ptm", region={"axis": "y", "min": 1.0, "max": 5.0, "wrap": True}).values,
    )
    np.testing.assert_allclose(fr_path.compute().values, analysis.phase_fractions(ds, "acna", raw=True).values)


def test_missing_labels_and_bad_method():
    ds = make_store().drop_vars(names.structure_var("acna"))
    with pytest.raises(KeyError, match="structure_acna"):
        analysis.phase_fractions(ds, "acna")
    with pytest.raises(ValueError, match="unknown"):
        analysis.phase_fractions(ds, "cna")


# --- RDF / Steinhardt --------------------------------------------------------------------------


def test_rdf_fcc_first_peak():
    ds = make_store()
    g = analysis.rdf(ds, 0, bins=150)
    assert g.dims == ("r",) and g.sizes["r"] == 150
    r_peak = float(g.r[int(np.argmax(g.values))])
    assert r_peak == pytest.approx(2.55, abs=0.1)
    # the raw frame is noisier: lower first peak
    g_raw = analysis.rdf(ds, 0, raw=True, bins=150)
    assert float(g_raw.max()) < float(g.max())
    # 12 neighbours within the first minimum (between 2.55 and 3.6)
    assert float(g.n_r.sel(r=3.1, method="nearest")) == pytest.approx(12, abs=0.5)
    with pytest.raises(ValueError, match="r_max"):
        analysis.rdf(ds, 0, r_max=100.0)


def test_raw_requires_positions_raw():
    ds = make_store().drop_vars(names.VAR_POSITIONS_RAW)
    with pytest.raises(KeyError, match="--keep-raw"):
        analysis.rdf(ds, 0, raw=True)
    with pytest.raises(KeyError, match="--keep-raw"):
        analysis.steinhardt(ds, 0, raw=True)


def test_steinhardt_fcc_and_invariance():
    ds = make_store()
    s = analysis.steinhardt(ds, 0)
    assert s["q4"].dims == (names.DIM_ATOM,) and s.sizes[names.DIM_ATOM] == ds.sizes[names.DIM_ATOM]
    # ideal fcc: q4 = 0.191, q6 = 0.575
    assert float(s["q4_mean"]) == pytest.approx(0.191, abs=0.01)
    assert float(s["q6_mean"]) == pytest.approx(0.575, abs=0.01)
    # rotated, shifted (unwrapped) copy in a rotated cell gives the same values
    rng = np.random.default_rng(3)
    rot = lattices.random_rotation(rng)
    moved = ds.copy()
    pos = ds[names.VAR_POSITIONS].values.astype(np.float64) @ rot.T + np.array([50.0, -20.0, 7.0])
    moved[names.VAR_POSITIONS] = (ds[names.VAR_POSITIONS].dims, pos.astype(np.float32))
    moved[names.VAR_CELL] = (ds[names.VAR_CELL].dims, ds[names.VAR_CELL].values @ rot.T)
    s2 = analysis.steinhardt(moved, 0)
    np.testing.assert_allclose(s2["q6"].values, s["q6"].values, atol=1e-4)
    # noisy raw positions: averaged q6 lower than denoised; averaging sharpens relative to plain q6
    raw_avg = analysis.steinhardt(ds, 0, raw=True)
    raw_plain = analysis.steinhardt(ds, 0, raw=True, average=False, l=6)
    assert float(raw_avg["q6_mean"]) < float(s["q6_mean"])
    assert float(raw_avg["q6"].std()) < float(raw_plain["q6"].std())
    assert "q4" not in raw_plain


def test_steinhardt_triclinic_bcc():
    """A bcc crystal in its primitive (rhombohedral, triclinic) cell gives bcc q6 with 8 neighbours."""
    a = 3.0
    prim = 0.5 * a * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]], dtype=float)
    reps = 4
    grid = np.stack(np.meshgrid(*[np.arange(reps)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = grid @ prim
    cell = prim * reps
    ds = xr.Dataset(
        {
            names.VAR_POSITIONS: ((names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL), pos[None].astype(np.float32)),
            names.VAR_CELL: ((names.DIM_FRAME, names.DIM_CELL_VECTOR, names.DIM_SPATIAL), cell[None]),
        }
    )
    s = analysis.steinhardt(ds, 0, l=6, average=False, neighbors=8)
    # bcc with 8 nearest neighbours: q6 = 0.629
    np.testing.assert_allclose(s["q6"].values, 0.6285, atol=2e-3)
    # the same lattice in a sheared (non-symmetric) supercell: c -> c + a
    sheared = ds.copy()
    sheared[names.VAR_CELL] = ds[names.VAR_CELL].dims, (cell + np.array([[0, 0, 0], [0, 0, 0], cell[0]]))[None]
    s2 = analysis.steinhardt(sheared, 0, l=6, average=False, neighbors=8)
    np.testing.assert_allclose(s2["q6"].values, 0.6285, atol=2e-3)


def test_steinhardt_hcp_primitive_cell():
    """hcp in its (lower-triangular, non-symmetric) primitive cell: q4 = 0.097, q6 = 0.485."""
    a = 2.5
    c = a * np.sqrt(8 / 3)
    prim = np.array([[a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]])
    basis = np.array([[0, 0, 0], [1 / 3, 1 / 3, 0.5]])
    reps = np.array([5, 5, 3])
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    pos = ((grid[:, None, :] + basis[None]).reshape(-1, 3)) @ prim
    cell = prim * reps[:, None]
    ds = xr.Dataset(
        {
            names.VAR_POSITIONS: ((names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL), pos[None].astype(np.float32)),
            names.VAR_CELL: ((names.DIM_FRAME, names.DIM_CELL_VECTOR, names.DIM_SPATIAL), cell[None]),
        }
    )
    s = analysis.steinhardt(ds, -1, average=False)
    np.testing.assert_allclose(s["q4"].values, 0.0972, atol=2e-3)
    np.testing.assert_allclose(s["q6"].values, 0.4848, atol=2e-3)
    g = analysis.rdf(ds, 0, r_max=2.0 * a, bins=300)
    assert float(g.n_r.sel(r=1.2 * a, method="nearest")) == pytest.approx(12, abs=0.01)


# --- vibration averaging ------------------------------------------------------------------------


def test_vibration_average_reduces_rms():
    rng = np.random.default_rng(0)
    c = lattices.make_crystal("fcc", reps=(3, 3, 3), d_nn=2.5)
    n_frames = 60
    t = np.arange(n_frames)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (1, c.n_atoms, 3))
    vib = 0.15 * np.sin(2 * np.pi * t / 7.0 + phase) + 0.05 * rng.standard_normal((n_frames, c.n_atoms, 3))
    pos = (c.positions[None] + vib).astype(np.float32)
    avg = analysis.vibration_average(pos, window=15)
    assert avg.shape == pos.shape and avg.dtype == np.float32

    def rms(x):
        return float(np.sqrt(np.mean((x - c.positions[None]) ** 2)))

    assert rms(avg) < 0.35 * rms(pos)
    # the ends are averaged as well (truncated windows)
    assert rms(avg[:1]) < 0.7 * rms(pos[:1])
    # explicit window semantics: frame 0 averages frames 0..7, frame 30 averages frames 23..37
    np.testing.assert_allclose(avg[0], pos[:8].astype(np.float64).mean(0), atol=1e-5)
    np.testing.assert_allclose(avg[30], pos[23:38].astype(np.float64).mean(0), atol=1e-5)
    sym = analysis.vibration_average(pos, window=15, ends="symmetric")
    np.testing.assert_array_equal(sym[0], pos[0])
    np.testing.assert_allclose(sym[2], pos[:5].astype(np.float64).mean(0), atol=1e-5)
    np.testing.assert_allclose(sym[30], avg[30], atol=1e-6)
    np.testing.assert_array_equal(analysis.vibration_average(pos, 1), pos)
    # even window: frame f averages f - 1 ... f + 2
    even = analysis.vibration_average(pos, window=4)
    np.testing.assert_allclose(even[10], pos[9:13].astype(np.float64).mean(0), atol=1e-5)
    np.testing.assert_allclose(even[-1], pos[-2:].astype(np.float64).mean(0), atol=1e-5)
    with pytest.raises(ValueError):
        analysis.vibration_average(pos, 0)


def test_unwrap_orthogonal_crossing():
    cell = np.diag([10.0, 12.0, 14.0])
    # atom 0 drifts +x through the boundary; atom 1 drifts -y through it; atom 2 sits still
    true = np.zeros((6, 3, 3))
    true[:, 0] = [[9.0 + 0.6 * f, 5.0, 5.0] for f in range(6)]
    true[:, 1] = [[3.0, 1.0 - 0.7 * f, 2.0] for f in range(6)]
    true[:, 2] = [5.0, 6.0, 7.0]
    wrapped = analysis.wrap(true, cell)
    assert wrapped[3, 0, 0] < 2.0 and wrapped[3, 1, 1] > 10.0  # they did cross
    np.testing.assert_allclose(analysis.unwrap(wrapped, cell), true, atol=1e-9)
    # averaging the wrapped trajectory would be wrong; the unwrapped one is right
    avg = analysis.vibration_average(analysis.unwrap(wrapped, cell), 3)
    np.testing.assert_allclose(avg[2:4, 0, 0], [9.0 + 0.6 * 2, 9.0 + 0.6 * 3], atol=1e-9)


def test_unwrap_triclinic():
    rng = np.random.default_rng(5)
    cell = np.array([[10.0, 0.0, 0.0], [4.0, 9.0, 0.0], [-3.0, 2.5, 11.0]])
    n_frames = 20
    start = rng.uniform(0, 1, (8, 3)) @ cell
    steps = 0.4 * rng.standard_normal((n_frames, 8, 3))
    steps[0] = 0
    true = start[None] + np.cumsum(steps, axis=0) + np.array([0.9, 0, 0]) * np.arange(n_frames)[:, None, None]
    wrapped = analysis.wrap(true, cell)
    assert np.abs(wrapped - true).max() > 5  # atoms were wrapped
    np.testing.assert_allclose(analysis.unwrap(wrapped, cell), true, atol=1e-9)
    with pytest.raises(ValueError):
        analysis.unwrap(wrapped, np.broadcast_to(cell, (3, 3, 3)))


def test_unwrap_fluctuating_cell_has_no_jumps():
    rng = np.random.default_rng(6)
    base = np.array([[10.0, 0.0, 0.0], [4.0, 9.0, 0.0], [-3.0, 2.5, 11.0]])
    n_frames = 30
    cells = base[None] * (1 + 0.01 * rng.standard_normal((n_frames, 1, 1)))
    frac = rng.uniform(0, 1, (8, 3)) + np.cumsum(0.04 * rng.standard_normal((n_frames, 8, 3)), axis=0)
    frac += np.array([0.08, 0.0, -0.05]) * np.arange(n_frames)[:, None, None]
    wrapped = analysis.wrap(np.einsum("fnj,fjk->fnk", frac, cells), cells)
    un = analysis.unwrap(wrapped, cells)
    assert np.abs(np.diff(wrapped, axis=0)).max() > 5  # the wrapped trajectory jumps
    assert np.abs(np.diff(un, axis=0)).max() < 3.5  # the unwrapped one does not
    # each unwrapped step is the wrapped step less a lattice translation of the later frame's cell
    step_diff = np.diff(un, axis=0) - np.diff(wrapped, axis=0)
    shift = np.einsum("fni,fij->fnj", step_diff, np.linalg.inv(cells[1:]))
    np.testing.assert_allclose(shift, np.rint(shift), atol=1e-9)


# --- nuclei on real MD ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solidification_store(tmp_path_factory):
    """Three frames of the bundled LAMMPS run (fcc nucleus growing in undercooled Cu at 0.77 Tm), denoised."""
    from pathlib import Path

    import trajden
    from trajden.io.readers import Trajectory
    from trajden.pipeline import ProcessSettings, run

    dump = Path(trajden.__file__).parent / "data" / "cu_solidification.dump"
    out = tmp_path_factory.mktemp("nuc") / "s.zarr"
    run(Trajectory(str(dump)), [4, 8, 12], str(out), ProcessSettings(keep_raw=True, classifiers=("acna",)),
        progress=False)
    return out


def test_solid_like_finds_a_crystal_and_not_a_liquid():
    c = lattices.make_crystal("fcc", reps=(6, 6, 6), d_nn=2.55)
    rng = np.random.default_rng(0)
    hot = c.positions + 0.08 * 2.55 * rng.standard_normal(c.positions.shape)
    solid, largest = analysis.solid_like(hot, c.cell)
    assert solid.mean() > 0.95 and largest.sum() == solid.sum()
    gas = rng.random(c.positions.shape) @ c.cell
    assert analysis.solid_like(gas, c.cell)[0].mean() < 0.05


def test_denoising_does_not_grow_the_nucleus(solidification_store):
    """The denoised a-CNA nucleus matches the ten Wolde-Frenkel nucleus of the raw frame (the denoising-free
    nucleation measure) and is never larger by more than 3%; the raw a-CNA nucleus is much smaller."""
    sizes = analysis.nucleus_sizes(solidification_store, method="acna")
    den, raw, ref = (sizes[k].values.astype(float) for k in ("denoised", "raw", "solid_like"))
    ratio = den / ref
    assert np.all(ratio <= 1.03), ratio
    assert np.all(ratio >= 0.90), ratio
    assert np.all(raw < 0.8 * den)
    assert np.all(np.diff(den) > 0)  # it grows with time, as in the MD


def test_liquid_far_from_the_nucleus_stays_liquid(solidification_store):
    ds = xr.open_zarr(solidification_store, consolidated=False)
    checked = 0
    for i in range(ds.sizes[names.DIM_FRAME]):
        pos, cell = analysis.frame_arrays(ds, i)
        lab = ds[names.structure_var("acna")].values[i]
        nuc = analysis.largest_cluster(pos, cell, np.isin(lab, (names.FCC, names.HCP, names.BCC)), 1.2 * 2.56)
        L = np.diag(cell)  # orthogonal box: periodic (circular) mean for the centre, minimum-image distances
        theta = 2 * np.pi * pos[nuc] / L
        centre = L * (np.arctan2(np.sin(theta).mean(0), np.cos(theta).mean(0)) % (2 * np.pi)) / (2 * np.pi)
        dx = pos - centre
        dx -= L * np.round(dx / L)
        radius = (3 * nuc.sum() * 11.8 / (4 * np.pi)) ** (1 / 3)  # equivalent sphere, 11.8 A^3 per atom
        far = np.linalg.norm(dx, axis=1) > radius + 8.0
        if far.sum() < 200:
            continue
        checked += 1
        assert (lab[far] == names.OTHER).mean() > 0.9
    assert checked >= 2
