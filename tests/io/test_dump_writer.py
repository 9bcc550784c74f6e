"""Tests of trajden.io.dump_writer: the one LAMMPS text-dump writer, read back by trajden, MDAnalysis, ASE, OVITO."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pytest

from trajden.io.dump_writer import format_frame, write_dump, write_frame
from trajden.io.lammps_dump import LammpsDump

ROOT = Path(__file__).resolve().parents[2]
CELL = np.array([[12.0, 0.0, 0.0], [1.5, 11.0, 0.0], [-0.8, 2.1, 13.0]])  # triclinic, lower-triangular
ORIGIN = np.array([-3.123456789012345, 0.4172, 12.5])
PBC = (True, True, False)


def _frame(seed: int = 0, n: int = 60) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "positions": ORIGIN + rng.random((n, 3)) @ CELL,
        "cell": CELL,
        "origin": ORIGIN,
        "ids": rng.permutation(n) * 3 + 5,
        "types": np.arange(n) % 2 + 1,
        "elements": np.where(np.arange(n) % 2, "Zn", "Cu"),
        "extra": {"label": rng.integers(-1, 5, n), "energy": rng.normal(-3.5, 0.2, n)},
        "step": 400 + 100 * seed,
        "time": 0.4 + 0.1 * seed,
        "pbc": PBC,
    }


def _atoms_header(path) -> list[str]:
    with open(path) as fh:
        return next(line for line in fh if line.startswith("ITEM: ATOMS")).split()[2:]


def test_frame_reads_back_with_lammps_dump(tmp_path):
    """Triclinic box, pp pp ff, TIME, elements, an int and a float column: LammpsDump reads back what was written."""
    frames = [_frame(0), _frame(1)]
    path = write_dump(tmp_path / "w.dump", frames, float_format="%.10g")
    assert _atoms_header(path) == ["id", "type", "element", "x", "y", "z", "label", "energy"]
    text = Path(path).read_text()
    assert text.startswith("ITEM: TIME\n0.4\nITEM: TIMESTEP\n400\n")
    assert "ITEM: BOX BOUNDS xy xz yz pp pp ff\n" in text
    dump = LammpsDump(path)
    assert dump.n_frames == 2
    for k, want in enumerate(frames):
        got = dump.read(k)
        order = np.argsort(want["ids"])  # the reader sorts atoms by id
        assert got.step == want["step"]
        assert got.time == pytest.approx(want["time"])
        np.testing.assert_allclose(got.cell, CELL, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.origin, ORIGIN, rtol=0, atol=1e-12)
        assert tuple(got.pbc) == PBC
        np.testing.assert_array_equal(got.ids, want["ids"][order])
        np.testing.assert_array_equal(got.types, want["types"][order])
        np.testing.assert_array_equal(got.elements, want["elements"][order])
        np.testing.assert_allclose(got.positions, want["positions"][order], rtol=0, atol=1e-6)
    # the extra columns, parsed from the text: the int column as written, the float one to 10 digits
    lines = text.splitlines()
    first = lines.index("ITEM: ATOMS id type element x y z label energy") + 1
    rows = [ln.split() for ln in lines[first : first + 60]]
    assert [int(r[6]) for r in rows] == frames[0]["extra"]["label"].tolist()
    np.testing.assert_allclose([float(r[7]) for r in rows], frames[0]["extra"]["energy"], rtol=1e-9)
    assert all(ln.endswith(" ") for ln in lines[first : first + 60])  # LAMMPS's trailing space


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_frame_reads_back_with_mdanalysis_ase_and_ovito(tmp_path):
    frames = [_frame(0), _frame(1)]
    path = write_dump(tmp_path / "w.dump", frames, float_format="%.10g")
    order = np.argsort(frames[1]["ids"])
    want = frames[1]["positions"][order]

    mda = pytest.importorskip("MDAnalysis")
    from MDAnalysis.lib.mdamath import triclinic_vectors

    # MDAnalysis expects ITEM: TIMESTEP on the first line of a frame: the same frames without ITEM: TIME
    no_time = write_dump(tmp_path / "no_time.dump", [{**f, "time": None} for f in frames], float_format="%.10g")
    u = mda.Universe(no_time, format="LAMMPSDUMP", additional_columns=["label", "energy"])
    assert u.trajectory.n_frames == 2
    ts = u.trajectory[1]
    np.testing.assert_allclose(triclinic_vectors(ts.dimensions), CELL, atol=1e-4)
    np.testing.assert_allclose(ts.positions, want - ORIGIN, atol=1e-4)  # MDAnalysis shifts the box to 0
    np.testing.assert_array_equal(u.atoms.ids, frames[0]["ids"][np.argsort(frames[0]["ids"])])
    np.testing.assert_allclose(ts.data["label"], frames[1]["extra"]["label"][order])
    np.testing.assert_allclose(ts.data["energy"], frames[1]["extra"]["energy"][order], rtol=1e-9)

    ase_io = pytest.importorskip("ase.io")
    atoms = ase_io.read(path, format="lammps-dump-text", index=":")
    assert len(atoms) == 2
    a = atoms[1]
    assert list(a.pbc) == list(PBC)
    np.testing.assert_allclose(a.cell.array, CELL, atol=1e-9)
    by_id = np.argsort(a.arrays["id"]) if "id" in a.arrays else np.arange(len(a))
    np.testing.assert_allclose(a.positions[by_id], want, atol=1e-6)  # ASE keeps the LAMMPS frame
    assert a.get_chemical_symbols() == list(frames[1]["elements"][order])

    os.environ.setdefault("OVITO_THREAD_COUNT", "1")
    ovito_io = pytest.importorskip("ovito.io")
    pipe = ovito_io.import_file(str(path))
    assert pipe.source.num_frames == 2
    data = pipe.compute(1)
    oid = np.asarray(data.particles["Particle Identifier"])
    np.testing.assert_allclose(np.asarray(data.particles.positions)[np.argsort(oid)], want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(data.cell)[:, :3].T, CELL, atol=1e-9)
    np.testing.assert_allclose(np.asarray(data.cell)[:, 3], ORIGIN, atol=1e-9)
    assert list(data.cell.pbc) == list(PBC)


def test_text_binary_gzip_and_format_frame_agree(tmp_path):
    frame = _frame(2)
    text = io.StringIO()
    write_frame(text, **frame)
    binary = io.BytesIO()
    write_frame(binary, **frame)
    assert binary.getvalue().decode("ascii") == text.getvalue()
    write_dump(tmp_path / "w.dump.gz", [frame])
    assert gzip.open(tmp_path / "w.dump.gz").read() == binary.getvalue()
    plain = {k: frame[k] for k in ("positions", "cell", "origin", "ids", "types", "step", "time", "elements")}
    assert format_frame(**plain) == write_frame_text(pbc=None, **plain)


def write_frame_text(**kwargs) -> str:
    out = io.StringIO()
    write_frame(out, **kwargs)
    return out.getvalue()


def test_formats_bounds_and_pyarrow_body():
    pos = np.array([[0.0, 1e-5, 50.0], [1.25, 99.5, 3.0]])
    cell = np.diag([100.0, 100.0, 100.0])
    fast = write_frame_text(positions=pos, cell=cell, ids=[7, 3], float_format=None, bounds_format="g")
    assert fast.splitlines()[5:10] == ["0 100", "0 100", "0 100", "ITEM: ATOMS id type x y z", "7 1 0 0.00001 50 "]
    fixed = write_frame_text(positions=pos, cell=cell, float_format="%.3f", formats={"z": "%.1e"},
                             bounds_format=".16e", trailing_space=False)
    assert fixed.splitlines()[5] == "0.0000000000000000e+00 1.0000000000000000e+02"
    assert fixed.splitlines()[-1] == "2 1 1.250 99.500 3.0e+00"
    scaled = write_frame_text(positions=pos, cell=cell, coordinates="scaled", float_format="%.6g")
    assert scaled.splitlines()[8] == "ITEM: ATOMS id type xs ys zs"
    assert scaled.splitlines()[-1] == "2 1 0.0125 0.995 0.03 "
    with pytest.raises(ValueError, match="float_format"):
        write_frame_text(positions=pos, cell=cell, float_format=None, formats={"x": "%.3f"})
    with pytest.raises(ValueError, match="lower-triangular"):
        write_frame_text(positions=pos, cell=np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="shape"):
        write_frame_text(positions=pos, cell=cell, extra={"q": np.zeros(3)})


def test_write_frame_is_the_only_dump_writer():
    """Every LAMMPS dump trajden and its pipelines write goes through trajden/io/dump_writer.py."""
    allowed = {ROOT / "trajden" / "io" / "dump_writer.py", ROOT / "trajden" / "io" / "lammps_dump.py"}
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("trajden", "pipelines")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p not in allowed and "ITEM: BOX BOUNDS" in p.read_text()
    ]
    assert offenders == []
