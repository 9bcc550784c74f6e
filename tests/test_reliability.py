"""Reliability of ``trajden process``: bad input, interruptions, worker failures, concurrency, untrusted model
files and numerical safety.

Bad input must give ONE line ``trajden: error: ...`` on stderr naming the file (and frame/line where it applies),
exit code != 0, no traceback, and leave an existing store exactly as it was (checksum of every file). Frames
are small (108 atoms) and runs use ``--serial --iterations 2``; the CLI runs that fail before processing are
started a few at a time (most of their cost is importing torch / MDAnalysis / distributed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from trajden import names
from trajden.io.lammps_dump import format_frame
from trajden.io.readers import Trajectory
from trajden.lattices import add_noise, make_crystal
from trajden.model.package import export_model
from trajden.pipeline import ProcessSettings, run, summary_text
from trajden.store import Store, is_trajden_store

D_NN = 2.55
N_FRAMES_KILL = 8
SETTINGS = ProcessSettings(model="fcc-bcc-hcp", iterations=2)  # = the CLI's "--iterations 2"
CLI = [sys.executable, "-m", "trajden.cli"]
META = dict(name="t", cutoff=1.5, nn_distance=1.0, species=["X"], structures=["fcc"], sigma_max=0.13,
            trajden_version="0", n_layers=1)


# ------------------------------------------------------------------------------------------------------------
# helpers


def _frames(n: int, seed: int = 0):
    c = make_crystal("fcc", 108, d_nn=D_NN)
    rng = np.random.default_rng(seed)
    return c, [add_noise(c.positions, 0.05 * D_NN, rng)[0] for _ in range(n)]


def _frame_texts(n: int, seed: int = 0) -> list[str]:
    c, frames = _frames(n, seed)
    return [format_frame(p, c.cell, step=100 * k, fmt="%.6f") for k, p in enumerate(frames)]


def _write(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(texts))
    return path


def _atom_line(text: str, k: int) -> int:
    """Index (within the frame's lines) of the k-th atom line (0-based)."""
    return text.splitlines().index(next(ln for ln in text.splitlines() if ln.startswith("ITEM: ATOMS"))) + 1 + k


def _replace_line(text: str, i: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[i] = new + "\n"
    return "".join(lines)


def _line_in_file(texts: list[str], frame: int, line_in_frame: int) -> int:
    """1-based line number in the file of line ``line_in_frame`` (0-based) of ``frame``."""
    return sum(t.count("\n") for t in texts[:frame]) + line_in_frame + 1


def _cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _process_cmd(dump, out, *extra) -> list[str]:
    return [*CLI, "process", str(dump), "--out", str(out), "--serial", "--iterations", "2", "--quiet", *map(str, extra)]


def _error_line(r: subprocess.CompletedProcess) -> str:
    """The single ``trajden: error:`` line of a failed run (warnings aside); no traceback."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("trajden: warning:")]
    assert len(lines) == 1 and lines[0].startswith("trajden: error: "), r.stderr
    return lines[0]


def _digest(path: Path) -> str:
    """Checksum of a file or of every file (name, size, mtime, contents) and directory below ``path``."""
    h = hashlib.sha256()
    path = Path(path)
    items = [path] if path.is_file() else sorted(path.rglob("*"))
    for p in items:
        st = p.lstat()
        h.update(f"{p.relative_to(path.parent)}|{st.st_mode}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _open(path) -> xr.Dataset:
    return xr.open_zarr(str(path), consolidated=False)


def _assert_same_store(a, b):
    da, db = _open(a), _open(b)
    assert set(da.data_vars) == set(db.data_vars)
    for var in da.data_vars:
        np.testing.assert_array_equal(da[var].values, db[var].values, err_msg=var)
    for c in da.coords:
        np.testing.assert_array_equal(da[c].values, db[c].values, err_msg=c)


def _assert_complete_frames_whole(path) -> int:
    """Every frame marked complete has a result status and all its data (no fill values).

    Returns the number of complete frames.
    """
    ds = _open(path)
    done = ds[names.VAR_COMPLETE].values
    status = ds[names.VAR_STATUS].values
    assert np.isin(status[done], list(names.FRAME_STATUS_NAMES)).all()
    assert not np.isin(status[done], names.FRAME_STATUS_NO_RESULT).any()  # failed frames are never complete
    ok = done
    for var in (names.VAR_POSITIONS, names.VAR_DISPLACEMENT, names.VAR_CELL, names.VAR_RESIDUAL, names.VAR_SCALE):
        assert np.isfinite(ds[var].values[ok]).all(), var
    assert (ds[names.VAR_ITERATIONS].values[ok] >= 1).all()
    for c in names.CLASSIFIERS:
        for raw in (False, True):
            assert (ds[names.structure_var(c, raw)].values[ok] >= 0).all()
    assert np.isfinite(ds[names.VAR_RMS_HISTORY].values[ok][:, 0]).all()
    return int(ok.sum())


def _wait_for(cond, timeout: float, what: str, proc=None, poll: float = 0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


class _Evil:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Diverging(torch.nn.Module):
    def forward(self, edge_vec: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor, types: torch.Tensor):
        return torch.full((types.shape[0], 3), 5.0)


class _NaN(torch.nn.Module):
    def forward(self, edge_vec: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor, types: torch.Tensor):
        return torch.full((types.shape[0], 3), float("nan"))


# ------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def good_dump(work) -> Path:
    return _write(work / "good.dump", _frame_texts(3))


@pytest.fixture(scope="module")
def good_store(work, good_dump) -> Path:
    """A valid store (of good.dump) that bad runs are pointed at."""
    out = work / "good.zarr"
    run(Trajectory(str(good_dump)), [0, 1, 2], str(out), SETTINGS, progress=False)
    return out


# ------------------------------------------------------------------------------------------------------------
# bad input refused before anything is written: one line, names the file, existing store/path untouched
#
# Each case returns (trajectory, extra CLI arguments, words the error line must contain); it runs with
# ``--overwrite`` against its own copy of a valid store, which must be left exactly as it was.  The cases in
# SUBPROCESS run as real ``python -m trajden.cli`` processes (three at a time, most of their cost is imports);
# the others through ``trajden.cli.main`` in this process (same argument parsing, error handling and output).


def _case_missing(d, good):
    return [d / "missing.dump"], [], ["missing.dump", "no such file"]


def _case_empty(d, good):
    (d / "empty.dump").write_bytes(b"")
    return [d / "empty.dump"], [], ["empty.dump", "empty"]


def _case_no_xyz_columns(d, good):
    texts = []
    for t in _frame_texts(2):
        lines = t.splitlines()
        k = lines.index("ITEM: ATOMS id type x y z")
        lines = lines[:k] + ["ITEM: ATOMS id type x y"] + [" ".join(ln.split()[:4]) for ln in lines[k + 1:]]
        texts.append("\n".join(lines) + "\n")
    line = _line_in_file(texts, 0, texts[0].splitlines().index("ITEM: ATOMS id type x y"))
    return [_write(d / "noxyz.dump", texts)], [], ["noxyz.dump", "frame 0", f"line {line}", "coordinate columns"]


def _case_zero_volume_box(d, good):
    texts = [_replace_line(t, 7, "0.0 0.0") for t in _frame_texts(2)]  # zlo = zhi
    return [_write(d / "flat.dump", texts)], [], ["flat.dump", "frame 0", "zero-volume"]


def _case_png(d, good):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))
    (d / "picture.png").write_bytes(png)
    return [d / "picture.png"], [], ["picture.png"]


def _case_png_named_dump(d, good):
    (d / "picture.dump").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return [d / "picture.dump"], [], ["picture.dump", "not a LAMMPS text dump"]


def _case_random_text(d, good):
    (d / "notes.txt").write_text("Meeting notes\nthis is not a trajectory\n1 2 3\n")
    return [d / "notes.txt"], [], ["notes.txt"]


def _case_model_text(d, good):
    (d / "some.txt").write_text("not a model\n")
    return [good], ["--model", d / "some.txt"], ["some.txt", "not a trajden model"]


def _case_model_pickle(d, good):
    torch.save({"weights": torch.zeros(3), "payload": _Evil(d / "UNPICKLED")}, d / "pickled.pt")
    return [good], ["--model", d / "pickled.pt"], ["pickled.pt", "not a trajden model"]


def _case_model_more_types(d, good):
    from e3nn.util.jit import script

    from trajden.model.network import ScoreNet

    export_model(script(ScoreNet(num_types=2, hidden="4x0e+2x1o", n_layers=1)),
                 dict(META, name="two", species=["A", "B"]), d / "two.pt")
    texts = []
    for t in _frame_texts(2):
        lines = t.splitlines(keepends=True)
        k = _atom_line(t, 0)
        for a in range(k, len(lines)):
            f = lines[a].split()
            f[1] = str((a - k) % 3 + 1)
            lines[a] = " ".join(f) + "\n"
        texts.append("".join(lines))
    return ([_write(d / "three_types.dump", texts)], ["--model", d / "two.pt"],
            ["three_types.dump", "3 atom types", "two.pt", "2 species"])


def _case_bad_scale(d, good):
    return [good], ["--scale", "abc"], ["--scale", "abc"]


def _case_output_is_a_file(d, good):
    return [good], [], ["not a trajden store"]


def _case_output_is_a_foreign_dir(d, good):
    return [good], [], ["not a trajden store"]


def _case_output_is_a_file_no_overwrite(d, good):
    return [good], [], ["not a trajden store"]


CASES = {f.__name__[len("_case_"):]: f for f in (
    _case_missing, _case_empty, _case_no_xyz_columns, _case_zero_volume_box, _case_png,
    _case_png_named_dump, _case_random_text, _case_model_text, _case_model_pickle, _case_model_more_types,
    _case_bad_scale, _case_output_is_a_file, _case_output_is_a_foreign_dir, _case_output_is_a_file_no_overwrite,
)}
SUBPROCESS = ("missing", "png", "model_pickle", "output_is_a_file", "output_is_a_foreign_dir")


def _prepare(name, work, good_dump, good_store):
    """(argv after 'trajden', the path that must stay untouched, its digest, needles, case dir)."""
    d = work / f"case_{name}"
    d.mkdir()
    inputs, extra, needles = CASES[name](d, good_dump)
    if name.startswith("output_is_a_file"):
        target = d / "precious.zarr"  # a regular file with a store-like name
        target.write_text("precious data\n")
    elif name == "output_is_a_foreign_dir":
        target = d / "results"
        (target / "sub").mkdir(parents=True)
        (target / "keep.txt").write_text("keep me\n")
        (target / "sub" / "data.bin").write_bytes(bytes(range(256)))
    else:
        target = d / "existing.zarr"
        shutil.copytree(good_store, target)
    overwrite = [] if name.endswith("no_overwrite") else ["--overwrite"]
    argv = ["process", str(inputs[0]), "--out", str(target), "--serial", "--iterations", "2", "--quiet", *overwrite,
            *map(str, extra)]
    return argv, target, _digest(target), [*needles, *([str(target)] if name.startswith("output") else [])], d


@pytest.fixture(scope="module")
def subprocess_cases(work, good_dump, good_store):
    prepared = {name: _prepare(name, work, good_dump, good_store) for name in SUBPROCESS}

    def go(name):
        argv, *rest = prepared[name]
        return name, (subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=300), *rest)

    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(go, SUBPROCESS))


def _main(argv, capsys) -> subprocess.CompletedProcess:
    """``trajden.cli.main(argv)`` in this process, restoring the thread settings a --serial run changes."""
    from trajden import cli

    threads, ovito = torch.get_num_threads(), os.environ.get("OVITO_THREAD_COUNT")
    try:
        rc = cli.main(argv)
    finally:
        torch.set_num_threads(threads)
        if ovito is None:
            os.environ.pop("OVITO_THREAD_COUNT", None)
        else:
            os.environ["OVITO_THREAD_COUNT"] = ovito
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, rc, out, err)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_refused_and_untouched(case, request, capsys, work, good_dump, good_store):
    if case in SUBPROCESS:
        r, target, before, needles, d = request.getfixturevalue("subprocess_cases")[case]
    else:
        argv, target, before, needles, d = _prepare(case, work, good_dump, good_store)
        r = _main(argv, capsys)
    line = _error_line(r)
    assert r.returncode == 2
    for n in needles:
        assert str(n) in line, (n, line)
    assert r.stdout == ""
    assert _digest(target) == before, f"{case}: {target} was modified"
    assert not (d / "UNPICKLED").exists(), "the model file was unpickled"


def test_non_periodic_lammps_box_processed(work, capsys):
    """A box with free surfaces everywhere (a particle in its box) is processed, not refused (issue 20);
    its boundaries are recorded per frame."""
    texts = [t.replace("ITEM: BOX BOUNDS pp pp pp", "ITEM: BOX BOUNDS ff ff ff") for t in _frame_texts(2)]
    path = _write(work / "ffff.dump", texts)
    out = work / "ffff.zarr"
    r = _main(["process", str(path), "--out", str(out), "--serial", "--model", "fcc-bcc-hcp-lite", "--iterations", "2",
               "--quiet"], capsys)
    assert r.returncode == 0, r.stderr
    ds = _open(out)
    assert ds[names.VAR_COMPLETE].values.all()
    assert ds[names.VAR_PBC].values.tolist() == [[0, 0, 0], [0, 0, 0]]


def test_shipped_model_checksum_mismatch(monkeypatch, capsys, tmp_path, good_dump, good_store):
    """A shipped model name whose file was modified is refused (through the CLI's main, registry on a temp copy)."""
    from importlib import resources

    from trajden.model import package

    reg = package._registry()
    entry = reg["fcc-bcc-hcp"]
    copy = tmp_path / "fcc-bcc-hcp.pt"
    shutil.copyfile(str(resources.files("trajden.models").joinpath(entry["file"])), copy)
    with open(copy, "ab") as fh:
        fh.write(b"\0")  # one byte appended: still a readable zip, different sha256
    monkeypatch.setattr(package, "_registry", lambda: {**reg, "fcc-bcc-hcp": {**entry, "file": str(copy)}})
    store = tmp_path / "existing.zarr"
    shutil.copytree(good_store, store)
    before = _digest(store)
    r = _main(["process", str(good_dump), "--out", str(store), "--serial", "--overwrite", "--quiet",
               "--iterations", "2", "--model", "fcc-bcc-hcp"], capsys)
    line = _error_line(r)
    assert r.returncode == 2 and str(copy) in line and "does not match the recorded" in line
    assert _digest(store) == before


def test_xyz_without_a_cell_is_read_as_non_periodic(work, capsys):
    """No Lattice= (a cluster or molecule in vacuum): read, not refused; the store records a non-periodic box
    around the atoms and the raw positions as given."""
    c, frames = _frames(2)
    path = work / "open.xyz"
    with open(path, "w") as fh:
        for p in frames:
            fh.write(f"{len(p)}\nProperties=species:S:1:pos:R:3\n")
            fh.writelines(f"Cu {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in p)
    out = work / "open.zarr"
    r = _main(["process", str(path), "--out", str(out), "--serial", "--keep-raw", "--iterations", "2"], capsys)
    assert r.returncode == 0, r.stderr
    assert "free_surface" in r.stdout  # a small cluster: its surface atoms are held, and the summary says why
    ds = xr.open_zarr(out, consolidated=False)
    assert (ds[names.VAR_PBC].values == 0).all()
    for i, p in enumerate(frames):
        np.testing.assert_allclose(ds[names.VAR_POSITIONS_RAW].values[i], p, atol=1e-5)
        lo = ds[names.VAR_ORIGIN].values[i]
        assert (p > lo).all() and (p < lo + np.diag(ds[names.VAR_CELL].values[i])).all()


# ------------------------------------------------------------------------------------------------------------
# a truncated last frame: processed up to it, warned about, exit 0


def test_truncated_last_frame(work):
    texts = _frame_texts(3)
    cut = texts[2].index("\n", len(texts[2]) // 2) - 7  # in the middle of an atom line
    path = work / "truncated.dump"
    path.write_text("".join(texts[:2]) + texts[2][:cut])
    out = work / "truncated.zarr"
    r = subprocess.run(_process_cmd(path, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "error" not in r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and warn[0].startswith("trajden: warning: "), r.stderr
    assert "truncated.dump" in warn[0] and "frame 2" in warn[0] and "incomplete last frame" in warn[0]
    ds = _open(out)
    assert ds.sizes[names.DIM_FRAME] == 2 and ds[names.VAR_COMPLETE].values.all()
    assert _assert_complete_frames_whole(out) == 2


# ------------------------------------------------------------------------------------------------------------
# frames that fail one by one: reported with frame (and line), the others written, exit != 0 with a summary


def _bad_frames(texts):
    """Break frames 1..8 of ``texts`` in place; returns {frame: (reason, file line or None)}."""
    expect = {}

    def atom(f, k, new):
        i = _atom_line(texts[f], k)
        texts[f] = _replace_line(texts[f], i, new + " ")  # LAMMPS ends atom lines with a space
        return _line_in_file(texts, f, i)

    expect[1] = ("is not a number", atom(1, 50, "51 1 1.0 garbage 2.0"))
    lines = texts[2].splitlines(keepends=True)  # one atom fewer than frame 0
    lines[3] = "107\n"
    texts[2] = "".join(lines[:-1])
    expect[2] = ("atom count 107 differs from 108", None)
    expect[3] = ("non-finite coordinate", atom(3, 10, "11 1 nan 1.0 1.0"))
    expect[4] = ("non-finite coordinate", atom(4, 10, "11 1 1.0 -inf 1.0"))
    expect[5] = ("outside the box", atom(5, 20, "21 1 500.0 1.0 1.0"))
    f6 = texts[6].splitlines()[_atom_line(texts[6], 4)].split()
    expect[6] = ("duplicate atom id 5", atom(6, 5, " ".join(["5", *f6[1:]])))
    texts[7] = _replace_line(texts[7], 6, "0.0 -1.0")  # yhi < ylo
    expect[7] = ("inverted box", None)
    lines = texts[8].splitlines()
    k = lines.index("ITEM: ATOMS id type x y z")
    texts[8] = "\n".join(lines[:k] + ["ITEM: ATOMS id type x z"] + [" ".join(ln.split()[:4])
                                                                    for ln in lines[k + 1:]]) + "\n"
    expect[8] = ("no coordinate columns", _line_in_file(texts, 8, k))
    return expect


@pytest.fixture(scope="module")
def bad_frames_run(work):
    texts = _frame_texts(10)
    expect = _bad_frames(texts)
    path = _write(work / "bad_frames.dump", texts)
    out = work / "bad_frames.zarr"
    r = subprocess.run(_process_cmd(path, out), capture_output=True, text=True, timeout=300)
    return r, out, path, expect


def test_bad_frames_summary(bad_frames_run):
    r, out, path, expect = bad_frames_run
    line = _error_line(r)
    assert r.returncode == 1
    first_line = expect[1][1]
    assert line.startswith(f"trajden: error: {len(expect)} of 10 frame(s) failed (frame 1: ")
    assert str(path) in line and "frame 1" in line and f"line {first_line}" in line
    assert "re-run" not in line and "fix the input" in line  # bad input does not get better by re-running
    ds = _open(out)
    good = [0, 9]
    assert ds[names.VAR_COMPLETE].values[good].all()
    assert np.isin(ds[names.VAR_STATUS].values[good], [names.FRAME_STATUS_OK, names.FRAME_STATUS_NOT_CONVERGED]).all()
    assert _assert_complete_frames_whole(out) == 2  # only the good frames count as written
    assert "frames     10 processed" in r.stdout


@pytest.mark.parametrize("frame,what", [(1, "corrupted line"), (2, "atom count changes"), (3, "NaN coordinate"),
                                        (4, "inf coordinate"), (5, "atom far outside the box"),
                                        (6, "duplicate atom id"), (7, "inverted box"), (8, "no x y z columns")])
def test_bad_frame_reported(bad_frames_run, frame, what):
    r, out, path, expect = bad_frames_run
    reason, line_no = expect[frame]
    reported = [ln for ln in r.stdout.splitlines() if ln.startswith(f"FAILED     frame {frame}: ")]
    assert len(reported) == 1, r.stdout
    msg = reported[0]
    assert f"{path}: frame {frame}" in msg and reason in msg, msg
    if line_no is not None:
        assert f"line {line_no}:" in msg, msg
    ds = _open(out)
    assert ds[names.VAR_STATUS].values[frame] == names.FRAME_STATUS_BAD_INPUT
    assert not ds[names.VAR_COMPLETE].values[frame]
    assert np.isnan(ds[names.VAR_POSITIONS].values[frame]).all()


# ------------------------------------------------------------------------------------------------------------
# concurrency and interruptions (kill -9 of a --serial run)


@pytest.fixture(scope="module")
def kill_dump(work) -> Path:
    return _write(work / "kill.dump", _frame_texts(N_FRAMES_KILL, seed=3))


@pytest.fixture(scope="module")
def uninterrupted(work, kill_dump):
    """An uninterrupted CLI run of kill.dump (the reference for the kill -9 tests).

    While it holds the run lock it is stopped (SIGSTOP) and the same command is started a second time; what that
    second run printed, and whether it changed the store, is returned for :func:`test_second_run_on_locked_store`.
    """
    out = work / "uninterrupted.zarr"
    cmd = _process_cmd(kill_dump, out)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / names.STORE_LOCK).is_dir(), 180, "the run lock", first)
        time.sleep(0.3)  # past the flock that serialises lock takeovers
        os.kill(first.pid, signal.SIGSTOP)
        try:
            before = _digest(out)
            second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            after = _digest(out)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "8 processed" in stdout
    return {"store": out, "pid": first.pid, "second": second, "unchanged": before == after}


def test_second_run_on_locked_store(uninterrupted):
    r = uninterrupted["second"]
    line = _error_line(r)
    assert str(uninterrupted["store"]) in line and f"locked by pid {uninterrupted['pid']}" in line, line
    assert uninterrupted["unchanged"], "the refused run modified the store"
    ds = _open(uninterrupted["store"])
    assert ds[names.VAR_COMPLETE].values.all() and ds.sizes[names.DIM_FRAME] == N_FRAMES_KILL
    assert not (uninterrupted["store"] / names.STORE_LOCK).exists()


_RNG = np.random.default_rng(20240611)
# kill once 0, 2 and 4 of the 8 frames are complete, plus a random delay of up to a quarter second (on the
# order of one 108-atom frame)
KILL_AT = [(k, float(_RNG.uniform(0.0, 0.25))) for k in (0, 2, 4)]


def _n_complete(out) -> int:
    try:
        return int(Store.open(out, mode="r").completed().sum()) if is_trajden_store(out) else -1
    except Exception:  # noqa: BLE001 - being written right now
        return -1


@pytest.mark.parametrize("after,delay", KILL_AT, ids=[f"after{k}+{u:.2f}s" for k, u in KILL_AT])
def test_kill9_then_rerun_equals_uninterrupted(work, kill_dump, uninterrupted, after, delay):
    """kill -9 a --serial run at random moments; no half-written frame is complete; the re-run finishes the
    store, identical (every variable, exactly) to the uninterrupted run's."""
    out = work / f"killed_{after}.zarr"
    cmd = _process_cmd(kill_dump, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _n_complete(out) >= after, 180, f"{after} complete frames", proc, poll=0.05)
        time.sleep(delay)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    done = _assert_complete_frames_whole(out)
    assert done >= after  # (all 8 may be complete on a fast machine: then it was killed writing the summary)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{done} already complete" in again.stdout
    _assert_same_store(uninterrupted["store"], out)


def test_kill9_while_creating_store_then_rerun(work, kill_dump, uninterrupted):
    out = work / "killed_creating.zarr"
    killer = ("import os, signal, sys, zarr\n"
              "orig = zarr.Group.create_array\n"
              "n = [0]\n"
              "def create_array(self, *a, **k):\n"
              "    n[0] += 1\n"
              "    if n[0] == 4:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return orig(self, *a, **k)\n"
              "zarr.Group.create_array = create_array\n"
              "from trajden.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    cmd = _process_cmd(kill_dump, out)
    r = subprocess.run([sys.executable, "-c", killer, *cmd[len(CLI):]], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL and not out.exists()  # the destination is left as it was
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    _assert_same_store(uninterrupted["store"], out)


# ------------------------------------------------------------------------------------------------------------
# worker failures on a LocalCluster


@pytest.fixture(scope="module")
def cluster_dump(work) -> Path:
    return _write(work / "cluster.dump", _frame_texts(4, seed=5))


@pytest.fixture(scope="module")
def cluster_serial(work, cluster_dump) -> Path:
    out = work / "cluster_serial.zarr"
    run(Trajectory(str(cluster_dump)), list(range(4)), str(out), SETTINGS, progress=False)
    return out


@pytest.fixture(scope="module")
def client():
    from trajden.cluster import close_cluster, start_cluster

    c, lc = start_cluster("local", n_workers=2, model=SETTINGS.model, device="cpu", torch_threads=1,
                          ovito_threads=1, dashboard_address=None)
    try:
        yield c
    finally:
        close_cluster(c, lc)


def test_worker_killed_mid_task(work, client, cluster_dump, cluster_serial):
    """The worker processing frame 1 dies (os._exit) in the middle of the task; the run completes anyway."""
    marker = work / "worker_killed"

    def arm(marker, target):
        import os

        import trajden.pipeline as p

        orig = getattr(p, "_reliability_orig", p.process_frame)
        p._reliability_orig = orig

        def process_frame(frame, settings, model=None):
            if frame.index == target:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)  # the first worker to get this frame dies mid-task
            return orig(frame, settings, model)

        p.process_frame = process_frame
        return os.getpid()

    def disarm():
        import trajden.pipeline as p

        if hasattr(p, "_reliability_orig"):
            p.process_frame = p._reliability_orig

    pids = set(client.run(arm, str(marker), 1).values())
    try:
        out = work / "cluster_killed.zarr"
        summary = run(Trajectory(str(cluster_dump)), list(range(4)), str(out), SETTINGS, client=client,
                      progress=False)
    finally:
        client.run(disarm)
    assert marker.exists(), "no worker was killed"
    client.wait_for_workers(2, timeout=120)
    assert set(client.run(os.getpid).values()) != pids  # one worker process was replaced
    assert not summary.failures and summary.frames_done == 4
    assert _open(out)[names.VAR_COMPLETE].values.all()
    _assert_same_store(cluster_serial, out)


def test_deterministic_frame_failure_on_cluster(work, client):
    texts = _frame_texts(4, seed=5)
    i = _atom_line(texts[2], 30)
    texts[2] = _replace_line(texts[2], i, "31 1 0.5 0.5")
    path = _write(work / "cluster_bad.dump", texts)
    out = work / "cluster_bad.zarr"
    summary = run(Trajectory(str(path)), list(range(4)), str(out), SETTINGS, client=client, progress=False)
    assert set(summary.failures) == {2}
    why = summary.failures[2]
    assert f"{path}: frame 2, line {_line_in_file(texts, 2, i)}" in why and "expected 5 columns" in why, why
    ds = _open(out)
    assert ds[names.VAR_STATUS].values[2] == names.FRAME_STATUS_BAD_INPUT
    assert _assert_complete_frames_whole(out) == 3
    assert "FAILED     frame 2: " in summary_text(summary)


def test_chunk_task_that_raises_on_cluster(work, client, cluster_dump, cluster_serial):
    """A chunk task that raises outside the per-frame guard (here: its store write, disk full) on every try is
    reported for its frames; the driver does not crash and the other chunks are written."""

    def arm(target):
        import errno

        from trajden.store import Store

        orig = Store.__dict__.get("_reliability_orig_write", Store.write_frames)
        Store._reliability_orig_write = orig

        def write_frames(self, results):
            if any(r.index == target for r in results):
                raise OSError(errno.ENOSPC, "No space left on device")
            return orig(self, results)

        Store.write_frames = write_frames

    def disarm():
        from trajden.store import Store

        if "_reliability_orig_write" in Store.__dict__:
            Store.write_frames = Store._reliability_orig_write

    client.run(arm, 2)
    try:
        out = work / "cluster_nospace.zarr"
        summary = run(Trajectory(str(cluster_dump)), list(range(4)), str(out), SETTINGS, client=client,
                      progress=False)
    finally:
        client.run(disarm)
    assert set(summary.failures) == {2}
    assert "No space left on device" in summary.failures[2] and "not written" in summary.failures[2]
    assert summary.statuses[2] == names.FRAME_STATUS_FAILED
    ds = _open(out)
    assert ds[names.VAR_COMPLETE].values.tolist() == [True, True, False, True]  # frame 2 stays pending
    ref = _open(cluster_serial)
    for var in ds.data_vars:
        np.testing.assert_array_equal(ds[var].values[[0, 1, 3]], ref[var].values[[0, 1, 3]], err_msg=var)
    assert "FAILED     frame 2: " in summary_text(summary)


# ------------------------------------------------------------------------------------------------------------
# numerical safety: a diverging model flags frames, keeps the raw positions, and the summary counts them


@pytest.mark.parametrize("module", [_Diverging, _NaN])
def test_diverging_model_flagged_in_store(tmp_path, good_dump, module):
    model = tmp_path / "diverging.pt"
    export_model(torch.jit.script(module()), dict(META, name="diverging"), model)
    out = tmp_path / "diverged.zarr"
    settings = ProcessSettings(model=str(model), iterations=4, keep_raw=True)
    summary = run(Trajectory(str(good_dump)), [0, 1, 2], str(out), settings, progress=False)
    assert not summary.failures
    assert list(summary.statuses.values()) == [names.FRAME_STATUS_DIVERGED] * 3
    assert "problems   3 diverged (diverged: raw positions kept)" in summary_text(summary)
    ds = _open(out)
    assert (ds[names.VAR_STATUS].values == names.FRAME_STATUS_DIVERGED).all() and ds[names.VAR_COMPLETE].values.all()
    np.testing.assert_array_equal(ds[names.VAR_POSITIONS].values, ds[names.VAR_POSITIONS_RAW].values)
    assert (ds[names.VAR_DISPLACEMENT].values == 0).all()
    raw = np.stack([Trajectory(str(good_dump)).frame(i).positions for i in range(3)]).astype(np.float32)
    np.testing.assert_array_equal(ds[names.VAR_POSITIONS].values, raw)
