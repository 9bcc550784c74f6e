"""The fast LAMMPS dump reader: agreement with MDAnalysis, box conventions, gzip, indexing, validation."""

from __future__ import annotations

import gzip
import pickle
import re
import warnings

import MDAnalysis as mda
import numpy as np
import pytest
from MDAnalysis.lib.mdamath import triclinic_box

from trajden.io.base import TS_DATA_KEYS
from trajden.io.lammps_dump import (
    LammpsDump,
    TrajdenDumpReader,
    TrajectoryError,
    build_index,
    format_frame,
    lammps_box_to_cell,
)

# MDAnalysis' own reader and parser warn about dt and masses on every use
pytestmark = pytest.mark.filterwarnings(
    "ignore:Reader has no dt information:UserWarning", "ignore:Guessed all Masses:UserWarning"
)

ORIGIN = np.array([1.5, -2.0, 0.25])


def make_cell(triclinic: bool) -> np.ndarray:
    cell = np.diag([10.0, 11.0, 12.0])
    if triclinic:
        cell[1, 0], cell[2, 0], cell[2, 1] = 1.5, -0.7, 0.9
    return cell


def make_frames(n=40, n_frames=3, triclinic=False, origin=ORIGIN, seed=0, unwrapped=False):
    """(positions, ids, types, cell, origin, step) per frame; positions in file order, ids shuffled."""
    rng = np.random.default_rng(seed)
    cell = make_cell(triclinic)
    out = []
    for f in range(n_frames):
        frac = rng.random((n, 3))
        if unwrapped:
            frac[:5] += rng.integers(-3, 4, size=(5, 3))
        pos = origin + frac @ cell
        ids = rng.permutation(n) + 1
        types = ids % 3 + 1
        out.append((pos, ids, types, cell, np.asarray(origin, dtype=float), 100 * f))
    return out


def frame_text(frame, coordinates="unscaled", time=None, extra=True) -> str:
    """One frame as LAMMPS writes it, with two extra columns (q, c_pe) unless ``extra`` is False."""
    pos, ids, types, cell, origin, step = frame
    ex = {"q": np.linspace(-1, 1, len(pos)), "c_pe": np.zeros(len(pos))} if extra else None
    return format_frame(pos, cell, origin, ids, types, step, time, coordinates, ex)


def write(path, frames, coordinates="unscaled", time=None, gz=False, extra=True, units=None):
    text = []
    for k, frame in enumerate(frames):
        t = None if time is None else time * k
        body = frame_text(frame, coordinates, t, extra)
        if units is not None and k == 0:
            body = f"ITEM: UNITS\n{units}\n" + body
        text.append(body)
    data = "".join(text).encode()
    path = str(path)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def sorted_truth(frame):
    pos, ids, types, cell, origin, step = frame
    o = np.argsort(ids)
    return pos[o], ids[o], types[o]


def mda_universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path, format="LAMMPSDUMP")


# ---------------------------------------------------------------------------------------------------
# agreement with MDAnalysis' own LAMMPSDUMP reader


@pytest.mark.parametrize("triclinic", [False, True], ids=["ortho", "tric"])
@pytest.mark.parametrize("coordinates", ["unscaled", "scaled", "unwrapped", "scaled_unwrapped"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_matches_mdanalysis(tmp_path, triclinic, coordinates, gz):
    # MDAnalysis converts scaled coordinates as s @ cell - origin (it subtracts the origin after
    # scaling, which is only right for a box at 0); compare scaled dumps with a box at the origin and check
    # the shifted-box case against the known positions in test_matches_ground_truth.
    origin = np.zeros(3) if coordinates.startswith("scaled") else ORIGIN
    frames = make_frames(triclinic=triclinic, origin=origin, unwrapped="unwrapped" in coordinates)
    path = write(tmp_path / ("t.dump.gz" if gz else "t.dump"), frames, coordinates, gz=gz)
    dump = LammpsDump(path)
    u = mda_universe(path)
    assert dump.n_frames == len(u.trajectory) == 3
    assert dump.n_atoms == len(u.atoms)
    np.testing.assert_array_equal(dump.read(0).ids, np.sort(u.atoms.ids))
    for i, ts in enumerate(u.trajectory):
        fr = dump.read(i)
        # MDAnalysis translates the box to the origin and stores float32
        np.testing.assert_allclose(fr.positions - fr.origin, ts.positions, atol=2e-5 * 12)
        np.testing.assert_allclose(triclinic_box(*fr.cell), ts.dimensions, rtol=1e-6)
        assert fr.step == ts.data["step"]
        np.testing.assert_array_equal(fr.ids, np.sort(u.atoms.ids))


@pytest.mark.parametrize("triclinic", [False, True], ids=["ortho", "tric"])
@pytest.mark.parametrize("coordinates", ["unscaled", "scaled", "unwrapped", "scaled_unwrapped"])
def test_matches_ground_truth(tmp_path, triclinic, coordinates):
    frames = make_frames(triclinic=triclinic, unwrapped="unwrapped" in coordinates)
    path = write(tmp_path / "t.lammpstrj", frames, coordinates)
    dump = LammpsDump(path)
    for i, frame in enumerate(frames):
        fr = dump.read(i)
        pos, ids, types = sorted_truth(frame)
        np.testing.assert_allclose(fr.positions, pos, rtol=0, atol=1e-8)
        np.testing.assert_array_equal(fr.ids, ids)
        np.testing.assert_array_equal(fr.types, types)
        np.testing.assert_allclose(fr.cell, frame[3], atol=1e-12)
        np.testing.assert_allclose(fr.origin, frame[4], atol=1e-12)
        assert fr.positions.dtype == np.float64 and fr.positions.flags.c_contiguous
        assert fr.ids.dtype == np.int64 and fr.types.dtype == np.int32
        assert fr.step == frame[5] and fr.time is None


def test_gzip_equals_plain(tmp_path):
    frames = make_frames(triclinic=True)
    a = LammpsDump(write(tmp_path / "a.dump", frames))
    b = LammpsDump(write(tmp_path / "a.dump.gz", frames, gz=True))
    assert b.index.gzip and not a.index.gzip
    for i in (2, 0, 1):  # out of order: the cached gzip handle must rewind
        fa, fb = a.read(i), b.read(i)
        np.testing.assert_array_equal(fa.positions, fb.positions)
        np.testing.assert_array_equal(fa.ids, fb.ids)


def test_mdanalysis_reader_class(tmp_path):
    frames = make_frames(triclinic=True)
    path = write(tmp_path / "t.dump", frames)
    ours = mda.Universe(path, format="TRAJDEN_LAMMPSDUMP")
    ref = mda_universe(path)
    assert len(ours.trajectory) == len(ref.trajectory) == 3
    np.testing.assert_array_equal(ours.atoms.ids, ref.atoms.ids)
    np.testing.assert_array_equal(ours.atoms.types, ref.atoms.types)
    for ts_ref, ts in zip(ref.trajectory, ours.trajectory):
        np.testing.assert_allclose(ts.positions, ts_ref.positions, atol=3e-4)
        np.testing.assert_allclose(ts.dimensions, ts_ref.dimensions, rtol=1e-6)
        assert ts.data["step"] == ts_ref.data["step"]
        assert ts.time == pytest.approx(ts.data["step"] * 0.001)
    ours.trajectory[1]
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.trajectory.ts.frame == 1
    np.testing.assert_allclose(copy.atoms.positions, ours.atoms.positions)
    # MDAnalysis' own format is untouched
    assert type(ref.trajectory).__name__ == "DumpReader"
    # and the reader can be combined with MDAnalysis' own topology parser
    u2 = mda.Universe(path, topology_format="LAMMPSDUMP", format="TRAJDEN_LAMMPSDUMP")
    assert len(u2.trajectory) == 3
    # the reader on its own
    reader = TrajdenDumpReader(path, timestep_ps=0.002)
    assert [ts.data["step"] for ts in reader] == [0, 100, 200]
    assert reader[2].time == pytest.approx(0.4) and reader.ts.dt == pytest.approx(0.2)
    np.testing.assert_allclose(reader[1].positions, ref.trajectory[1].positions, atol=3e-4)


def test_reader_timestep_data_is_the_frame(tmp_path):
    # ts.data holds what the Timestep cannot (trajden.io.base.TS_DATA_KEYS): the pipeline reads dumps from it
    frames = make_frames(triclinic=True)
    path = write(tmp_path / "t.dump", frames, time=0.5)
    dump = LammpsDump(path)
    reader = TrajdenDumpReader(path, index=dump.index, initial_frame=2)
    assert reader.ts.frame == 2 and reader._dump.index is dump.index
    assert set(TS_DATA_KEYS) <= set(reader.ts.data)
    ts = reader.read_timestep(1)
    assert ts is not reader.ts and reader.ts.frame == 2 and ts.frame == 1  # the reader's ts is left alone
    fr = dump.read(1)
    np.testing.assert_array_equal(ts.data["absolute_positions"], fr.positions)
    for key in ("cell", "origin", "ids", "types"):
        np.testing.assert_array_equal(ts.data[key], getattr(fr, key))
    assert (ts.data["step"], ts.data["pbc"], ts.data["elements"]) == (100, (True, True, True), None)
    assert ts.time == ts.data["time"] == pytest.approx(0.5) and ts.dt == pytest.approx(0.5)
    np.testing.assert_allclose(ts.positions, fr.positions - fr.origin, atol=1e-5)
    with pytest.raises(IndexError):
        reader.read_timestep(3)
    bare = reader.read_timestep(-1, positions=False)
    assert not bare.has_positions and bare.frame == 2
    np.testing.assert_array_equal(bare.data["absolute_positions"], reader.ts.data["absolute_positions"])


def test_general_triclinic_box_and_rotation_for_mda(tmp_path):
    # ITEM: BOX BOUNDS abc origin (LAMMPS general triclinic): rows a, b, c with the origin as 4th column
    a, b, c = np.array([8.0, 1.0, 0.5]), np.array([-1.0, 9.0, 0.3]), np.array([0.2, 0.4, 10.0])
    o = np.array([0.5, 1.0, -1.0])
    cell = np.array([a, b, c])
    frac = np.random.default_rng(1).random((5, 3))
    pos = o + frac @ cell
    lines = [
        "ITEM: TIMESTEP",
        "7",
        "ITEM: NUMBER OF ATOMS",
        "5",
        "ITEM: BOX BOUNDS abc origin pp pp pp",
        *(" ".join(repr(float(x)) for x in [*v, oo]) for v, oo in zip(cell, o)),
        "ITEM: ATOMS id type x y z",
        *(f"{k + 1} 1 " + " ".join(repr(float(x)) for x in p) for k, p in enumerate(pos)),
    ]
    path = tmp_path / "g.dump"
    path.write_text("\n".join(lines) + "\n")
    fr = LammpsDump(path).read(0)
    np.testing.assert_allclose(fr.cell, cell)
    np.testing.assert_allclose(fr.origin, o)
    np.testing.assert_allclose(fr.positions, pos)
    u = mda.Universe(str(path), format="TRAJDEN_LAMMPSDUMP")
    # MDAnalysis' cell is lower-triangular: positions are rotated with it, fractional coordinates agree
    box = mda.lib.mdamath.triclinic_vectors(u.dimensions)
    np.testing.assert_allclose(u.atoms.positions @ np.linalg.inv(box), frac, atol=1e-5)


def test_lammps_box_to_cell_follows_lammps_docs():
    # bounding box from https://docs.lammps.org/Howto_triclinic.html: xlo_bound = xlo + min(0, xy, xz, xy+xz), ...
    xlo, xhi, ylo, yhi, zlo, zhi = 0.0, 10.0, 1.0, 12.0, -2.0, 3.0
    xy, xz, yz = -2.0, 3.0, 1.5
    bounds = np.array(
        [
            [xlo + min(0, xy, xz, xy + xz), xhi + max(0, xy, xz, xy + xz), xy],
            [ylo + min(0, yz), yhi + max(0, yz), xz],
            [zlo, zhi, yz],
        ]
    )
    cell, origin = lammps_box_to_cell(bounds, "triclinic")
    np.testing.assert_allclose(cell, [[10, 0, 0], [xy, 11, 0], [xz, yz, 5]])
    np.testing.assert_allclose(origin, [xlo, ylo, zlo])
    cell, origin = lammps_box_to_cell(np.array([[0, 2], [1, 4], [-1, 1]]))
    np.testing.assert_allclose(cell, np.diag([2, 3, 2]))
    np.testing.assert_allclose(origin, [0, 1, -1])


# ---------------------------------------------------------------------------------------------------
# format variants


def test_time_units_and_extra_columns(tmp_path):
    frames = make_frames()
    fr = LammpsDump(write(tmp_path / "t.dump", frames, time=0.25)).read(2)
    assert fr.time == pytest.approx(0.5)
    idx = build_index(write(tmp_path / "r.dump", frames, time=10.0, units="real"))
    assert idx.units == "real"
    np.testing.assert_allclose(idx.times, [0.0, 0.01, 0.02])  # fs -> ps
    assert LammpsDump(idx.path).read(1).time == pytest.approx(0.01)
    idx = build_index(write(tmp_path / "n.dump", frames))
    assert np.isnan(idx.times).all()
    np.testing.assert_array_equal(idx.steps, [0, 100, 200])


def test_column_order_and_whitespace(tmp_path):
    pos, ids, types, cell, origin, step = make_frames(n=6, n_frames=1)[0]
    body = [f"{p[2]:.17g}   {t} {p[0]:.17g}\t{i} {p[1]:.17g} abc" for p, i, t in zip(pos, ids, types)]
    body[0] = "   " + body[0]
    text = format_frame(pos, cell, origin, ids, types, step).split("ITEM: ATOMS")[0]
    path = tmp_path / "w.dump"
    path.write_text(text + "ITEM: ATOMS z type x id y element\n" + "\n".join(body) + "\n")
    fr = LammpsDump(path).read(0)
    p, i, t = sorted_truth((pos, ids, types, cell, origin, step))
    np.testing.assert_allclose(fr.positions, p)
    np.testing.assert_array_equal(fr.ids, i)
    np.testing.assert_array_equal(fr.types, t)


def test_crlf_line_endings(tmp_path):
    frames = make_frames(n=5, n_frames=2)
    path = write(tmp_path / "c.dump", frames)
    crlf = tmp_path / "crlf.dump"
    crlf.write_bytes(open(path, "rb").read().replace(b"\n", b"\r\n"))
    a, b = LammpsDump(path), LammpsDump(crlf)
    assert b.n_frames == 2
    np.testing.assert_allclose(a.read(1).positions, b.read(1).positions)


def test_index_is_independent_of_chunk_size(tmp_path):
    frames = make_frames(n=30, n_frames=4, triclinic=True)
    for gz in (False, True):
        path = write(tmp_path / (f"c{gz}.dump" + (".gz" if gz else "")), frames, time=0.5, gz=gz)
        ref = build_index(path)
        for chunk in (3, 5, 7, 64, 1000):
            idx = build_index(path, chunk=chunk)
            for name in ("frame_start", "atoms_start", "atoms_end", "steps", "n_atoms"):
                np.testing.assert_array_equal(getattr(idx, name), getattr(ref, name), err_msg=f"{name} {chunk}")
            np.testing.assert_array_equal(idx.times, ref.times)
            assert idx.errors == ref.errors == {}


def test_time_before_timestep_belongs_to_next_frame(tmp_path):
    frames = make_frames(n=4, n_frames=3)
    path = write(tmp_path / "t.dump", frames, time=1.0)
    d = LammpsDump(path)
    assert [d.read(i).time for i in range(3)] == [0.0, 1.0, 2.0]
    assert [d.read(i).step for i in range(3)] == [0, 100, 200]


def test_pickle_without_open_files(tmp_path):
    frames = make_frames()
    d = LammpsDump(write(tmp_path / "t.dump.gz", frames, gz=True))
    d.read(1)
    d2 = pickle.loads(pickle.dumps(d))
    np.testing.assert_array_equal(d2.read(1).positions, d.read(1).positions)


# ---------------------------------------------------------------------------------------------------
# validation: every error is a one-line TrajectoryError naming the file (and the frame)


def _expect(path, frame: int | None, pattern: str, read: int | None = None, line: int | None = None):
    with pytest.raises(TrajectoryError) as info:
        d = LammpsDump(path)
        d.index  # noqa: B018
        if read is not None:
            d.read(read)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    if frame is not None:
        assert f"frame {frame}" in msg
    if line is not None:
        assert f"line {line}" in msg, msg
    assert re.search(pattern, msg), msg
    return msg


def lines_of(frames, coordinates="unscaled") -> list[str]:
    return "".join(frame_text(f, coordinates) for f in frames).splitlines()


def save(tmp_path, lines, name="bad.dump"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_empty_and_foreign_files(tmp_path):
    _expect(tmp_path / "nope.dump", None, "no such file")
    (tmp_path / "empty.dump").write_bytes(b"")
    _expect(tmp_path / "empty.dump", None, "empty")
    (tmp_path / "blank.dump").write_text("\n\n  \n")
    _expect(tmp_path / "blank.dump", None, "blank")
    (tmp_path / "x.dump").write_text("3\ncomment\nH 0 0 0\n")
    _expect(tmp_path / "x.dump", None, "not a LAMMPS text dump")
    (tmp_path / "bad.dump.gz").write_bytes(b"\x1f\x8bnot really gzip")
    _expect(tmp_path / "bad.dump.gz", None, "cannot read")


def test_truncated_last_frame_is_dropped_with_warning(tmp_path):
    frames = make_frames(n=10, n_frames=3)
    lines = lines_of(frames)
    for cut, why in ((len(lines) - 3, "atom lines"), (len(lines) - 13, "header")):
        path = save(tmp_path, lines[:cut], f"cut{cut}.dump")
        d = LammpsDump(path)
        assert d.n_frames == 2
        assert len(d.warnings) == 1 and str(path) in d.warnings[0] and "frame 2" in d.warnings[0]
        assert why in d.warnings[0]
        d.read(1)
    # a last line cut mid-number (no final newline) is incomplete too
    path = tmp_path / "mid.dump"
    path.write_text("\n".join(lines)[:-4])
    d = LammpsDump(path)
    assert d.n_frames == 2 and "frame 2" in d.warnings[0]
    # nothing complete at all
    path = save(tmp_path, lines[:12], "one.dump")
    _expect(path, None, "no complete frame")


def test_corrupted_line_in_the_middle(tmp_path):
    frames = make_frames(n=10, n_frames=3)
    lines = lines_of(frames)
    # frame 1 starts at line 20 (1-based); its atom lines are 29..38
    assert lines[19] == "ITEM: TIMESTEP" and lines[27].startswith("ITEM: ATOMS")
    bad = list(lines)
    bad[30] = bad[30].replace(bad[30].split()[2], "1.2.3x")
    path = save(tmp_path, bad, "nonnum.dump")
    _expect(path, 1, "not a number.*1.2.3x", read=1, line=31)
    d = LammpsDump(path)
    d.read(0), d.read(2)  # the other frames are fine
    bad = list(lines)
    bad[33] = " ".join(bad[33].split()[:-1])
    _expect(save(tmp_path, bad, "cols.dump"), 1, "expected 7 columns.*found 6", read=1, line=34)
    bad = list(lines)
    bad[33] = bad[33] + " 5.0"
    _expect(save(tmp_path, bad, "cols2.dump"), 1, "found 8", read=1, line=34)
    # an atom line missing in a middle frame
    bad = lines[:33] + lines[34:]
    _expect(save(tmp_path, bad, "short.dump"), 1, "incomplete frame: 9 complete atom lines, header says 10", read=1)
    # a corrupted header
    bad = list(lines)
    bad[20] = "12x"
    _expect(save(tmp_path, bad, "hdr.dump"), 1, "TIMESTEP", read=1, line=21)  # the bad line itself


def test_missing_coordinate_columns(tmp_path):
    frames = make_frames(n=4, n_frames=2)
    lines = [ln.replace(" x y z", " x y vz") if ln.startswith("ITEM: ATOMS") else ln for ln in lines_of(frames)]
    _expect(save(tmp_path, lines), 0, "no coordinate columns x y z, xs ys zs, xu yu zu or xsu ysu zsu", read=0, line=9)
    with pytest.raises(TrajectoryError, match="xs ys zs"):
        LammpsDump(save(tmp_path, lines_of(frames), "u.dump"), coordinates="scaled").read(0)


def test_atom_count_change(tmp_path):
    a = make_frames(n=10, n_frames=2)
    b = make_frames(n=9, n_frames=1, seed=3)
    path = save(tmp_path, lines_of(a) + lines_of(b))
    d = LammpsDump(path)
    assert d.n_frames == 3
    _expect(path, 2, "atom count 9 differs from 10", read=2, line=39)


@pytest.mark.parametrize("value", ["nan", "-nan", "inf", "-inf", "NaN"])
def test_non_finite_coordinates(tmp_path, value):
    lines = lines_of(make_frames(n=10, n_frames=2))
    fields = lines[31].split()
    fields[3] = value
    lines[31] = " ".join(fields)
    _expect(save(tmp_path, lines), 1, f"atom id {fields[0]} has a non-finite coordinate", read=1, line=32)


def test_zero_volume_box(tmp_path):
    lines = lines_of(make_frames(n=10, n_frames=2))
    lines[25] = "5.0 5.0"  # frame 1, y bounds
    _expect(save(tmp_path, lines), 1, "zero-volume", read=1)
    frames = make_frames(n=10, n_frames=1, triclinic=True)
    lines = lines_of(frames)
    lines[5] = "1.5 1.5 0.0"  # xlo_bound == xhi_bound with xy = 0 ...
    lines[6] = "0 0 0"
    _expect(save(tmp_path, lines, "t.dump"), 0, "zero-volume", read=0)


def test_duplicate_ids(tmp_path):
    frames = make_frames(n=10, n_frames=2)
    frames[1][1][3] = frames[1][1][7]
    dup = frames[1][1][3]
    _expect(save(tmp_path, lines_of(frames)), 1, f"duplicate atom id {dup}", read=1, line=29 + 7)


def test_atoms_far_outside_the_box(tmp_path):
    for triclinic in (False, True):
        frames = make_frames(n=10, n_frames=2, triclinic=triclinic)
        frames[1][0][4] = frames[1][4] + np.array([0.5, 0.5, -1.2]) @ frames[1][3]  # 1.2 box lengths below
        path = save(tmp_path, lines_of(frames), f"far{triclinic}.dump")
        _expect(path, 1, f"atom id {frames[1][1][4]} .* 1.2 box lengths outside", read=1, line=29 + 4)
        # just outside (less than one box length) is fine: LAMMPS wraps only on reneighbouring
        frames[1][0][4] = frames[1][4] + np.array([0.5, 0.5, -0.05]) @ frames[1][3]
        LammpsDump(save(tmp_path, lines_of(frames), f"near{triclinic}.dump")).read(1)
    # unwrapped coordinates may be anywhere
    frames = make_frames(n=10, n_frames=1)
    frames[0][0][2] += 50.0
    LammpsDump(save(tmp_path, lines_of(frames, coordinates="unwrapped"), "u.dump")).read(0)
