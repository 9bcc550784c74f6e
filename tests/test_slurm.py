"""A real SLURM run: ``trajden process --cluster slurm`` through dask-jobqueue's SLURMCluster on a one-node SLURM.

The cluster is started with ``<repo>/../shared/slurm/start-single-node.sh`` (``TRAJDEN_SLURM_SCRIPTS`` names
another folder holding it) and stopped at the end if this module started it. The tests are skipped, with
the reason, only where that cannot work: not root, the scripts are missing, or SLURM is not installed and
Debian's packages cannot be installed. Every other failure (the start script, sbatch, the run) fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from trajden import names

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "cluster_configs" / "slurm-single-node.yaml"
MODEL, K = "fcc-bcc-hcp-lite", 2
FRAMES = "0:8"  # 8 frames of 5324 atoms
RUN_TIMEOUT_S = 600


def _scripts() -> Path:
    return Path(os.environ.get("TRAJDEN_SLURM_SCRIPTS") or REPO.parent / "shared" / "slurm")


def _running() -> bool:
    if shutil.which("sinfo") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and any(state in r.stdout for state in ("idle", "mix", "alloc"))


@pytest.fixture(scope="module")
def slurm():
    scripts = _scripts()
    start, stop = scripts / "start-single-node.sh", scripts / "stop-single-node.sh"
    if not start.is_file() or not stop.is_file():
        pytest.skip(f"no single-node SLURM scripts at {scripts} (set TRAJDEN_SLURM_SCRIPTS)")
    if os.geteuid() != 0:
        pytest.skip("starting SLURM needs root (start-single-node.sh installs and runs slurmctld, slurmd, munged)")
    installed = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sinfo", "munged"))
    if not installed and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install Debian's slurm-wlm packages")
    was_running = _running()
    r = subprocess.run(["bash", str(start)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        text = r.stdout + r.stderr
        if not installed and ("Unable to locate package" in text or "has no installation candidate" in text):
            pytest.skip("Debian's slurmctld/slurmd/munge packages are not available to apt-get here")
        pytest.fail(f"start-single-node.sh failed (exit {r.returncode}):\n{text[-3000:]}")
    try:
        yield
    finally:
        if not was_running:
            subprocess.run(["bash", str(stop)], capture_output=True, text=True, timeout=120)


def _dump() -> str:
    return str(resources.files("trajden.data").joinpath("cu_solidification.dump"))


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OVITO_THREAD_COUNT="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _command(out: Path, frames: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trajden.cli", "process", _dump(), "--out", str(out), "--frames", frames,
            "--model", MODEL, "--iterations", str(K), "--quiet", *extra]


@pytest.fixture(scope="module")
def serial_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "serial.zarr"
    r = subprocess.run(_command(out, FRAMES, "--serial", "--torch-threads", "1"), env=_env(), capture_output=True,
                       text=True, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _assert_same_store(path, reference, frames=None) -> None:
    """Every data variable of ``path`` equals ``reference``'s (its first ``frames`` frames), NaN == NaN."""
    import xarray as xr

    a = xr.open_zarr(path, consolidated=False).load()
    b = xr.open_zarr(reference, consolidated=False).load()
    if frames is not None:
        b = b.isel({names.DIM_FRAME: slice(0, frames)})
    assert sorted(a.data_vars) == sorted(b.data_vars)
    assert bool(a[names.VAR_COMPLETE].all())
    for v in a.data_vars:
        x, y = a[v].values, b[v].values
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), v
    for c in (names.COORD_ATOM_ID, names.COORD_STEP, names.COORD_TIME):
        assert np.array_equal(a[c].values, b[c].values), c


def _jobs() -> dict[str, str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30, check=True)
    return dict(line.split() for line in r.stdout.splitlines() if line.strip())


def _drained(timeout_s: float = 60.0) -> bool:
    """Whether SLURM's queue empties within ``timeout_s`` (cancelled jobs pass through COMPLETING)."""
    deadline = time.monotonic() + timeout_s
    while _jobs():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _complete(store: Path) -> int:
    import zarr

    try:
        return int(np.asarray(zarr.open_group(str(store), mode="r")[names.VAR_COMPLETE][:]).sum())
    except Exception:  # noqa: BLE001 - not created yet
        return -1


def test_slurm_run_equals_serial(slurm, serial_store, tmp_path):
    out = tmp_path / "slurm.zarr"
    r = subprocess.run(_command(out, "0:3", "--cluster", "slurm", "--cluster-config", str(CONFIG)), env=_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_store(out, serial_store, frames=3)
    # the worker ran as a SLURM job: its log is slurm-<jobid>.out in the directory the run started in
    logs = list(tmp_path.glob("slurm-*.out"))
    assert logs and "distributed.worker" in logs[0].read_text()
    assert _drained(), f"cluster.close() left jobs behind: {_jobs()}"


def test_cancelled_worker_is_resubmitted(slurm, serial_store, tmp_path):
    out = tmp_path / "slurm.zarr"
    proc = subprocess.Popen(_command(out, FRAMES, "--cluster", "slurm", "--cluster-config", str(CONFIG)),
                            env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while _complete(out) < 2:  # let the worker write some frames, then kill its job
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no frame written by the SLURM worker"
            time.sleep(0.5)
        before = _jobs()
        running = [j for j, state in before.items() if state == "RUNNING"]
        assert len(running) == 1, before
        done_at_cancel = _complete(out)
        subprocess.run(["scancel", running[0]], check=True, timeout=30)
        seen = set(before)
        while proc.poll() is None:
            seen |= set(_jobs())
            assert time.monotonic() < deadline, "run did not finish after the cancelled job"
            time.sleep(0.5)
        output = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert done_at_cancel < 8, "the job was cancelled mid-run"
    replacements = seen - set(before)
    assert replacements, f"adapt submitted no new job after scancel {running[0]} (jobs seen: {sorted(seen)})"
    assert (tmp_path / f"slurm-{min(replacements, key=int)}.out").is_file()
    _assert_same_store(out, serial_store)
    assert _drained(), f"cluster.close() left jobs behind: {_jobs()}"
