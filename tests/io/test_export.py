"""Tests of trajden.io.export: LAMMPS dump and extxyz round trips, rendered pictures."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import xarray as xr

from trajden import lattices, names
from trajden.io import export

N_FRAMES = 3


def make_store(cell=None, n_frames: int = N_FRAMES, seed: int = 0, raw_positions: bool = True) -> xr.Dataset:
    """fcc crystal (256 atoms) with an hcp band (along x) in the labels; raw labels mislabel 30 % of atoms.

    ``cell`` (rows) replaces the orthogonal cell: positions are mapped through fractional coordinates.
    """
    rng = np.random.default_rng(seed)
    c = lattices.make_crystal("fcc", reps=(4, 4, 4), d_nn=2.55)
    n = c.n_atoms
    pos0 = c.positions
    cell0 = c.cell
    if cell is not None:
        pos0 = pos0 @ np.linalg.solve(c.cell, cell)
        cell0 = np.asarray(cell, dtype=np.float64)
    den = pos0[None] + 0.01 * rng.standard_normal((n_frames, n, 3))
    raw = pos0[None] + 0.15 * rng.standard_normal((n_frames, n, 3))
    frac_x = (c.positions @ np.linalg.inv(c.cell))[:, 0]
    acna = np.where((frac_x > 0.3) & (frac_x < 0.55), names.HCP, names.FCC).astype(np.int8)
    acna = np.broadcast_to(acna, (n_frames, n)).copy()
    noisy = acna.copy()
    flip = rng.random(noisy.shape) < 0.3
    noisy[flip] = rng.choice([names.OTHER, names.HCP, names.BCC], size=flip.sum())
    ptm = acna.copy()
    ptm[:, ::17] = names.SC
    dims3 = (names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL)
    dims2 = (names.DIM_FRAME, names.DIM_ATOM)
    ds = xr.Dataset(
        {
            names.VAR_POSITIONS: (dims3, den.astype(np.float32)),
            names.VAR_CELL: (
                (names.DIM_FRAME, names.DIM_CELL_VECTOR, names.DIM_SPATIAL),
                np.broadcast_to(cell0, (n_frames, 3, 3)).copy(),
            ),
            names.VAR_TYPE: ((names.DIM_ATOM,), (1 + (np.arange(n) % 2)).astype(np.int32)),
            names.VAR_COMPLETE: ((names.DIM_FRAME,), np.ones(n_frames, dtype=bool)),
            names.VAR_DISPLACEMENT: (dims2, np.linalg.norm(den - raw, axis=-1).astype(np.float32)),
            names.structure_var("acna"): (dims2, acna),
            names.structure_var("acna", raw=True): (dims2, noisy),
            names.structure_var("ptm"): (dims2, ptm),
        },
        coords={
            names.COORD_TIME: ((names.DIM_FRAME,), np.arange(n_frames) * 0.5),
            names.COORD_STEP: ((names.DIM_FRAME,), np.arange(n_frames, dtype=np.int64) * 250),
            names.COORD_ATOM_ID: ((names.DIM_ATOM,), np.arange(n, dtype=np.int64) * 3 + 7),
        },
    )
    if raw_positions:
        ds[names.VAR_POSITIONS_RAW] = (dims3, raw.astype(np.float32))
    return ds


def read_dump_numpy(path):
    """Parse a LAMMPS text dump: list of (step, bounds_header, bounds (3, k), columns, data (N, ncol))."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        lines = fh.read().splitlines()
    frames, i = [], 0
    while i < len(lines):
        assert lines[i] == "ITEM: TIMESTEP"
        step = int(lines[i + 1])
        n = int(lines[i + 3])
        bounds_header = lines[i + 4]
        bounds = np.array([[float(v) for v in lines[i + 5 + k].split()] for k in range(3)])
        cols = lines[i + 8].split()[2:]
        data = np.array([[float(v) for v in ln.split()] for ln in lines[i + 9 : i + 9 + n]])
        frames.append((step, bounds_header, bounds, cols, data))
        i += 9 + n
    return frames


@pytest.mark.filterwarnings("ignore:Guessed all Masses:UserWarning", "ignore:Reader has no dt:UserWarning")
def test_dump_roundtrip_mdanalysis(tmp_path):
    mda = pytest.importorskip("MDAnalysis")
    ds = make_store()
    path = export.export_dump(ds, tmp_path / "out.dump")
    label_vars = [names.structure_var("acna"), names.structure_var("ptm"), names.structure_var("acna", raw=True)]
    u = mda.Universe(path, format="LAMMPSDUMP", additional_columns=label_vars)
    assert len(u.trajectory) == N_FRAMES
    ids = ds[names.COORD_ATOM_ID].values
    np.testing.assert_array_equal(u.atoms.ids, ids)  # sorted already
    for f, ts in enumerate(u.trajectory):
        np.testing.assert_allclose(u.atoms.positions, ds[names.VAR_POSITIONS].values[f], atol=1e-5)
        np.testing.assert_allclose(ts.dimensions[:3], np.diag(ds[names.VAR_CELL].values[f]), rtol=1e-6)
        np.testing.assert_allclose(ts.dimensions[3:], 90.0)
        assert ts.data["step"] == ds[names.COORD_STEP].values[f]
        for v in label_vars:
            np.testing.assert_array_equal(np.asarray(ts.data[v]).astype(int), ds[v].values[f])


def test_dump_numpy_columns_raw_and_gzip(tmp_path):
    ds = make_store()
    path = export.export_dump(ds, tmp_path / "raw.dump.gz", frames=[2, 0], raw=True)
    with gzip.open(path, "rt") as fh:
        assert fh.readline() == "ITEM: TIMESTEP\n"
    frames = read_dump_numpy(path)
    assert [f[0] for f in frames] == [500, 0]
    step, header, bounds, cols, data = frames[0]
    assert header == "ITEM: BOX BOUNDS pp pp pp"
    assert cols == [
        "id",
        "type",
        "x",
        "y",
        "z",
        "structure_acna",
        "structure_ptm",
        "structure_acna_raw",
        "displacement",
    ]
    np.testing.assert_array_equal(data[:, 0], ds[names.COORD_ATOM_ID].values)
    np.testing.assert_array_equal(data[:, 1], ds[names.VAR_TYPE].values)
    # raw positions exactly (float32 written with 9 significant digits)
    np.testing.assert_array_equal(data[:, 2:5].astype(np.float32), ds[names.VAR_POSITIONS_RAW].values[2])
    np.testing.assert_array_equal(data[:, 7], ds[names.structure_var("acna", raw=True)].values[2])
    np.testing.assert_allclose(data[:, 8], ds[names.VAR_DISPLACEMENT].values[2], rtol=1e-5)


def test_dump_skips_incomplete_and_requires_raw(tmp_path):
    ds = make_store(raw_positions=False)
    ds[names.VAR_COMPLETE][1] = False
    frames = read_dump_numpy(export.export_dump(ds, tmp_path / "a.dump"))
    assert [f[0] for f in frames] == [0, 500]
    with pytest.raises(KeyError, match="positions_raw"):
        export.export_dump(ds, tmp_path / "b.dump", raw=True)


TRICLINIC = np.array([[20.0, 0.0, 0.0], [3.0, 19.0, 0.0], [-2.0, 4.0, 18.0]])


def test_dump_triclinic_lammps_form(tmp_path):
    ds = make_store(cell=TRICLINIC)
    frames = read_dump_numpy(export.export_dump(ds, tmp_path / "tri.dump", frames=0))
    _, header, bounds, _, data = frames[0]
    assert header == "ITEM: BOX BOUNDS xy xz yz pp pp pp"
    xy, xz, yz = bounds[0, 2], bounds[1, 2], bounds[2, 2]
    assert (xy, xz, yz) == (3.0, -2.0, 4.0)
    # LAMMPS: bounds include the tilt extents
    assert bounds[0, 0] == min(0.0, xy, xz, xy + xz) and bounds[0, 1] == 20.0 + max(0.0, xy, xz, xy + xz)
    assert bounds[1, 0] == min(0.0, yz) and bounds[1, 1] == 19.0 + max(0.0, yz)
    assert list(bounds[2, :2]) == [0.0, 18.0]
    # already in LAMMPS orientation: positions unchanged
    np.testing.assert_array_equal(data[:, 2:5].astype(np.float32), ds[names.VAR_POSITIONS].values[0])


@pytest.mark.filterwarnings("ignore:Guessed all Masses:UserWarning", "ignore:Reader has no dt:UserWarning")
def test_dump_rotated_triclinic_mdanalysis(tmp_path):
    mda = pytest.importorskip("MDAnalysis")
    rot = lattices.random_rotation(np.random.default_rng(4))
    ds = make_store(cell=TRICLINIC @ rot.T)
    path = export.export_dump(ds, tmp_path / "rot.dump")
    u = mda.Universe(path, format="LAMMPSDUMP")
    # same cell shape (lengths and angles) as the ideal one
    from MDAnalysis.lib.mdamath import triclinic_box

    np.testing.assert_allclose(u.trajectory[1].dimensions, triclinic_box(*TRICLINIC), rtol=1e-5)
    # positions rotated into LAMMPS orientation: distances preserved, rotation undone
    pos = u.trajectory[1].positions
    np.testing.assert_allclose(pos, ds[names.VAR_POSITIONS].values[1] @ rot, atol=2e-4)


def test_extxyz_roundtrip(tmp_path):
    from ase.io import read

    ds = make_store(cell=TRICLINIC)
    path = export.export_extxyz(ds, tmp_path / "t.extxyz.gz", symbols={1: "Cu", 2: "Ni"})
    with gzip.open(path, "rt") as fh:
        images = read(fh, index=":", format="extxyz")
    assert len(images) == N_FRAMES
    for f, atoms in enumerate(images):
        np.testing.assert_allclose(atoms.positions, ds[names.VAR_POSITIONS].values[f], atol=1e-5)
        np.testing.assert_allclose(atoms.cell[:], ds[names.VAR_CELL].values[f], atol=1e-6)
        np.testing.assert_array_equal(atoms.arrays["structure_acna_raw"], ds["structure_acna_raw"].values[f])
        np.testing.assert_array_equal(atoms.arrays["id"], ds[names.COORD_ATOM_ID].values)
        assert atoms.info["step"] == ds[names.COORD_STEP].values[f]
        assert atoms.get_chemical_symbols()[:2] == ["Cu", "Ni"]
    # plain text, raw positions; a store recording no elements gives "X" (never the type as atomic number)
    path2 = export.export_extxyz(ds, tmp_path / "t.xyz", frames=[-1], raw=True)
    (atoms,) = read(path2, index=":", format="extxyz")
    np.testing.assert_allclose(atoms.positions, ds[names.VAR_POSITIONS_RAW].values[-1], atol=1e-5)
    assert set(atoms.get_chemical_symbols()) == {"X"}
    np.testing.assert_array_equal(atoms.arrays["type"], ds[names.VAR_TYPE].values)


def test_lammps_cell_rejects_left_handed():
    with pytest.raises(ValueError, match="right-handed"):
        export.lammps_cell(np.diag([1.0, 1.0, -1.0]))


@pytest.mark.parametrize("cell", [None, TRICLINIC])
def test_render_matplotlib(tmp_path, cell):
    ds = make_store(cell=cell)
    out = export.render_frame(ds, 1, tmp_path / "frame.png", method="acna", renderer="matplotlib")
    assert export.last_renderer == "matplotlib"
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.shape[1] > 1.5 * img.shape[0] > 500  # two panels side by side
    assert (tmp_path / "frame.png").stat().st_size > 20_000
    # coloured: green (fcc) and red (hcp) pixels exist
    rgb = img[..., :3]
    green = (rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.6) & (rgb[..., 2] < 0.6)
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.6) & (rgb[..., 2] < 0.6)
    assert green.sum() > 1000 and red.sum() > 100


def test_render_auto_falls_back_and_without_raw_positions(tmp_path):
    ds = make_store(raw_positions=False)
    out = export.render_frame(ds, 0, tmp_path / "auto.png", method="ptm", slab={"min": 0.0, "max": 4.0})
    assert export.last_renderer in ("ovito", "matplotlib")
    assert (tmp_path / "auto.png").stat().st_size > 20_000
    assert out.endswith("auto.png")
    with pytest.raises(KeyError):
        export.render_frame(ds.drop_vars(["structure_ptm"]), 0, tmp_path / "x.png", method="ptm")
