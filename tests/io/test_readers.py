"""The format-independent Trajectory / Frame interface: selection, concatenation, pickling, other formats."""

from __future__ import annotations

import gzip
import pickle
import warnings
from collections import OrderedDict

import ase
import ase.io
import MDAnalysis as mda
import numpy as np
import pytest

from trajden.io import base, lammps_dump, readers
from trajden.io.lammps_dump import TrajdenDumpReader, format_frame
from trajden.io.readers import Frame, Trajectory, TrajectoryError, parse_frames, resolve_format

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CELL = np.array([[10.0, 0.0, 0.0], [1.0, 11.0, 0.0], [-0.5, 0.7, 12.0]])
ORIGIN = np.array([1.0, -2.0, 0.5])


def dump_text(n=20, steps=(0, 100, 200), seed=0, time=None, ids=None) -> tuple[str, list[np.ndarray]]:
    """A dump with shuffled atom order; returns the text and the positions sorted by id per frame."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)
    text, truth = [], []
    for k, step in enumerate(steps):
        pos = ORIGIN + rng.random((n, 3)) @ CELL
        order = rng.permutation(n)
        t = None if time is None else time * k
        text.append(format_frame(pos[order], CELL, ORIGIN, ids[order], ids[order] % 2 + 1, step, t))
        truth.append(pos)
    return "".join(text), truth


def write_dump(path, **kw) -> tuple[str, list[np.ndarray]]:
    text, truth = dump_text(**kw)
    path = str(path)
    if path.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)
    return path, truth


# ---------------------------------------------------------------------------------------------------
# parse_frames


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, list(range(10))),
        ("", list(range(10))),
        ("all", list(range(10))),
        (":", list(range(10))),
        ("2:8:3", [2, 5]),
        ("::4", [0, 4, 8]),
        ("-3:", [7, 8, 9]),
        (":-8", [0, 1]),
        ("5", [5]),
        ("-1", [9]),
        ("8:100", [8, 9]),
        ("::-3", [9, 6, 3, 0]),
        (" 1 : 3 ", [1, 2]),
    ],
)
def test_parse_frames(spec, expected):
    assert parse_frames(spec, 10) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("a:b", "must be integers"),
        ("1.5:3", "must be integers"),
        ("1:2:3:4", "START:STOP:STEP"),
        ("::0", "STEP must not be zero"),
        ("10", "out of range"),
        ("-11", "out of range"),
        ("20:30", "selects no frames"),
    ],
)
def test_parse_frames_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_frames(spec, 10)


# ---------------------------------------------------------------------------------------------------
# LAMMPS dumps through Trajectory


def test_frame_fields(tmp_path):
    path, truth = write_dump(tmp_path / "a.dump")
    traj = Trajectory(path)
    assert (traj.n_frames, traj.n_atoms, len(traj), traj.paths) == (3, 20, 3, [path])
    assert traj.warnings == []
    fr = traj.frame(1)
    assert isinstance(fr, Frame)
    assert (fr.index, fr.step, fr.source) == (1, 100, path)
    assert fr.time == pytest.approx(0.1)  # metal units: 0.001 ps per step
    np.testing.assert_allclose(fr.positions, truth[1], atol=1e-8)
    np.testing.assert_allclose(fr.cell, CELL)
    np.testing.assert_allclose(fr.origin, ORIGIN)
    np.testing.assert_array_equal(fr.ids, np.arange(1, 21))
    np.testing.assert_array_equal(fr.types, np.arange(1, 21) % 2 + 1)
    assert fr.positions.dtype == np.float64 and fr.positions.shape == (20, 3)
    assert fr.ids.dtype == np.int64 and fr.types.dtype == np.int32
    assert traj.frame(-1).index == 2
    assert [f.step for f in traj] == [0, 100, 200]
    np.testing.assert_array_equal(traj.steps, [0, 100, 200])
    np.testing.assert_allclose(traj.times, [0.0, 0.1, 0.2])
    assert [traj.frame_time_step(i) for i in range(3)] == [(f.time, f.step) for f in traj]
    with pytest.raises(IndexError):
        traj.frame(3)


def test_time_from_dump_and_timestep(tmp_path):
    path, _ = write_dump(tmp_path / "a.dump", time=0.5)
    assert Trajectory(path, timestep_ps=0.002).frame(2).time == pytest.approx(1.0)  # ITEM: TIME wins
    assert Trajectory(path, timestep_ps=0.002).frame_time_step(2) == (pytest.approx(1.0), 200)
    path, _ = write_dump(tmp_path / "b.dump")
    traj = Trajectory(path, timestep_ps=0.002)
    assert traj.frame(2).time == pytest.approx(0.4)
    np.testing.assert_allclose(traj.times, [0.0, 0.2, 0.4])


def test_format_detection(tmp_path):
    text, _ = dump_text()
    for name in ("dump.melt", "x.lammpstrj", "x.dump.gz", "traj.txt"):
        p = tmp_path / name
        if name.endswith(".gz"):
            with gzip.open(p, "wt") as f:
                f.write(text)
        else:
            p.write_text(text)
        assert resolve_format(str(p)) == "lammpsdump"
        assert Trajectory(str(p)).n_frames == 3
    assert resolve_format("x.xtc") == "XTC"
    assert resolve_format("x.extxyz") == "extxyz"
    assert resolve_format("anything", "LAMMPSDUMP") == "lammpsdump"
    assert resolve_format("anything", "gro") == "GRO"


def test_multi_file_concatenation(tmp_path):
    a, ta = write_dump(tmp_path / "a.dump", steps=(0, 100), seed=1)
    b, tb = write_dump(tmp_path / "b.dump.gz", steps=(200, 300, 400), seed=2)
    traj = Trajectory([a, b])
    assert traj.n_frames == 5 and traj.paths == [a, b]
    assert [f.index for f in traj] == [0, 1, 2, 3, 4]
    assert [f.step for f in traj] == [0, 100, 200, 300, 400]
    assert traj.frame(3).source == b
    assert traj.locate(3) == (1, 1)
    np.testing.assert_allclose(traj.frame(3).positions, tb[1], atol=1e-8)
    np.testing.assert_allclose(traj.frame(1).positions, ta[1], atol=1e-8)
    np.testing.assert_array_equal(traj.steps, [0, 100, 200, 300, 400])


def test_glob_in_natural_order(tmp_path):
    for k in (10, 2, 1):
        write_dump(tmp_path / f"dump.{k}.lammpstrj", steps=(k,), seed=k)
    traj = Trajectory(str(tmp_path / "dump.*.lammpstrj"))
    assert [f.step for f in traj] == [1, 2, 10]
    with pytest.raises(TrajectoryError, match="no file matches"):
        Trajectory(str(tmp_path / "nothing.*.dump"))


def test_files_with_different_atoms(tmp_path):
    a, _ = write_dump(tmp_path / "a.dump", n=20)
    b, _ = write_dump(tmp_path / "b.dump", n=19)
    with pytest.raises(TrajectoryError, match=r"b\.dump: frame 0: atom count 19 differs from 20"):
        Trajectory([a, b])
    c, _ = write_dump(tmp_path / "c.dump", n=20, ids=np.arange(2, 22))
    traj = Trajectory([a, c])
    traj.frame(2)
    with pytest.raises(TrajectoryError, match=r"c\.dump: frame 1: atom ids differ .*\[trajectory frame 4\]"):
        traj.frame(4)


def test_bad_frames_name_file_and_frame(tmp_path):
    a, _ = write_dump(tmp_path / "a.dump")
    text, _ = dump_text(seed=3)
    lines = text.splitlines()
    lines[41] = lines[41].replace(lines[41].split()[2], "oops")  # frame 1 of b, 4th atom line (line 42)
    b = tmp_path / "b.dump"
    b.write_text("\n".join(lines) + "\n")
    traj = Trajectory([a, str(b)])
    assert traj.frame_time_step(4) == (pytest.approx(0.1), 100)  # the header is fine
    with pytest.raises(TrajectoryError) as info:
        traj.frame(4)
    msg = str(info.value)
    assert str(b) in msg and "frame 1, line 42" in msg and "trajectory frame 4" in msg
    traj.frame(5)


def test_missing_and_truncated(tmp_path):
    with pytest.raises(TrajectoryError, match="nope.dump: no such file"):
        Trajectory(str(tmp_path / "nope.dump"))
    text, _ = dump_text()
    p = tmp_path / "t.dump"
    p.write_text(text[:-30])
    traj = Trajectory(str(p))
    assert traj.n_frames == 2
    assert len(traj.warnings) == 1 and "t.dump: frame 2: incomplete last frame" in traj.warnings[0]


def test_pickle_roundtrip(tmp_path):
    a, _ = write_dump(tmp_path / "a.dump", steps=(0, 100))
    b, tb = write_dump(tmp_path / "b.dump.gz", steps=(200, 300), seed=5)
    traj = Trajectory([a, b], timestep_ps=0.002)
    ref = traj.frame(3)
    blob = pickle.dumps(traj)
    assert len(blob) < 4000  # arguments, small offset indexes, the frame-0 id digest
    copy = pickle.loads(blob)
    assert copy._sources is None  # nothing opened until used
    fr = copy.frame(3)
    np.testing.assert_array_equal(fr.positions, ref.positions)
    assert (fr.index, fr.step, fr.time, fr.source) == (3, 300, pytest.approx(0.6), b)
    assert copy.n_frames == 4
    # a never-used trajectory pickles too, and the unpickled copy indexes lazily where needed
    fresh = pickle.loads(pickle.dumps(Trajectory(a)))
    assert fresh.frame(1).step == 100
    state = Trajectory(a).__getstate__()
    assert {"paths", "format", "topology", "timestep_ps"} <= set(state)


def test_pickled_index_is_reused(tmp_path, monkeypatch):
    a, _ = write_dump(tmp_path / "a.dump")
    traj = Trajectory(a)
    copy = pickle.loads(pickle.dumps(traj))
    copy.sources  # noqa: B018
    assert copy.sources[0].state is not traj.sources[0].state  # a copy of the index ...
    np.testing.assert_array_equal(copy.sources[0].state.atoms_start, traj.sources[0].state.atoms_start)
    # ... which a fresh process (no reader open yet) reads the file with, without indexing it again
    monkeypatch.setattr(readers, "_OPEN", OrderedDict())
    monkeypatch.setattr(lammps_dump, "build_index", lambda *a, **k: pytest.fail("the file was indexed again"))
    monkeypatch.setattr(readers, "build_index", lambda *a, **k: pytest.fail("the file was indexed again"))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(traj)).frame(2).positions, traj.frame(2).positions)


def test_frame_is_the_base_record():
    assert Frame is base.Frame and readers.DumpFrame is lammps_dump.DumpFrame is base.DumpFrame


def test_dumps_are_read_through_the_mdanalysis_reader(tmp_path, monkeypatch):
    # one TrajdenDumpReader per process and file, one parse per frame read (opening parses the frame asked for)
    monkeypatch.setattr(readers, "_OPEN", OrderedDict())
    a, truth = write_dump(tmp_path / "a.dump")
    calls = []
    original = TrajdenDumpReader._read_frame

    def counted(self, frame, ts=None):
        calls.append((id(self), frame))
        return original(self, frame, ts)

    monkeypatch.setattr(TrajdenDumpReader, "_read_frame", counted)
    traj = Trajectory(a)
    assert calls == []  # opening indexes only
    for i in (0, 2, 1):
        np.testing.assert_allclose(traj.frame(i).positions, truth[i], atol=1e-8)
    assert [f for _, f in calls] == [0, 2, 1] and len({r for r, _ in calls}) == 1
    for _ in range(3):  # a Dask task unpickles its own Trajectory: it reuses the process' reader
        pickle.loads(pickle.dumps(traj)).frame(2)
    assert len(calls) == 6 and len({r for r, _ in calls}) == 1
    assert [traj.frame_time_step(i) for i in range(3)] == [(0.0, 0), (pytest.approx(0.1), 100), (0.2, 200)]
    assert len(calls) == 6  # from the index


def test_threads_share_a_reader(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(readers, "_OPEN", OrderedDict())
    a, truth = write_dump(tmp_path / "a.dump.gz", n=200, steps=tuple(range(0, 800, 100)))
    traj = Trajectory(a)
    with ThreadPoolExecutor(4) as pool:
        frames = list(pool.map(traj.frame, [k % 8 for k in range(32)]))
    for k, fr in enumerate(frames):
        assert fr.index == k % 8
        np.testing.assert_allclose(fr.positions, truth[k % 8], atol=1e-8)
    assert len(readers._OPEN) == 1


def test_a_broken_first_frame_fails_only_itself(tmp_path, monkeypatch):
    # a reader opens at the frame asked for: frame 0 of a later file being malformed breaks no other frame
    monkeypatch.setattr(readers, "_OPEN", OrderedDict())
    a, _ = write_dump(tmp_path / "a.dump")
    text, truth = dump_text(seed=3)
    lines = text.splitlines()
    lines[9] = lines[9].replace(lines[9].split()[2], "oops")  # frame 0's first atom line
    b = tmp_path / "b.dump"
    b.write_text("\n".join(lines) + "\n")
    traj = Trajectory([a, str(b)])
    np.testing.assert_allclose(traj.frame(4).positions, truth[1], atol=1e-8)
    with pytest.raises(TrajectoryError, match=r"b\.dump: frame 0, line 10: .*not a number.*trajectory frame 3"):
        traj.frame(3)
    assert traj.frame(5).step == 200


# ---------------------------------------------------------------------------------------------------
# other formats


def test_extxyz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for k in range(3):
        atoms = ase.Atoms(
            symbols=["Cu", "Zr", "Cu", "Al", "Zr"],
            positions=rng.random((5, 3)) * 8.0,
            cell=[[8.0, 0, 0], [0.5, 8.0, 0], [0, 0.3, 9.0]],
            pbc=True,
        )
        atoms.info["step"] = 10 * k
        frames.append(atoms)
    path = str(tmp_path / "t.extxyz")
    ase.io.write(path, frames, format="extxyz")
    traj = Trajectory(path)
    assert (traj.n_frames, traj.n_atoms) == (3, 5)
    for k, fr in enumerate(traj):
        np.testing.assert_allclose(fr.positions, frames[k].positions, atol=1e-6)
        np.testing.assert_allclose(fr.cell, frames[k].cell.array, atol=1e-6)
        np.testing.assert_array_equal(fr.ids, np.arange(1, 6))
        np.testing.assert_array_equal(fr.types, [1, 2, 1, 3, 2])  # order of first appearance
        assert fr.step == 10 * k
        assert fr.time == pytest.approx(10 * k * 0.001)
        assert traj.frame_time_step(k) == (fr.time, fr.step)
    # pickled, random access
    fr = pickle.loads(pickle.dumps(traj)).frame(2)
    np.testing.assert_allclose(fr.positions, frames[2].positions, atol=1e-6)


def test_plain_xyz_without_cell_and_truncation(tmp_path):
    p = tmp_path / "p.xyz"
    p.write_text("2\nframe 0\nAr 0 0 0\nAr 1 1 1\n2\nframe 1\nAr 0 0 1\nAr 1 1 2\n2\nframe 2\nAr 0 0 2\n")
    traj = Trajectory(str(p))
    assert traj.n_frames == 2
    assert "frame 2: incomplete last frame" in traj.warnings[0]
    fr = traj.frame(1)
    np.testing.assert_allclose(fr.cell, np.zeros((3, 3)))  # no Lattice=: non-periodic
    np.testing.assert_allclose(fr.positions, [[0, 0, 1], [1, 1, 2]])
    assert fr.step == 1 and fr.types.tolist() == [1, 1]
    bad = tmp_path / "bad.xyz"
    bad.write_text("hello\nworld\n")
    with pytest.raises(TrajectoryError, match="bad.xyz: frame 0, line 1: not an XYZ file"):
        Trajectory(str(bad))


@pytest.fixture
def pdb_xtc(tmp_path):
    """A PDB topology and an XTC of 3 frames (from a LAMMPS dump, through MDAnalysis)."""
    path, truth = write_dump(tmp_path / "a.dump", n=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(path, format="TRAJDEN_LAMMPSDUMP")
        u.add_TopologyAttr("names", ["X"] * 12)
        u.add_TopologyAttr("resnames", ["RES"])
        pdb, xtc = str(tmp_path / "top.pdb"), str(tmp_path / "traj.xtc")
        u.atoms.write(pdb)
        with mda.Writer(xtc, n_atoms=12) as w:
            for _ in u.trajectory:
                w.write(u.atoms)
    return pdb, xtc, u


def test_xtc_needs_topology(pdb_xtc):
    pdb, xtc, u = pdb_xtc
    with pytest.raises(TrajectoryError, match=r"traj\.xtc: format XTC holds no topology; pass --topology"):
        Trajectory(xtc)
    traj = Trajectory(xtc, topology=pdb)
    assert (traj.n_frames, traj.n_atoms) == (3, 12)
    for ts, fr in zip(u.trajectory, traj):
        np.testing.assert_allclose(fr.positions, ts.positions, atol=6e-3)  # xtc precision: 0.001 nm
        np.testing.assert_allclose(fr.cell, mda.lib.mdamath.triclinic_vectors(ts.dimensions), atol=6e-3)
        np.testing.assert_array_equal(fr.ids, np.arange(1, 13))
    fr = pickle.loads(pickle.dumps(traj)).frame(2)
    np.testing.assert_allclose(fr.positions, traj.frame(2).positions)
    with pytest.raises(TrajectoryError, match="no such topology file"):
        Trajectory(xtc, topology=pdb + ".missing")


def test_universe_built_once_per_process(pdb_xtc, monkeypatch):
    pdb, xtc, _ = pdb_xtc
    monkeypatch.setattr(readers, "_OPEN", OrderedDict())
    built = []
    original = mda.Universe

    def counted(*args, **kwargs):
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(mda, "Universe", counted)
    traj = Trajectory(xtc, topology=pdb)
    ref = [traj.frame(i).positions for i in (0, 2, 1, 2)]
    assert len(built) == 1
    for _ in range(3):  # Dask tasks each unpickle a Trajectory: the process' Universe serves them all
        copy = pickle.loads(pickle.dumps(traj))
        np.testing.assert_array_equal(copy.frame(2).positions, ref[1])
        np.testing.assert_array_equal(copy.frame(1).positions, ref[2])
    assert len(built) == 1
    monkeypatch.setattr(readers, "_OPEN", OrderedDict())  # another process: the Universe is built on first read
    copy = pickle.loads(pickle.dumps(traj))
    assert (copy.n_frames, copy.n_atoms) == (3, 12) and len(built) == 1
    for i in (0, 1, 2):
        copy.frame(i)
    assert len(built) == 2


def test_frame_time_step_of_a_broken_header(tmp_path):
    text, _ = dump_text()
    lines = text.splitlines()
    lines[30] = "1x0"  # frame 1's TIMESTEP value
    p = tmp_path / "h.dump"
    p.write_text("\n".join(lines) + "\n")
    traj = Trajectory(str(p))
    t, s = traj.frame_time_step(1)
    assert np.isnan(t) and s == -1
    assert traj.frame_time_step(2) == (pytest.approx(0.2), 200)
    with pytest.raises(TrajectoryError, match=r"h\.dump: frame 1, line 31: malformed 'ITEM: TIMESTEP'"):
        traj.frame(1)
