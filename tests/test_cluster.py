"""The cluster layer: config precedence, SLURM job scripts, LocalCluster workers with ModelPlugin, get_model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dask
import pytest
import torch
import yaml

from trajden import cluster
from trajden.model.package import REQUIRED_KEYS, export_model

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "cluster_configs" / "slurm-gpu.yaml"
CPU_CONFIG = REPO / "cluster_configs" / "slurm-cpu.yaml"


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    meta = {
        "name": "tiny-test",
        "cutoff": 1.2,
        "nn_distance": 1.0,
        "species": ["X"],
        "structures": ["fcc"],
        "sigma_max": 0.1,
        "trajden_version": "0",
    }
    assert set(REQUIRED_KEYS) <= set(meta)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    export_model(torch.jit.script(_Tiny()), meta, path)
    return str(path)


def _write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


# --- configuration ----------------------------------------------------------------------------------------------


def test_packaged_defaults_loaded():
    assert dask.config.get("trajden.local.threads-per-worker") == 1
    assert dask.config.get("trajden.worker.device") == "auto"
    cfg = cluster.resolve_config(None)
    assert set(cfg) == {"local", "worker", "slurm", "evaluator"}
    # aot-cache: "auto" in the package; the tests' environment (tests/conftest.py) switches it off
    assert cfg["evaluator"] == {"compile": "auto", "fused": True, "aggregate": "auto", "aot-cache": "off"}
    import yaml

    packaged = yaml.safe_load((Path(cluster.__file__).parent / "trajden.yaml").read_text())
    assert packaged["trajden"]["evaluator"]["aot-cache"] == "auto"
    assert cfg["local"]["n-workers"] is None
    assert cfg["slurm"]["walltime"] == "01:00:00"


def test_precedence_kwargs_over_user_yaml_over_defaults(tmp_path):
    user = _write(
        tmp_path / "c.yaml",
        {
            "trajden": {"local": {"n_workers": 3}, "worker": {"torch-threads": 2}, "slurm": {"queue": "short"}},
            "jobqueue": {"slurm": {"walltime": "02:00:00", "queue": "ignored", "account": "proj"}},
        },
    )
    cfg = cluster.resolve_config(user)
    assert cfg["local"]["n-workers"] == 3  # user YAML beats defaults (underscore spelling accepted)
    assert cfg["local"]["threads-per-worker"] == 1  # default kept
    assert cfg["slurm"]["walltime"] == "02:00:00"  # jobqueue: slurm: keys land in trajden.slurm
    assert cfg["slurm"]["queue"] == "short"  # trajden: beats jobqueue: in the same file
    assert cfg["slurm"]["account"] == "proj"

    cfg = cluster.resolve_config(user, n_workers=5, walltime="00:10:00", torch_threads=None, **{"slurm.queue": "q"})
    assert cfg["local"]["n-workers"] == 5  # kwargs beat user YAML
    assert cfg["slurm"]["walltime"] == "00:10:00"
    assert cfg["slurm"]["queue"] == "q"  # dotted keys
    assert cfg["worker"]["torch-threads"] == 2  # None means "not given"

    # dask's own config (~/.config/dask, env) sits between the packaged defaults and the user file
    with dask.config.set({"trajden.slurm.queue": "from-dask", "trajden.slurm.account": "dask-acct"}):
        assert cluster.resolve_config(None)["slurm"]["queue"] == "from-dask"
        cfg = cluster.resolve_config(user)
        assert cfg["slurm"]["queue"] == "short" and cfg["slurm"]["account"] == "proj"
    assert cluster.resolve_config(None)["slurm"]["queue"] is None  # nothing leaked into dask.config


def test_evaluator_options_precedence(tmp_path, monkeypatch):
    """trajden.evaluator.*: kwargs (command line) > --cluster-config file > Dask's config > the deprecated
    TRAJDEN_* variables > packaged defaults."""
    from trajden.model.options import EvaluatorOptions

    for var in cluster.DEPRECATED_ENV:
        monkeypatch.delenv(var, raising=False)
    assert cluster.evaluator_options() == EvaluatorOptions("auto", True, "auto")
    monkeypatch.setenv("TRAJDEN_COMPILE", "0")
    monkeypatch.setenv("TRAJDEN_FUSED", "0")
    monkeypatch.setattr(cluster, "_WARNED_ENV", set())
    with pytest.warns(FutureWarning, match="TRAJDEN_COMPILE is deprecated"):
        assert cluster.evaluator_options() == EvaluatorOptions("off", False, "auto")
    with dask.config.set({"trajden.evaluator.compile": "on", "trajden.evaluator.aggregate": "atomic"}):
        assert cluster.evaluator_options() == EvaluatorOptions("on", False, "atomic")  # Dask's config beats env
        user = _write(tmp_path / "e.yaml", {"trajden": {"evaluator": {"aggregate": "padded", "fused": True}}})
        assert cluster.evaluator_options(user) == EvaluatorOptions("on", True, "padded")  # the file beats Dask's
        assert cluster.evaluator_options(user, compile="off", fused=None, aggregate="layer") == EvaluatorOptions(
            "off", True, "layer")  # keyword arguments beat the file; None: not given
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        cluster.evaluator_options(compile="sometimes")
    with pytest.raises(ValueError, match=r"unknown option trajden.evaluator.fuse \(did you mean 'fused'"):
        cluster.resolve_config(_write(tmp_path / "bad.yaml", {"trajden": {"evaluator": {"fuse": False}}}))


def test_site_jobqueue_config_layer(tmp_path):
    """A site's jobqueue.slurm settings (e.g. ~/.config/dask/jobqueue.yaml) beat trajden's packaged defaults."""
    site = {"jobqueue.slurm.cores": 48, "jobqueue.slurm.walltime": "00:30:00", "jobqueue.slurm.name": "site"}
    with dask.config.set(site):
        cfg = cluster.resolve_config(None)
        assert cfg["slurm"]["cores"] == 48 and cfg["slurm"]["job-name"] == "site"
        assert cfg["slurm"]["walltime"] == "01:00:00"  # 00:30:00 is dask-jobqueue's default, not a site choice
        with dask.config.set({"trajden.slurm.cores": 16}):
            assert cluster.resolve_config(None)["slurm"]["cores"] == 16
        user = _write(tmp_path / "c.yaml", {"trajden": {"slurm": {"cores": 8}}})
        assert cluster.resolve_config(user)["slurm"]["cores"] == 8
        assert "#SBATCH -J site" in cluster.start_cluster("slurm", dry_run=True)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'walltime'"):
        cluster.resolve_config(None, wall_time="01:00:00")
    with pytest.raises(ValueError, match="unknown option trajden.local.n-worker"):
        cluster.resolve_config(_write(tmp_path / "bad.yaml", {"trajden": {"local": {"n-worker": 2}}}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cluster.resolve_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("trajden: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        cluster.resolve_config(tmp_path / "broken.yaml")


def test_local_plan_sizing():
    cores = dask.system.cpu_count()
    kw, st = cluster.local_plan(cluster.resolve_config(None, device="cpu"))
    assert kw["n_workers"] == cores and kw["threads_per_worker"] == 1 and kw["processes"] is True
    assert st == {"device": "cpu", "torch_threads": 1, "ovito_threads": 1}
    kw, st = cluster.local_plan(cluster.resolve_config(None, device="cpu", n_workers=1))
    assert kw["n_workers"] == 1 and st["torch_threads"] == cores
    kw, st = cluster.local_plan(cluster.resolve_config(None, device="cpu", torch_threads=cores, ovito_threads=7))
    assert kw["n_workers"] == 1 and st["ovito_threads"] == 7
    assert kw["env"]["OVITO_THREAD_COUNT"] == "7"
    with pytest.raises(ValueError, match="positive integer"):
        cluster.local_plan(cluster.resolve_config(None, n_workers=0))


# --- SLURM ------------------------------------------------------------------------------------------------------


def test_slurm_dry_run_gpu_config():
    script = cluster.start_cluster("slurm", dry_run=True, cluster_config=str(GPU_CONFIG))
    assert script.startswith("#!/usr/bin/env bash")
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "--nthreads 2" in script and "--nworkers" not in script  # one process per GPU, 2 frame slots
    assert "module load cuda" in script
    assert cluster.SCHEDULER_PLACEHOLDER in script

    script = cluster.start_cluster(
        "slurm", dry_run=True, cluster_config=str(GPU_CONFIG), walltime="00:20:00", queue="debug", account=None
    )
    assert "#SBATCH -t 00:20:00" in script and "#SBATCH -p debug" in script
    assert "#SBATCH -A my-project" in script  # account=None: not given, the YAML's stays
    assert "#SBATCH -t 02:00:00" not in script


def test_slurm_cpu_config_threads():
    cfg = cluster.resolve_config(str(CPU_CONFIG))
    kw, st, n_jobs, adapt = cluster.slurm_plan(cfg)
    assert (kw["cores"], kw["processes"], kw["job_cpu"]) == (8, 8, 32)
    assert st == {"device": "cpu", "torch_threads": 4, "ovito_threads": 4}
    assert n_jobs == 4 and adapt is True
    script = cluster.slurm_job_script(kw)
    assert "#SBATCH --cpus-per-task=32" in script and "--nworkers 8" in script and "--nthreads 1" in script


def test_slurm_job_script_matches_slurmcluster():
    """Our scheduler-less script is what SLURMCluster(**kw).job_script() gives (SLURM itself not needed)."""
    from dask_jobqueue import SLURMCluster

    kw, _, _, _ = cluster.slurm_plan(cluster.resolve_config(str(GPU_CONFIG), interface=None))
    kw = dict(kw, scheduler_options={"dashboard_address": None, "host": "127.0.0.1"})
    with SLURMCluster(**kw) as c:
        expected = c.job_script().replace(c.scheduler_address, cluster.SCHEDULER_PLACEHOLDER)
    assert cluster.slurm_job_script(kw) == expected


def test_start_cluster_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown cluster kind 'pbs'"):
        cluster.start_cluster("pbs")
    with pytest.raises(FileNotFoundError, match="scheduler file .* does not exist"):
        cluster.start_cluster("local", scheduler_file=tmp_path / "scheduler.json")
    assert cluster.start_cluster("serial") == (None, None)
    assert cluster.start_cluster(None) == (None, None)
    with cluster.dask_client("serial") as client:
        assert client is None
    assert cluster.start_cluster("local", dry_run=True, n_workers=2).startswith("LocalCluster(n_workers=2")


# --- devices and models -----------------------------------------------------------------------------------------


def test_pick_device_and_worker_index(monkeypatch):
    assert cluster.pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cluster.pick_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        cluster.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert cluster.pick_device("auto", 6) == "cuda:2"
    assert cluster.pick_device("cuda") == "cuda:0"
    assert cluster.pick_device("cuda:3", 1) == "cuda:3"
    with pytest.raises(ValueError, match="unknown device"):
        cluster.pick_device("tpu-ish")
    assert cluster.worker_index(3) == 3
    assert cluster.worker_index("SLURMCluster-12-1") == 1
    assert cluster.worker_index("tcp://x") == 0


def test_get_model_serial_caches(tiny_model):
    cluster.clear_model_cache()
    a = cluster.get_model(tiny_model, "cpu")
    b = cluster.get_model(os.path.relpath(tiny_model), "auto")  # same file, auto resolves to cpu here
    assert a is b and a.name == "tiny-test" and str(a.device) == "cpu"
    cluster.clear_model_cache()
    assert cluster.get_model(tiny_model, "cpu") is not a
    cluster.clear_model_cache()


def test_configure_process_threads(monkeypatch):
    monkeypatch.delenv("OVITO_THREAD_COUNT", raising=False)
    before = torch.get_num_threads()
    try:
        got = cluster.configure_process_threads(1, 3)
        assert got == {"torch_threads": 1, "ovito_threads": "3"} and os.environ["OVITO_THREAD_COUNT"] == "3"
        assert cluster.configure_process_threads()["torch_threads"] == 1  # None leaves things alone
    finally:
        torch.set_num_threads(before)


def test_local_cluster_model_plugin(tiny_model):
    """Two worker processes; each loads the model once through ModelPlugin and tasks get it via get_model."""

    def task(path, i):
        import os

        import torch
        from distributed import get_worker

        from trajden import cluster as c
        from trajden.cluster import ModelPlugin, get_model

        m = get_model(path)
        plugins = [p for p in get_worker().plugins.values() if isinstance(p, ModelPlugin)]
        out = m.module(torch.ones(1, 3)).shape[-1]
        return (get_worker().name, os.getpid(), id(m), m is plugins[0].loaded, m.name, str(m.device), out,
                os.environ.get("OVITO_THREAD_COUNT"), torch.get_num_threads(), c.MALLOC_TUNED)

    client, lc = cluster.start_cluster(
        "local", n_workers=2, device="cpu", torch_threads=1, ovito_threads=2, dashboard_address=None,
        model=tiny_model,
    )
    try:
        assert lc is not None and len(client.scheduler_info()["workers"]) == 2
        results = client.gather(client.map(task, [tiny_model] * 8, range(8), pure=False))
    finally:
        cluster.close_cluster(client, lc)
    assert all(r[3] for r in results)  # the plugin's model
    assert {r[4:9] for r in results} == {("tiny-test", "cpu", 3, "2", 1)}
    if sys.platform == "linux":  # glibc: the plugin undid the nanny's MALLOC_TRIM_THRESHOLD_ (see tune_malloc)
        assert all(r[9] for r in results)
    by_pid: dict[int, set] = {}
    for r in results:
        by_pid.setdefault(r[1], set()).add(r[2])
    assert all(len(ids) == 1 for ids in by_pid.values())  # one model object per worker process


def test_model_plugin_rejects_changed_file(tiny_model, tmp_path):
    plugin = cluster.ModelPlugin(tiny_model, "cpu")
    assert plugin.sha256 and plugin.model == str(Path(tiny_model).resolve())
    assert plugin.__getstate__()["loaded"] is None

    class FakeWorker:
        name = 1

    plugin.setup(FakeWorker())
    assert plugin.loaded is not None and plugin.loaded.name == "tiny-test"
    bad = cluster.ModelPlugin(tiny_model, "cpu", sha256="0" * 64)
    from trajden.model.package import ModelFileError

    with pytest.raises(ModelFileError, match="does not match"):
        bad.setup(FakeWorker())
