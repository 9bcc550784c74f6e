"""trajden reads the LAMMPS dumps and XYZ files shipped with MDAnalysis' tests as MDAnalysis reads them.

Every LAMMPS dump / lammpstrj and XYZ file of ``MDAnalysisTests.datafiles`` is read by MDAnalysis and by
:class:`trajden.io.readers.Trajectory`, as shipped and as plain, gzip, bz2 and xz copies with the final
newline toggled; frame count, atom ids, positions (1e-3 angstrom) and box must agree.

Coordinates: MDAnalysis' LAMMPSDUMP reader (2.11) returns ``P - (xlo, ylo, zlo)`` where ``P`` is the
unscaled column value, or ``s @ cell`` for scaled columns (it never adds the origin to scaled coordinates
but subtracts it all the same). trajden keeps the LAMMPS frame: ``P``, or ``origin + s @ cell``. So
trajden's positions equal MDAnalysis' plus the origin (unscaled) or plus twice the origin (scaled).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import warnings
from pathlib import Path

import MDAnalysis as mda
import MDAnalysisTests.datafiles as mdt
import numpy as np
import pytest
import xarray as xr
from MDAnalysis.lib.mdamath import triclinic_box

from trajden import names
from trajden.errors import InputError
from trajden.io.compression import strip_suffix
from trajden.io.readers import Trajectory

#: datafiles names of LAMMPS dumps and XYZ files (not TXYZ, not XTC)
FILES = sorted(
    k for k, v in vars(mdt).items()
    if isinstance(v, str) and not k.startswith("_")
    and any(s in v.lower() for s in (".lammpstrj", ".dump", ".xyz")) and not v.lower().endswith((".xtc", ".txyz"))
)
#: files MDAnalysis reads but trajden refuses, and why (asserted below, not skipped)
REFUSED = {
    # "a few zeros sprinkled in the first column": 3 atom lines of frame 0 have 6 fields under 5 columns;
    # MDAnalysis silently takes the first 5 (shifting that atom's coordinates), trajden names the line
    "LAMMPSDUMP_long": "frame 0, line 10: expected 5 columns",
}


def _mda(path):
    fmt = "XYZ" if ".xyz" in path.lower() else "LAMMPSDUMP"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path, format=fmt)


def _variant(path: str, kind: str, tmp: Path) -> str:
    if kind == "shipped":
        return path
    raw = Path(path).read_bytes()
    if path.endswith(".bz2"):
        raw = bz2.decompress(raw)
    name = Path(strip_suffix(path)).name
    if kind == "toggled_newline":
        raw = raw.rstrip(b"\n") if raw.endswith(b"\n") else raw + b"\n"
        out = tmp / name
        out.write_bytes(raw)
        return str(out)
    pack = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind]
    out = tmp / f"{name}.{kind}"
    out.write_bytes(pack(raw))
    return str(out)


@pytest.mark.parametrize("kind", ["shipped", "toggled_newline", "gz", "bz2", "xz"])
@pytest.mark.parametrize("name", FILES)
def test_reads_like_mdanalysis(name, kind, tmp_path):
    path = getattr(mdt, name)
    try:
        u = _mda(path)
    except Exception:  # noqa: BLE001 - a file MDAnalysis cannot read: trajden must refuse it with a one-line error
        with pytest.raises(InputError) as info:
            t = Trajectory(_variant(path, kind, tmp_path))
            [t.frame(i) for i in range(len(t))]
        assert "\n" not in str(info.value)
        return
    src = _variant(path, kind, tmp_path)
    if name in REFUSED:
        with pytest.raises(InputError, match=REFUSED[name]):
            t = Trajectory(src)
            [t.frame(i) for i in range(len(t))]
        return
    t = Trajectory(src)
    assert len(t) == len(u.trajectory)
    lammps = hasattr(u.trajectory, "lammps_coordinate_convention")
    ids = np.asarray(u.atoms.ids, dtype=np.int64) if hasattr(u.atoms, "ids") else np.arange(1, len(u.atoms) + 1)
    for i, ts in enumerate(u.trajectory):
        f = t.frame(i)
        np.testing.assert_array_equal(f.ids, np.sort(ids))
        expected = np.asarray(ts.positions, dtype=np.float64)
        if lammps:
            scaled = u.trajectory.lammps_coordinate_convention.startswith("scaled")
            expected = expected + (2.0 if scaled else 1.0) * f.origin
        np.testing.assert_allclose(f.positions, expected, rtol=0, atol=1e-3, err_msg=f"{name} frame {i}")
        if ts.dimensions is None:
            assert not np.any(f.cell) and not f.pbc.any()
        else:
            np.testing.assert_allclose(triclinic_box(*f.cell), ts.dimensions, rtol=0, atol=1e-3)


def test_the_file_list_covers_what_the_issue_names():
    paths = [getattr(mdt, k) for k in FILES]
    assert len(FILES) >= 15
    assert any(p.endswith(".bz2") for p in paths) and any(p.endswith(".xyz") for p in paths)
    assert "LAMMPSDUMP_additional_columns" in FILES  # pp pp ff
    assert "LAMMPSDUMP_triclinic" in FILES


def test_non_periodic_boundaries_are_recorded():
    t = Trajectory(mdt.LAMMPSDUMP_additional_columns)  # ITEM: BOX BOUNDS pp pp ff
    assert t.frame(0).pbc.tolist() == [True, True, False]
    assert Trajectory(mdt.LAMMPSDUMP_triclinic).frame(0).pbc.all()


def test_truncated_last_frame_is_dropped_with_a_warning(tmp_path):
    raw = bz2.decompress(Path(mdt.LAMMPSDUMP).read_bytes())  # 3 frames of 24 atoms
    cut = raw[: raw.rindex(b"\n", 0, len(raw) - 200)]  # the last frame loses some atom lines
    p = tmp_path / "cut.lammpstrj"
    p.write_bytes(cut)
    t = Trajectory(str(p))
    assert len(t) == 2
    assert any("frame 2: incomplete last frame" in w and str(p) in w for w in t.warnings)
    u = _mda(mdt.LAMMPSDUMP)
    for i in range(2):
        u.trajectory[i]
        np.testing.assert_allclose(t.frame(i).positions - 2 * t.frame(i).origin, u.atoms.positions, atol=1e-3)


# --- through `trajden process --keep-raw` ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["shipped", "toggled_newline", "gz", "bz2"])
@pytest.mark.parametrize("name", FILES)
def test_process_keeps_mdanalysis_positions(name, kind, tmp_path):
    """Every file MDAnalysis reads (and trajden does not refuse, above) through ``trajden process --keep-raw``
    (in this process: ``trajden.cli.main``): the store's frames, atom ids, raw positions and box are
    MDAnalysis' (trajden's positions are in the LAMMPS frame: MDAnalysis' plus the origin, see the module
    docstring)."""
    from trajden.cli import main

    path = getattr(mdt, name)
    try:
        u = _mda(path)
    except Exception:  # noqa: BLE001 - MDAnalysis cannot read it: refused by trajden (test_reads_like_mdanalysis)
        pytest.skip("MDAnalysis does not read this file; test_reads_like_mdanalysis asserts trajden refuses it")
    if name in REFUSED:
        pytest.skip(f"refused by trajden with a one-line error: {REFUSED[name]} (test_reads_like_mdanalysis)")
    src = _variant(path, kind, tmp_path)
    out = tmp_path / "s.zarr"
    # several atom types and no element names: trajden asks for --species (here: one element for types 1..max);
    # named elements: the model trajden chooses for them (none for more than two: left raw); otherwise the lite
    # model, one iteration. The raw positions stored are what this test compares
    first = Trajectory(src).frame(0)
    n_types = int(first.types.max())
    if first.elements is None:
        model = ["--model", "fcc-bcc-hcp-lite"] + (["--species", ",".join(["Cu"] * n_types)] if n_types > 1 else [])
    else:
        model = []
    rc = main(["process", src, "--out", str(out), "--keep-raw", "--serial", "--iterations", "1", "--torch-threads",
               "1", "--quiet", *model])
    assert rc == 0
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.sizes[names.DIM_FRAME] == len(u.trajectory)
    ids = np.asarray(u.atoms.ids, dtype=np.int64) if hasattr(u.atoms, "ids") else np.arange(1, len(u.atoms) + 1)
    np.testing.assert_array_equal(ds[names.COORD_ATOM_ID].values, np.sort(ids))
    lammps = hasattr(u.trajectory, "lammps_coordinate_convention")
    scaled = lammps and u.trajectory.lammps_coordinate_convention.startswith("scaled")
    for i, ts in enumerate(u.trajectory):
        expected = np.asarray(ts.positions, dtype=np.float64)
        if lammps:
            expected = expected + (2.0 if scaled else 1.0) * ds[names.VAR_ORIGIN].values[i]
        np.testing.assert_allclose(ds[names.VAR_POSITIONS_RAW].values[i], expected, rtol=0, atol=1e-3,
                                   err_msg=f"{name} ({kind}) frame {i}")
        if ts.dimensions is None:  # no box: non-periodic, in the atoms' bounding box (pipeline.check_frame)
            assert not ds[names.VAR_PBC].values[i].any()
            lo = ds[names.VAR_ORIGIN].values[i]
            hi = lo + np.diag(ds[names.VAR_CELL].values[i])
            assert (expected > lo).all() and (expected < hi).all()
        else:
            np.testing.assert_allclose(triclinic_box(*ds[names.VAR_CELL].values[i]), ts.dimensions, rtol=0,
                                       atol=1e-3)
