"""trajden.ase.denoise on one Atoms frame, and ASE-readable trajectories in ``trajden process``."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OVITO_THREAD_COUNT", "1")

import ase.io  # noqa: E402
from ase.io.trajectory import Trajectory as AseTrajectory  # noqa: E402

from trajden import names  # noqa: E402
from trajden.ase import denoise  # noqa: E402
from trajden.cli import main  # noqa: E402
from trajden.io.readers import Trajectory, resolve_format  # noqa: E402

MODEL, K = "fcc-bcc-hcp-lite", 2


@pytest.fixture(scope="module")
def frames(hot_fcc_dump):
    """The hot fcc frames as ase.Atoms (Cu, periodic)."""
    traj = Trajectory(hot_fcc_dump)
    out = []
    for i in (0, 1, 3):
        f = traj.frame(i)
        a = ase.Atoms("Cu" * f.n_atoms, positions=f.positions, cell=f.cell, pbc=True)
        a.info["step"] = f.step
        out.append(a)
    return out


def test_denoise_atoms(frames):
    from trajden.cluster import get_model
    from trajden.denoise import denoise as core

    atoms = frames[0]
    before = atoms.positions.copy()
    out = denoise(atoms, model=MODEL, iterations=K, raw_labels=True)
    assert out is not atoms and np.array_equal(atoms.positions, before)  # the input is left alone
    ref = core(before, atoms.cell.array, None, get_model(MODEL), k=K)
    np.testing.assert_array_equal(out.positions, ref.positions)
    np.testing.assert_array_equal(out.arrays[names.VAR_POSITIONS_RAW], before)
    ptm = out.arrays[names.structure_var(names.PTM)]
    assert ptm.shape == (len(atoms),) and ptm.dtype == np.int8
    # a hot fcc crystal: denoising turns most atoms fcc, more than the raw labels
    assert (ptm == names.FCC).mean() > 0.9 > (out.arrays[names.structure_var(names.PTM, raw=True)] == names.FCC).mean()
    assert out.info["trajden_iterations"] == ref.iterations and out.info["trajden_model"] == MODEL
    assert out.info["trajden_status"] in names.FRAME_STATUS_NAMES.values()


def test_denoise_needs_a_periodic_cell(frames):
    a = frames[0].copy()
    a.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic"):
        denoise(a, model=MODEL, iterations=1)


def test_resolve_format():
    assert resolve_format("run.traj") == "ASE"
    assert resolve_format("POSCAR") == "ASE"
    assert resolve_format("x.data", "ase:vasp-xdatcar") == "ASE:vasp-xdatcar"
    assert resolve_format("run.dump") == "lammpsdump"


def test_process_ase_traj_equals_dump(frames, hot_fcc_dump, tmp_path):
    import xarray as xr

    path = tmp_path / "run.traj"
    with AseTrajectory(str(path), "w") as t:
        for a in frames:
            t.write(a)
    # the same positions through an extxyz file read with --format ase (ASE's own reader, not trajden's XYZ one)
    xyz = tmp_path / "run.extxyz"
    ase.io.write(str(xyz), frames, format="extxyz")
    traj = Trajectory(str(path))
    assert (len(traj), traj.n_atoms) == (3, len(frames[0]))
    f = traj.frame(2)
    np.testing.assert_array_equal(f.positions, frames[2].positions)
    np.testing.assert_array_equal(f.cell, frames[2].cell.array)
    assert f.step == frames[2].info["step"] and set(f.types) == {1}
    stores = {}
    for name, src, extra in (("traj", path, []), ("ase", xyz, ["--format", "ase"]),
                             ("dump", hot_fcc_dump, ["--frames", "0:4:3"])):  # dump frames 0, 3
        out = tmp_path / f"{name}.zarr"
        argv = ["process", str(src), "--out", str(out), "--serial", "--quiet", "--model", MODEL, "--iterations",
                str(K), "--torch-threads", "1", *extra]
        if name != "dump":
            argv += ["--frames", "0:3:2"]
        assert main(argv) == 0
        stores[name] = xr.open_zarr(out, consolidated=False).load()
    for name in ("traj", "ase"):
        for v in (names.VAR_POSITIONS, names.structure_var(names.PTM), names.structure_var(names.ACNA)):
            assert np.array_equal(stores[name][v].values, stores["dump"][v].values), (name, v)


def test_unreadable_ase_file(tmp_path):
    bad = tmp_path / "bad.traj"
    bad.write_bytes(b"not a trajectory")
    with pytest.raises(Exception, match="bad.traj"):
        Trajectory(str(bad))
