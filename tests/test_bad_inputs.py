"""Bad inputs through the command line: one line on stderr, a non-zero exit, no traceback, the store untouched.

Every case runs ``trajden`` as a user would (a subprocess) next to an existing store, and checks that the
store directory is byte-identical afterwards (a hash of every file's name and content).
"""

from __future__ import annotations

import bz2
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.conftest import write_dump
from trajden import names
from trajden.lattices import make_crystal

FAST = ("--serial", "--model", "fcc-bcc-hcp-lite", "--iterations", "2", "--quiet", "--torch-threads", "1")


def trajden_cli(*args):
    return subprocess.run([sys.executable, "-m", "trajden.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def tree_hash(path: Path) -> str:
    """Hash of every file name and content under ``path`` (the store's bytes, not its timestamps)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes() + b"\0")
        for name in dirs:
            h.update(str((Path(root) / name).relative_to(path)).encode() + b"/\0")
    return h.hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny two-frame fcc dump and a store made from it (without --keep-raw)."""
    d = tmp_path_factory.mktemp("bad_inputs")
    c = make_crystal("fcc", 108, d_nn=2.55)
    rng = np.random.default_rng(3)
    frames = [c.positions + rng.normal(0, 0.05, c.positions.shape) for _ in range(2)]
    good = write_dump(d / "good.dump", frames, c.cell)
    store = d / "store.zarr"
    r = trajden_cli("process", good, "--out", store, *FAST)
    assert r.returncode == 0, r.stderr
    return d, good, store


def _lines(path) -> list[str]:
    return Path(path).read_text().splitlines(keepends=True)


def _write(path, lines) -> Path:
    Path(path).write_text("".join(lines))
    return Path(path)


def _edit_atom_line(good, out, k, new):
    """``good`` with frame 0's k-th atom line (0-based) replaced; returns (path, its 1-based file line)."""
    lines = _lines(good)
    first = lines.index("ITEM: ATOMS id type x y z\n") + 1
    lines[first + k] = new + "\n"
    return _write(out, lines), first + k + 1


def case_empty(d, good):
    p = d / "empty.dump"
    p.write_bytes(b"")
    return ("process", p), [f"{p}: file is empty"]


def case_missing(d, good):
    p = d / "nothere.dump"
    return ("process", p), [f"{p}: no such file"]


def case_text_garbage(d, good):
    p = _write(d / "garbage.dump", ["this is not\n", "a LAMMPS dump\n"])
    return ("process", p), [f"{p}: line 1: not a LAMMPS text dump"]


def case_text_garbage_unknown_suffix(d, good):
    p = _write(d / "notes.txt", ["some notes\n"])
    return ("process", p), [f"{p}: cannot tell the file format", "--format"]


def case_binary_garbage(d, good):
    p = d / "binary.dump"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return ("process", p), [f"{p}: line 1: not a LAMMPS text dump"]


def case_corrupt_bz2(d, good):
    data = bz2.compress(Path(good).read_bytes())
    p = d / "corrupt.dump.bz2"
    p.write_bytes(data[:200] + b"\0" * 64 + data[264:])
    return ("process", p), [f"{p}: cannot read"]


def case_missing_xyz_columns(d, good):
    lines = _lines(good)
    k = lines.index("ITEM: ATOMS id type x y z\n")
    lines = [ln.replace("ITEM: ATOMS id type x y z", "ITEM: ATOMS id type x y") for ln in lines]
    p = _write(d / "noz.dump", lines)
    return ("process", p), [f"{p}: frame 0, line {k + 1}: no coordinate columns"]


def case_nan_coordinates(d, good):
    p, line = _edit_atom_line(good, d / "nan.dump", 5, "6 1 nan 1.0 1.0")
    return ("process", p), [f"{p}: frame 0, line {line}: atom id 6 has a non-finite coordinate"]


def case_duplicate_ids(d, good):
    p, line = _edit_atom_line(good, d / "dup.dump", 7, "3 1 1.0 1.0 1.0")
    return ("process", p), [f"{p}: frame 0, line {line}: duplicate atom id 3"]


def case_zero_volume_box(d, good):
    lines = _lines(good)
    lines[7] = "0.0 0.0\n"  # zlo = zhi
    p = _write(d / "flat.dump", lines)
    return ("process", p), [f"{p}: frame 0", "zero-volume"]


def case_bad_box_line(d, good):
    lines = _lines(good)
    lines[6] = "0.0 not-a-number\n"  # the y bounds, file line 7
    p = _write(d / "badbox.dump", lines)
    return ("process", p), [f"{p}: frame 0, line 7: malformed 'ITEM: BOX BOUNDS' data"]


def case_text_file_as_model(d, good):
    m = _write(d / "model.txt", ["not a model\n"])
    args = ["process", good, "--out", "STORE", "--serial", "--model", m, "--quiet"]
    return tuple(args), [f"{m}: not a trajden model", "--model"]


def case_negative_iterations(d, good):
    args = ["process", good, "--out", "STORE", "--serial", "--iterations", "-1", "--quiet"]
    return tuple(args), ["--iterations -1: expected a positive integer"]


def case_frames_out_of_range(d, good):
    args = ["process", good, "--out", "STORE", "--frames", "7", *FAST]
    return tuple(args), ["--frames 7: frame index out of range for 2 frames"]


def case_frames_select_nothing(d, good):
    args = ["process", good, "--out", "STORE", "--frames", "5:9", *FAST]
    return tuple(args), ["--frames 5:9: selects no frames"]


def case_negative_scale(d, good):
    args = ["process", good, "--out", "STORE", "--scale", "-2", *FAST]
    return tuple(args), ["--scale -2: expected 'auto' or a positive nearest-neighbour distance"]


def case_unknown_option(d, good):
    args = ["process", good, "--out", "STORE", "--no-such-flag", "3", *FAST]
    return tuple(args), ["unrecognized arguments: --no-such-flag 3"]


def case_export_raw_without_keep_raw(d, good):
    return ("export", "STORE", "--out", d / "raw.dump", "--raw"), ["STORE: raw positions requested", "--keep-raw"]


def case_not_a_store(d, good):
    plain = d / "plain_dir"
    plain.mkdir(exist_ok=True)
    (plain / "notes.txt").write_text("not a store\n")
    return ("fractions", plain), [f"{plain} is not a trajden store"]


def case_process_into_a_non_store(d, good):
    plain = d / "plain_dir2"
    plain.mkdir(exist_ok=True)
    (plain / "notes.txt").write_text("not a store\n")
    return ("process", good, "--out", plain, *FAST), [f"{plain} exists and is not a trajden store"]


ATOMIC_DATA = """LAMMPS data file written by hand

4 atoms
1 atom types

0.0 3.6 xlo xhi
0.0 3.6 ylo yhi
0.0 3.6 zlo zhi

Masses

1 63.546

Atoms # atomic

1 1 0.0 0.0 0.0
2 1 1.8 1.8 0.0
3 1 1.8 0.0 1.8
4 1 0.0 1.8 1.8
"""


def case_data_file_without_atom_style(d, good):
    p = _write(d / "atomic.data", [ATOMIC_DATA])
    return ("process", p), [f"{p}: cannot parse the Atoms section", "pass --atom-style atomic"]


def case_data_file_with_wrong_atom_style(d, good):
    p = _write(d / "atomic2.data", [ATOMIC_DATA])
    return ("process", p, "--atom-style", "full"), [f"{p}: cannot parse the Atoms section", "with --atom-style full",
                                                    "pass --atom-style atomic"]


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_is_one_line_and_leaves_the_store(work, case):
    d, good, store = work
    args, expected = case(d, good)
    args = [store if a == "STORE" else a for a in args]
    expected = [e.replace("STORE", str(store)) for e in expected]
    if args[0] == "process" and "--out" not in args:
        args = [*args, "--out", store, *FAST]
    plain = [Path(a) for a in args if isinstance(a, Path) and a.is_dir() and a != store]
    before = tree_hash(store), [tree_hash(p) for p in plain]
    r = trajden_cli(*args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("trajden: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "re-run" not in lines[0]  # none of these gets better by running again
    assert (tree_hash(store), [tree_hash(p) for p in plain]) == before


def test_enough_bad_input_cases():
    assert len(CASES) >= 16


def test_bz2_dump_processes_like_the_plain_one(work, tmp_path):
    """A bz2-compressed dump used to fall through to MDAnalysis and fail with 'holds no topology'."""
    d, good, _ = work
    packed = tmp_path / "good.dump.bz2"
    packed.write_bytes(bz2.compress(Path(good).read_bytes()))
    outs = {}
    for name, src in (("plain", good), ("bz2", packed)):
        out = tmp_path / f"{name}.zarr"
        r = trajden_cli("process", src, "--out", out, "--keep-raw", *FAST)
        assert r.returncode == 0, r.stderr
        outs[name] = xr.open_zarr(out, consolidated=False)
    for var in (names.VAR_POSITIONS_RAW, names.VAR_POSITIONS, names.VAR_CELL):
        np.testing.assert_array_equal(outs["bz2"][var].values, outs["plain"][var].values)
