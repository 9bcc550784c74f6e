"""Tests for trajden.store: layout as read by xarray, completion marks, resume, overwrite safety, run lock,
parallel writes from two processes and interrupted writes."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import trajden
from trajden import names
from trajden.store import FrameResult, StaleLockWarning, Store, StoreError, is_trajden_store

N_FRAMES = 7
N_ATOMS = 5
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = Path(trajden.__file__).resolve().parent.parent


def make_results(indices, n_atoms=N_ATOMS, label_vars=None, keep_raw=False, history=0):
    """Deterministic, index-dependent results (also used by the child processes)."""
    if label_vars is None:
        label_vars = [names.structure_var(c, raw) for c in names.CLASSIFIERS for raw in (False, True)]
    out = []
    for i in indices:
        rng = np.random.default_rng(1000 + i)
        raw = rng.normal(size=(n_atoms, 3)).astype(np.float32) * 10
        pos = raw + rng.normal(scale=0.1, size=(n_atoms, 3)).astype(np.float32)
        codes = names.ACNA_CODES
        labels = {v: rng.choice(codes, size=n_atoms).astype(np.int8) for v in label_vars}
        n_it = 1 + i % 3
        out.append(FrameResult(
            index=i,
            positions=pos,
            displacement=np.linalg.norm(pos - raw, axis=1).astype(np.float32),
            labels=labels,
            cell=np.diag([10.0 + i, 11.0, 12.0]),
            iterations=n_it,
            residual=1e-3 * (i + 1),
            scale=1.0 + 0.01 * i,
            status=names.FRAME_STATUS_OK if i % 2 else names.FRAME_STATUS_NOT_CONVERGED,
            positions_raw=raw if keep_raw else None,
            rms_history=np.linspace(1.0, 0.1, n_it) if history else None,
            evaluator=names.EVALUATOR_COMPILED if i % 3 == 1 else names.EVALUATOR_EAGER,
        ))
    return out


def create_kwargs(**over):
    kw = dict(
        n_frames=N_FRAMES,
        atom_ids=np.array([3, 8, 9, 20, 21]),
        types=np.array([1, 2, 1, 1, 2]),
        times=np.arange(N_FRAMES) * 0.25,
        steps=np.arange(N_FRAMES, dtype=np.int64) * 250,
        classifiers=(names.ACNA, names.PTM),
        keep_raw=False,
        attrs={
            names.ATTR_MODEL: "fcc-test",
            names.ATTR_MODEL_SHA256: "ab" * 32,
            names.ATTR_ITERATIONS: 4,
            names.ATTR_TOL: 1e-4,
            names.ATTR_INPUTS: ["a.dump", "b.dump"],
            names.ATTR_COMMAND: "trajden denoise a.dump b.dump -o out.zarr",
            names.ATTR_METHOD: "denoise",
        },
        run_config={"k": 4, "tol": 1e-4, "model": "fcc-test", "classifiers": ["acna", "ptm"]},
        frames_per_chunk=2,
    )
    kw.update(over)
    return kw


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return env


def run_child(code, *args, **popen):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=REPO_ROOT,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def expected_arrays(results, store):
    """What the store should hold for ``results`` (index-ordered dict of variable -> array)."""
    results = sorted(results, key=lambda r: r.index)
    exp = {
        names.VAR_POSITIONS: np.stack([r.positions for r in results]),
        names.VAR_DISPLACEMENT: np.stack([r.displacement for r in results]),
        names.VAR_CELL: np.stack([r.cell for r in results]),
        names.VAR_ITERATIONS: np.array([r.iterations for r in results], np.int16),
        names.VAR_RESIDUAL: np.array([r.residual for r in results], np.float32),
        names.VAR_SCALE: np.array([r.scale for r in results], np.float32),
        names.VAR_STATUS: np.array([r.status for r in results], np.int8),
        names.VAR_EVALUATOR: np.array([r.evaluator for r in results], np.int8),
    }
    for v in store.label_vars:
        exp[v] = np.stack([r.labels[v] for r in results])
    if store.keep_raw:
        exp[names.VAR_POSITIONS_RAW] = np.stack([r.positions_raw for r in results])
    return exp


# --------------------------------------------------------------------------------------------------


def test_roundtrip_out_of_order_chunks_read_by_xarray(tmp_path):
    path = tmp_path / "out.zarr"
    kw = create_kwargs(keep_raw=True, atoms_per_chunk=3, max_iterations=4)
    store = Store.create(path, **kw)
    assert store.n_frames == N_FRAMES and store.n_atoms == N_ATOMS and store.frames_per_chunk == 2
    assert not store.completed().any()
    results = make_results(range(N_FRAMES), label_vars=store.label_vars, keep_raw=True, history=4)
    by_i = {r.index: r for r in results}
    for chunk in ([6], [3, 2], [0, 1], [5, 4]):  # out of order, last partial chunk first
        store.write_frames([by_i[i] for i in chunk])
    assert store.completed().all()
    assert store.pending_chunks() == []

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, consolidated=False)
        ds2 = store.to_xarray()
    assert set(ds.data_vars) == set(ds2.data_vars)
    assert dict(ds.sizes) == {names.DIM_FRAME: N_FRAMES, names.DIM_ATOM: N_ATOMS, names.DIM_SPATIAL: 3,
                              names.DIM_CELL_VECTOR: 3, names.DIM_ITERATION: 4}
    assert {names.COORD_TIME, names.COORD_STEP, names.COORD_ATOM_ID} <= set(ds.coords)
    assert ds[names.COORD_TIME].dtype == np.float64  # not decoded to timedelta
    np.testing.assert_array_equal(ds[names.COORD_TIME].values, kw["times"])
    assert ds[names.COORD_TIME].attrs[names.CF_UNITS] == "ps"
    assert ds[names.COORD_STEP].dtype == np.int64
    np.testing.assert_array_equal(ds[names.COORD_STEP].values, kw["steps"])
    np.testing.assert_array_equal(ds[names.COORD_ATOM_ID].values, kw["atom_ids"])
    assert ds[names.VAR_TYPE].dtype == np.int32
    np.testing.assert_array_equal(ds[names.VAR_TYPE].values, kw["types"])
    # every frame-dimensioned variable shares the frame chunks (Dataset.chunks would raise otherwise)
    assert ds.chunks[names.DIM_FRAME] == (2, 2, 2, 1)
    assert ds.chunks[names.DIM_ATOM] == (3, 2)

    dtypes = {names.VAR_POSITIONS: np.float32, names.VAR_POSITIONS_RAW: np.float32,
              names.VAR_DISPLACEMENT: np.float32, names.VAR_CELL: np.float64, names.VAR_ITERATIONS: np.int16,
              names.VAR_RESIDUAL: np.float32, names.VAR_SCALE: np.float32, names.VAR_STATUS: np.int8,
              names.VAR_EVALUATOR: np.int8, names.VAR_COMPLETE: np.bool_}
    for v in store.label_vars:
        dtypes[v] = np.int8
    for name, values in expected_arrays(results, store).items():
        assert ds[name].dtype == dtypes[name], name
        np.testing.assert_array_equal(ds[name].values, values, err_msg=name)
    assert ds[names.VAR_POSITIONS].dims == (names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL)
    assert ds[names.VAR_CELL].dims == (names.DIM_FRAME, names.DIM_CELL_VECTOR, names.DIM_SPATIAL)
    assert ds[names.VAR_COMPLETE].values.all()
    hist = ds[names.VAR_RMS_HISTORY].values
    for r in results:
        n = len(r.rms_history)
        np.testing.assert_allclose(hist[r.index, :n], r.rms_history, rtol=1e-6)
        assert np.isnan(hist[r.index, n:]).all()

    # CF attributes
    assert ds[names.VAR_POSITIONS].attrs[names.CF_UNITS] == "angstrom"
    for clf, codes in ((names.ACNA, names.ACNA_CODES), (names.PTM, names.PTM_CODES)):
        for raw in (False, True):
            attrs = ds[names.structure_var(clf, raw)].attrs
            assert attrs[names.CF_FLAG_VALUES] == list(codes)
            assert attrs[names.CF_FLAG_MEANINGS].split() == [names.STRUCTURE_NAMES[c] for c in codes]
    st = ds[names.VAR_STATUS].attrs
    assert dict(zip(st[names.CF_FLAG_VALUES], st[names.CF_FLAG_MEANINGS].split())) == names.FRAME_STATUS_NAMES
    ev = ds[names.VAR_EVALUATOR].attrs
    assert dict(zip(ev[names.CF_FLAG_VALUES], ev[names.CF_FLAG_MEANINGS].split())) == names.EVALUATOR_NAMES

    # root attributes
    a = ds.attrs
    assert a[names.ATTR_MODEL] == "fcc-test" and a[names.ATTR_MODEL_SHA256] == "ab" * 32
    assert a[names.ATTR_ITERATIONS] == 4 and a[names.ATTR_TOL] == 1e-4
    assert json.loads(a[names.ATTR_INPUTS]) == ["a.dump", "b.dump"]
    assert a[names.ATTR_COMMAND] == kw["attrs"][names.ATTR_COMMAND]
    assert a[names.ATTR_METHOD] == "denoise"
    assert a[names.ATTR_VERSION] == trajden.__version__
    assert json.loads(a[names.ATTR_CLASSIFIERS]) == ["acna", "ptm"]
    assert json.loads(a[names.ATTR_RUN_CONFIG]) == kw["run_config"]
    assert Store.open(path, mode="r").run_config == kw["run_config"]


def test_only_requested_classifiers_and_no_raw(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs(classifiers=(names.PTM,)))
    ds = store.to_xarray()
    assert names.structure_var(names.PTM) in ds and names.structure_var(names.PTM, raw=True) in ds
    assert names.structure_var(names.ACNA) not in ds and names.structure_var(names.ACNA, raw=True) not in ds
    assert names.VAR_POSITIONS_RAW not in ds and names.VAR_RMS_HISTORY not in ds
    store.write_frames(make_results([0, 1], label_vars=store.label_vars))
    with pytest.raises(StoreError, match="not in the store"):  # an acna label into a ptm-only store
        store.write_frames(make_results([2, 3]))


def test_fill_values_and_pending_chunks_after_partial_writes(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    assert store.pending_chunks() == [[0, 1], [2, 3], [4, 5], [6]]
    store.write_frames(make_results([2, 3]))
    store.write_frames(make_results([6]))
    np.testing.assert_array_equal(store.completed(), [False, False, True, True, False, False, True])
    assert store.pending_chunks() == [[0, 1], [4, 5]]
    assert Store.open(store.path).pending_chunks() == [[0, 1], [4, 5]]  # a fresh handle sees the same
    ds = store.to_xarray()
    assert np.isnan(ds[names.VAR_POSITIONS].values[[0, 1, 4, 5]]).all()
    assert (ds[names.structure_var(names.ACNA)].values[[0, 1, 4, 5]] == -1).all()
    assert ds[names.structure_var(names.ACNA)].dtype == np.int8  # fill value does not turn it into float
    assert (ds[names.VAR_STATUS].values[[0, 1, 4, 5]] == -1).all()
    assert (ds[names.VAR_ITERATIONS].values[[0, 1, 4, 5]] == -1).all()
    assert not np.isnan(ds[names.VAR_POSITIONS].values[[2, 3, 6]]).any()


def test_write_frames_validates_and_marks_nothing_on_error(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    with pytest.raises(StoreError, match="do not cover frame chunk 1"):
        store.write_frames(make_results([2]))
    with pytest.raises(StoreError, match="out of range"):
        store.write_frames(make_results([7]))
    bad = make_results([0, 1])
    bad[1].positions = bad[1].positions[:3]
    with pytest.raises(StoreError, match="positions has shape"):
        store.write_frames(bad)
    bad = make_results([0, 1])
    del bad[0].labels[names.structure_var(names.PTM, raw=True)]
    with pytest.raises(StoreError, match="structure_ptm_raw is missing"):
        store.write_frames(bad)
    assert not store.completed().any()
    with pytest.raises(StoreError, match="read-only"):
        Store.open(store.path, mode="r").write_frames(make_results([0, 1]))


def test_failed_frame_is_recorded_and_can_be_retried(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    store.write_frames([make_results([4])[0], FrameResult.failed(5)])
    assert store.completed()[[4, 5]].all()
    ds = store.to_xarray()
    assert ds[names.VAR_STATUS].values[5] == names.FRAME_STATUS_FAILED
    assert np.isnan(ds[names.VAR_POSITIONS].values[5]).all()
    assert [4, 5] not in store.pending_chunks()
    assert [4, 5] in store.pending_chunks(retry_failed=True)


def test_resume_compatible_and_incompatible(tmp_path):
    path = tmp_path / "s.zarr"
    store, created = Store.open_or_create(path, **create_kwargs())
    assert created
    store.write_frames(make_results([0, 1]))

    again, created = Store.open_or_create(path, **create_kwargs())
    assert not created
    np.testing.assert_array_equal(again.completed(), [True, True] + [False] * 5)
    assert again.pending_chunks() == [[2, 3], [4, 5], [6]]

    changed = create_kwargs()
    changed["run_config"] = dict(changed["run_config"], k=8)
    with pytest.raises(StoreError, match=r"run_config\.k: stored 4, now 8.*--overwrite"):
        Store.open_or_create(path, **changed)
    with pytest.raises(StoreError, match="n_frames: stored 7, now 9"):
        Store.open_or_create(path, **create_kwargs(n_frames=9, times=np.arange(9.0), steps=np.arange(9)))
    with pytest.raises(StoreError, match="atom_ids differ"):
        Store.open_or_create(path, **create_kwargs(atom_ids=np.array([3, 8, 9, 20, 22])))
    with pytest.raises(StoreError, match="classifiers"):
        Store.open_or_create(path, **create_kwargs(classifiers=(names.ACNA,)))
    with pytest.raises(StoreError, match="keep_raw"):
        Store.open_or_create(path, **create_kwargs(keep_raw=True))
    assert Store.open(path).completed()[:2].all()  # refusals left the store alone

    fresh, created = Store.open_or_create(path, overwrite=True, **changed)
    assert created and not fresh.completed().any() and fresh.run_config["k"] == 8


def test_refuses_to_touch_non_trajden_paths(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "data.txt").write_text("keep me")
    for call in (lambda: Store.create(other, overwrite=True, **create_kwargs()),
                 lambda: Store.open_or_create(other, overwrite=True, **create_kwargs()),
                 lambda: Store.open_or_create(other, **create_kwargs())):
        with pytest.raises(StoreError, match="exists and is not a trajden store"):
            call()
    assert (other / "data.txt").read_text() == "keep me"
    with pytest.raises(StoreError, match="not a trajden store"):
        Store.open(other)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StoreError, match="not a trajden store"):
        Store.create(afile, overwrite=True, **create_kwargs())
    assert afile.read_text() == "x"

    # a trajden store is replaced only with overwrite
    path = tmp_path / "s.zarr"
    Store.create(path, **create_kwargs()).write_frames(make_results([0, 1]))
    with pytest.raises(StoreError, match="exists"):
        Store.create(path, **create_kwargs())
    assert Store.open(path).completed()[0]
    assert not Store.create(path, overwrite=True, **create_kwargs()).completed().any()
    # an empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_trajden_store(Store.create(empty, **create_kwargs()).path)


def test_pickle_reopens(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    clone = pickle.loads(pickle.dumps(store))
    clone.write_frames(make_results([0, 1]))
    assert store.completed()[:2].all()


LOCK_CHILD = """
import sys
from trajden.store import Store, StoreError
try:
    with Store.open(sys.argv[1]).lock():
        print("ACQUIRED")
except StoreError as exc:
    print("REFUSED", exc)
"""


def test_lock_refuses_second_holder(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    with store.lock():
        out, err = run_child(LOCK_CHILD, store.path).communicate(timeout=120)
        assert out.startswith("REFUSED"), (out, err)
        assert f"locked by pid {os.getpid()} on host {socket.gethostname()} since" in out
        with pytest.raises(StoreError, match=f"locked by pid {os.getpid()}"):  # also a second lock in-process
            store.lock().acquire()
        with warnings.catch_warnings():  # the lock dir does not upset zarr/xarray readers
            warnings.simplefilter("error")
            store.to_xarray()
        with pytest.raises(StoreError, match="locked"):  # nor may anyone overwrite a locked store
            Store.create(store.path, overwrite=True, **create_kwargs())
    assert not (store.path / names.STORE_LOCK).exists()
    with store.lock():  # released: can be taken again
        pass


def _write_lock(path, pid, host):
    lock = path / names.STORE_LOCK
    lock.mkdir()
    info = {"pid": pid, "host": host, "since": "2020-01-01T00:00:00+0000", "token": "x"}
    (lock / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"trajden_lock": info}}))


def test_stale_lock_is_taken_over(tmp_path):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    _write_lock(store.path, dead_pid, socket.gethostname())
    with pytest.warns(StaleLockWarning, match=f"pid {dead_pid}"):
        lock = store.lock().acquire()
    try:
        info = json.loads((store.path / names.STORE_LOCK / "zarr.json").read_text())["attributes"]["trajden_lock"]
        assert info["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (store.path / names.STORE_LOCK).exists()

    # a lock held on another host cannot be checked, so it is not taken over
    _write_lock(store.path, dead_pid, "some-other-host.invalid")
    with pytest.raises(StoreError, match=f"locked by pid {dead_pid} on host some-other-host.invalid"):
        store.lock().acquire()


WRITER_CHILD = """
import json, sys
from test_store import make_results
from trajden.store import Store
store = Store.open(sys.argv[1])
for chunk in json.loads(sys.argv[2]):
    store.write_frames(make_results(chunk, label_vars=store.label_vars, keep_raw=store.keep_raw))
print("DONE")
"""


def test_two_processes_write_different_chunks_like_serial(tmp_path):
    kw = create_kwargs(keep_raw=True, frames_per_chunk=1, n_frames=8, times=np.arange(8.0), steps=np.arange(8))
    serial = Store.create(tmp_path / "serial.zarr", **kw)
    for chunk in serial.frame_chunks():
        serial.write_frames(make_results(chunk, label_vars=serial.label_vars, keep_raw=True))
    par = Store.create(tmp_path / "par.zarr", **kw)
    chunks = par.pending_chunks()
    procs = [run_child(WRITER_CHILD, par.path, json.dumps(chunks[k::2])) for k in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "DONE" in out, err
    assert par.completed().all()
    a, b = serial.to_xarray().load(), par.to_xarray().load()
    xr.testing.assert_identical(a, b)


def test_interrupted_write_leaves_frames_pending(tmp_path, monkeypatch):
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    results = make_results([2, 3])

    def killed(self, start, stop):
        raise KeyboardInterrupt("killed before the completion mark")

    monkeypatch.setattr(Store, "_mark_complete", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_frames(results)
    monkeypatch.undo()
    reopened = Store.open(store.path)
    ds = reopened.to_xarray()
    np.testing.assert_array_equal(ds[names.VAR_POSITIONS].values[2], results[0].positions)  # data is there ...
    assert not reopened.completed().any()  # ... but not marked complete
    assert [2, 3] in reopened.pending_chunks()
    reopened.write_frames(results)  # the resumed run rewrites it
    assert reopened.completed()[[2, 3]].all() and [2, 3] not in reopened.pending_chunks()


def test_store_without_the_evaluator_variable_still_takes_frames(tmp_path):
    """Stores written before the per-frame evaluator code existed resume without it; a bad code is refused."""
    import zarr

    path = tmp_path / "old.zarr"
    store = Store.create(path, **create_kwargs())
    bad = make_results([0, 1], label_vars=store.label_vars)
    bad[1].evaluator = 7
    with pytest.raises(StoreError, match="frame 1: unknown evaluator code 7"):
        store.write_frames(bad)
    assert not store.completed().any()
    del zarr.open_group(str(path), mode="r+", zarr_format=3)[names.VAR_EVALUATOR]
    old = Store.open(path, mode="r+")
    results = make_results(range(N_FRAMES), label_vars=old.label_vars)
    old.write_frames(results)
    assert old.completed().all()
    ds = xr.open_zarr(path, consolidated=False)
    assert names.VAR_EVALUATOR not in ds
    for name, values in expected_arrays(results, old).items():
        if name != names.VAR_EVALUATOR:
            np.testing.assert_array_equal(ds[name].values, values, err_msg=name)


def test_mobile_fraction_is_stored_and_old_stores_without_it_still_open(tmp_path):
    """``mobile_fraction`` (atoms still moving when a frame stopped) is written per frame; a store from before
    it existed (no such array, the old status meanings "ok not_converged ...") opens, resumes and reads."""
    import zarr

    path = tmp_path / "new.zarr"
    store = Store.create(path, **create_kwargs(max_iterations=4))
    results = make_results(range(N_FRAMES), label_vars=store.label_vars, history=1)
    for r in results:
        r.mobile_fraction = 0.1 * r.index
    store.write_frames(results[:2])
    ds = xr.open_zarr(path, consolidated=False)
    mobile = ds[names.VAR_MOBILE_FRACTION]
    np.testing.assert_allclose(mobile.values[:2], [0.0, 0.1], rtol=1e-6)
    assert np.isnan(mobile.values[2:]).all() and mobile.attrs[names.CF_UNITS] == "1"

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    del group[names.VAR_MOBILE_FRACTION]
    group[names.VAR_STATUS].attrs[names.CF_FLAG_MEANINGS] = "ok not_converged diverged failed"
    old = Store.open(path, mode="r+")
    old.write_frames(results[2:])
    assert old.completed().all()
    ds = xr.open_zarr(path, consolidated=False)
    assert names.VAR_MOBILE_FRACTION not in ds
    np.testing.assert_array_equal(ds[names.VAR_STATUS].values, [r.status for r in results])
