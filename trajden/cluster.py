"""The cluster layer: where per-frame tasks run (serially, on a LocalCluster, or on SLURM) and the workers' setup.

Configuration is layered through :mod:`dask.config`, the way dask-jobqueue does it:

1. packaged defaults ``trajden/trajden.yaml`` (top key ``trajden:``), loaded with
   :func:`dask.config.update_defaults` when this module is imported;
2. Dask's own configuration (``~/.config/dask/*.yaml``, ``DASK_TRAJDEN__SLURM__QUEUE=...`` variables), where a
   site's ``jobqueue: slurm:`` settings (those differing from dask-jobqueue's defaults) sit below ``trajden:`` ones;
3. a user file given with ``--cluster-config FILE`` (``trajden:`` keys, and for convenience plain
   ``jobqueue: slurm:`` keys, which land in ``trajden.slurm``; other top-level keys such as ``distributed:``
   are applied to dask.config when a cluster starts);
4. explicit keyword arguments (command-line options); ``None`` means "not given".

:func:`resolve_config` returns the effective ``trajden`` section; :func:`start_cluster` starts a cluster from
it. Workers get a :class:`ModelPlugin` that loads the model once per worker; tasks call :func:`get_model`,
which returns that model inside a worker and a per-process cached one elsewhere (serial runs, tests), so the
same per-frame function runs serially and on workers.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.config
import yaml
from distributed import WorkerPlugin

from trajden.errors import ClusterError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from trajden.model.package import LoadedModel

logger = logging.getLogger(__name__)


class _MissingFile(ClusterError, FileNotFoundError):
    """A cluster configuration or scheduler file that does not exist."""

#: the packaged defaults
DEFAULTS_FILE = Path(__file__).with_name("trajden.yaml")
#: cluster kinds start_cluster knows ("serial"/None: no Dask, the caller runs frames itself)
KINDS = ("serial", "local", "slurm")
#: placeholder for the scheduler address in dry-run job scripts
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"


def _load_defaults() -> dict:
    with open(DEFAULTS_FILE) as fh:
        defaults = yaml.safe_load(fh)
    dask.config.update_defaults(defaults)
    return defaults


_DEFAULTS = _load_defaults()

# --- known keys -----------------------------------------------------------------------------------------------

LOCAL_KEYS = frozenset({"n-workers", "threads-per-worker", "processes", "memory-limit", "dashboard-address"})
WORKER_KEYS = frozenset({"torch-threads", "ovito-threads", "device"})
#: how the model is evaluated (:class:`trajden.model.options.EvaluatorOptions`)
EVALUATOR_KEYS = frozenset({"compile", "fused", "aggregate", "aot-cache"})
#: deprecated environment variables -> evaluator keys (read only by :func:`_deprecated_env`)
DEPRECATED_ENV = {"TRAJDEN_COMPILE": "compile", "TRAJDEN_FUSED": "fused", "TRAJDEN_AGGREGATE": "aggregate"}
#: slurm keys that trajden consumes itself (not passed to SLURMCluster)
SLURM_OWN_KEYS = frozenset({"n-jobs", "threads-per-worker", "adapt"})
#: SLURMCluster keyword arguments that configure the cluster/scheduler, not the job script
_SLURM_CLUSTER_ONLY = frozenset(
    {"loop", "security", "shared-temp-directory", "silence-logs", "name", "asynchronous", "dashboard-address",
     "host", "scheduler-options", "scheduler-cls", "protocol"}
)


def _import_jobqueue() -> None:
    """Import dask-jobqueue without letting it replace the SIGINT handler.

    ``dask_jobqueue.runner`` calls ``signal.signal(SIGINT, ...)`` at import time, which turns Ctrl-C into
    ``sys.exit`` in the importing process and fails outright when the import happens in a worker thread.
    """
    import signal

    main = threading.current_thread() is threading.main_thread()
    saved = signal.getsignal(signal.SIGINT) if main else None
    real = signal.signal
    if not main:
        signal.signal = lambda *args, **kwargs: None  # the import would raise ValueError off the main thread
    try:
        import dask_jobqueue.core  # noqa: F401
        import dask_jobqueue.slurm  # noqa: F401
    finally:
        signal.signal = real
        if main and saved is not None:
            real(signal.SIGINT, saved)


def _slurm_accepted_keys() -> frozenset:
    _import_jobqueue()
    from dask_jobqueue.core import Job, JobQueueCluster
    from dask_jobqueue.slurm import SLURMJob

    skip = {"self", "scheduler", "name", "base_class_kwargs", "job_kwargs", "n_workers", "job_cls", "config_name"}
    keys = set()
    for fn in (SLURMJob.__init__, Job.__init__, JobQueueCluster.__init__):
        keys |= {p.replace("_", "-") for p in inspect.signature(fn).parameters if p not in skip}
    # "name" is the cluster's name in SLURMCluster, but the job name in jobqueue.yaml; we use job-name for jobs
    return frozenset(keys | {"job-name"} | SLURM_OWN_KEYS | {"dashboard-address", "host"})


SLURM_KEYS = _slurm_accepted_keys()
SECTIONS = {"local": LOCAL_KEYS, "worker": WORKER_KEYS, "slurm": SLURM_KEYS, "evaluator": EVALUATOR_KEYS}

#: flat keyword -> sections it applies to (a flat name known to several sections applies to all of them,
#: except "processes", which means SLURM processes per job; use "local.processes" for LocalCluster's switch)
_FLAT_ROUTES: dict[str, tuple[str, ...]] = {}
for _section, _keys in SECTIONS.items():
    for _key in _keys:
        _FLAT_ROUTES.setdefault(_key, ())
        _FLAT_ROUTES[_key] += (_section,)
_FLAT_ROUTES["processes"] = ("slurm",)


def _dash(key: str) -> str:
    return str(key).replace("_", "-")


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _normalize_section(section: str, values: Any, source: str) -> dict:
    """Dash the keys of one section and check them; values stay as given (``scheduler-options`` is kwargs)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ClusterError(f"{source}: trajden.{section} must be a mapping, not {type(values).__name__}")
    known = SECTIONS[section]
    out = {}
    for key, value in values.items():
        k = _dash(key)
        if section == "slurm" and k == "name":
            k = "job-name"
        if k not in known:
            raise ClusterError(f"{source}: unknown option trajden.{section}.{k}{_suggest(k, known)}")
        out[k] = value
    return out


def _normalize_tree(tree: Any, source: str) -> dict:
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ClusterError(f"{source}: the trajden section must be a mapping")
    out = {}
    for section, values in tree.items():
        s = _dash(section)
        if s not in SECTIONS:
            raise ClusterError(f"{source}: unknown section trajden.{s}{_suggest(s, SECTIONS)}")
        out[s] = _normalize_section(s, values, source)
    return out


def read_cluster_config(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a ``--cluster-config`` YAML file -> (trajden tree, other Dask config keys).

    ``jobqueue: slurm:`` keys are folded into the trajden tree's ``slurm`` section, below the file's own
    ``trajden: slurm:`` keys. Everything else (``distributed:``, other ``jobqueue:`` systems) is returned as
    plain Dask configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise _MissingFile(f"cluster config {path} does not exist")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ClusterError(f"cluster config {path}: not valid YAML{where}") from exc
    if not isinstance(data, dict):
        raise ClusterError(f"cluster config {path}: expected a mapping at the top level")
    data = dict(data)
    tree = _normalize_tree(data.pop("trajden", None), f"cluster config {path}")
    jobqueue = data.pop("jobqueue", None) or {}
    if not isinstance(jobqueue, dict):
        raise ClusterError(f"cluster config {path}: jobqueue must be a mapping")
    jobqueue = dict(jobqueue)
    slurm = _normalize_section("slurm", jobqueue.pop("slurm", None), f"cluster config {path}")
    if slurm:
        tree["slurm"] = {**slurm, **tree.get("slurm", {})}
    if jobqueue:
        data["jobqueue"] = jobqueue
    return tree, data


def _overrides_tree(overrides: dict) -> dict:
    """Keyword overrides (flat ``walltime=``, or dotted ``"slurm.walltime"``/``"trajden.local.n-workers"``)."""
    tree: dict[str, dict] = {}
    for key, value in overrides.items():
        if value is None:  # an option that was not given
            continue
        k = _dash(key)
        if k.startswith("trajden."):
            k = k[len("trajden."):]
        if "." in k:
            section, _, name = k.partition(".")
            if section not in SECTIONS:
                raise ClusterError(f"unknown cluster option {key!r}{_suggest(section, SECTIONS)}")
            if section == "slurm" and name == "name":
                name = "job-name"
            if name not in SECTIONS[section]:
                raise ClusterError(f"unknown cluster option {key!r}{_suggest(name, SECTIONS[section])}")
            tree.setdefault(section, {})[name] = value
            continue
        routes = _FLAT_ROUTES.get(k)
        if not routes:
            raise ClusterError(f"unknown cluster option {key!r}{_suggest(k, _FLAT_ROUTES)}")
        for section in routes:
            tree.setdefault(section, {})[k] = value
    return tree


def _changed(current: dict, default: dict) -> dict:
    return {k: v for k, v in current.items() if k not in default or v != default[k]}


@functools.lru_cache(maxsize=1)
def _jobqueue_packaged_slurm() -> dict:
    """dask-jobqueue's own packaged ``jobqueue.slurm`` defaults (dashed, name -> job-name)."""
    import dask_jobqueue

    with open(Path(dask_jobqueue.__file__).with_name("jobqueue.yaml")) as fh:
        data = yaml.safe_load(fh) or {}
    return _slurm_lenient(data.get("jobqueue", {}).get("slurm"))


def _slurm_lenient(values) -> dict:
    out = {}
    for key, value in (values or {}).items():
        k = _dash(key)
        k = "job-name" if k == "name" else k
        if k in SLURM_KEYS and k not in SLURM_OWN_KEYS:
            out[k] = value
    return out


_WARNED_ENV: set[str] = set()


def _deprecated_env() -> dict:
    """The deprecated ``TRAJDEN_COMPILE`` / ``TRAJDEN_FUSED`` / ``TRAJDEN_AGGREGATE`` variables as an
    ``evaluator`` section (the only place trajden reads them; a FutureWarning once per variable and process).

    ``TRAJDEN_COMPILE=0``/``1`` mean ``compile: off``/``on``, ``TRAJDEN_FUSED=0`` ``fused: false``. They sit just
    above the packaged defaults: every other source (Dask's config, ``--cluster-config``, options) wins.
    """
    out = {}
    for var, key in DEPRECATED_ENV.items():
        value = os.environ.get(var, "")
        if value == "":
            continue
        if var not in _WARNED_ENV:
            _WARNED_ENV.add(var)
            import warnings

            warnings.warn(f"{var} is deprecated: use trajden.evaluator.{key} (Dask config, --cluster-config, or "
                          f"the --{key} option of trajden process)", FutureWarning, stacklevel=3)
        if key == "compile":
            value = {"0": "off", "1": "on"}.get(value, value)
        elif key == "fused":
            value = value != "0"
        out[key] = value
    return {"evaluator": out} if out else {}


def resolve_config(cluster_config: str | os.PathLike | None = None, **overrides) -> dict:
    """The effective ``trajden`` settings: ``{"local": {...}, "worker": {...}, "slurm": {...},
    "evaluator": {...}}`` (dashed keys).

    Precedence, highest first: ``overrides`` (``None`` values are ignored) > the ``cluster_config`` YAML file >
    Dask's configuration of ``trajden.*`` (``~/.config/dask``, ``DASK_TRAJDEN__...``) > a site's own
    ``jobqueue.slurm`` settings in Dask's configuration (values differing from dask-jobqueue's defaults) >
    the deprecated ``TRAJDEN_COMPILE``/``_FUSED``/``_AGGREGATE`` variables (:func:`_deprecated_env`) >
    trajden's packaged defaults. Does not change dask.config.
    """
    packaged = {s: _normalize_section(s, _DEFAULTS["trajden"].get(s), str(DEFAULTS_FILE)) for s in SECTIONS}
    current = dask.config.get("trajden", default={}) or {}
    dask_user = {
        s: _changed(_normalize_section(s, current.get(s), "dask config"), packaged[s]) for s in SECTIONS
    }
    site_jobqueue = _changed(_slurm_lenient(dask.config.get("jobqueue.slurm", default={})), _jobqueue_packaged_slurm())
    user = read_cluster_config(cluster_config)[0] if cluster_config is not None else {}
    return dask.config.merge(packaged, _deprecated_env(), {"slurm": site_jobqueue}, dask_user, user,
                             _overrides_tree(overrides))


def evaluator_options(cluster_config: str | os.PathLike | None = None, **overrides):
    """The effective ``trajden.evaluator`` section (:func:`resolve_config`'s precedence) as
    :class:`~trajden.model.options.EvaluatorOptions`; ``overrides``: ``compile=``, ``fused=``, ``aggregate=``
    (``None``: not given)."""
    from trajden.model.options import EvaluatorOptions

    extra = {f"evaluator.{k}": v for k, v in overrides.items()}
    return EvaluatorOptions.from_config(resolve_config(cluster_config, **extra)["evaluator"])


# --- sizing ---------------------------------------------------------------------------------------------------


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _pos_int(value, what: str) -> int | None:
    """``None`` stays ``None``; a positive integer (or its string) -> int; anything else -> ValueError."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClusterError(f"{what} must be a positive integer, not {value!r}")
    return value


def local_plan(cfg: dict) -> tuple[dict, dict]:
    """Effective config -> (``LocalCluster`` keyword arguments, worker settings).

    Sizing: without ``n-workers``, one worker per GPU when the device is auto/cuda and GPUs are visible,
    else ``cores // (torch-threads * threads-per-worker)`` workers; without ``torch-threads``, the cores are
    shared out between the workers' task slots.
    """
    local, worker = cfg["local"], cfg["worker"]
    cores = dask.system.cpu_count()
    device = str(worker.get("device") or "auto")
    tpw = _pos_int(local.get("threads-per-worker"), "threads-per-worker") or 1
    torch_threads = _pos_int(worker.get("torch-threads"), "torch-threads")
    n_workers = _pos_int(local.get("n-workers"), "n-workers")
    if n_workers is None:
        n_gpus = _cuda_device_count() if device in ("auto", "cuda") else 0
        n_workers = n_gpus or max(1, cores // ((torch_threads or 1) * tpw))
    if torch_threads is None:
        torch_threads = max(1, cores // (n_workers * tpw))
    ovito_threads = _pos_int(worker.get("ovito-threads"), "ovito-threads") or torch_threads
    processes = bool(local.get("processes", True))
    kwargs = {
        "n_workers": n_workers,
        "threads_per_worker": tpw,
        "processes": processes,
        "memory_limit": local.get("memory-limit", "auto"),
        "dashboard_address": local.get("dashboard-address"),
    }
    if processes:  # set in the worker processes before anything imports torch or ovito
        kwargs["env"] = {"OVITO_THREAD_COUNT": str(ovito_threads), "OMP_NUM_THREADS": str(torch_threads)}
    return kwargs, {"device": device, "torch_threads": torch_threads, "ovito_threads": ovito_threads}


def slurm_plan(cfg: dict) -> tuple[dict, dict, int, bool]:
    """Effective config -> (``SLURMCluster`` keyword arguments, worker settings, number of jobs, adapt).

    With ``threads-per-worker`` set, a job books ``cores`` CPUs (``--cpus-per-task``, unless ``job-cpu`` is
    given) but each worker process gets only ``threads-per-worker`` Dask threads; the remaining CPUs are
    for torch/OVITO threads (``torch-threads`` defaults to cpus-per-task // processes // threads-per-worker).
    """
    slurm = dict(cfg["slurm"])
    worker = cfg["worker"]
    n_jobs = _pos_int(slurm.pop("n-jobs", None), "slurm n-jobs") or 1
    tpw = _pos_int(slurm.pop("threads-per-worker", None), "slurm threads-per-worker")
    adapt = bool(slurm.pop("adapt", False))
    slurm = {k: v for k, v in slurm.items() if v is not None}
    sched = dict(slurm.pop("scheduler-options", None) or {})
    for key in ("dashboard-address", "host"):  # SLURMCluster wants these inside scheduler_options
        if key in slurm:
            sched[key.replace("-", "_")] = slurm.pop(key)
    if sched:
        slurm["scheduler-options"] = sched
    cores = _pos_int(slurm.get("cores", dask.config.get("jobqueue.slurm.cores", None)), "slurm cores")
    if cores is None:
        raise ClusterError("slurm cores is not set (CPUs per job): set trajden.slurm.cores or --cores")
    processes = _pos_int(slurm.get("processes", dask.config.get("jobqueue.slurm.processes", None)), "slurm processes")
    processes = processes or 1
    slurm["processes"] = processes
    job_cpu = _pos_int(slurm.get("job-cpu"), "slurm job-cpu")
    if tpw is not None:
        job_cpu = job_cpu or cores
        slurm["cores"] = processes * tpw
        slurm["job-cpu"] = job_cpu
    else:
        job_cpu = job_cpu or cores
        tpw = max(1, cores // processes)
    torch_threads = _pos_int(worker.get("torch-threads"), "torch-threads") or max(1, job_cpu // (processes * tpw))
    ovito_threads = _pos_int(worker.get("ovito-threads"), "ovito-threads") or torch_threads
    kwargs = {k.replace("-", "_"): v for k, v in slurm.items()}
    settings = {"device": str(worker.get("device") or "auto"), "torch_threads": torch_threads,
                "ovito_threads": ovito_threads}
    return kwargs, settings, n_jobs, adapt


def slurm_job_script(kwargs: dict) -> str:
    """The job script ``SLURMCluster(**kwargs)`` would submit, built without starting a scheduler.

    Same as ``SLURMCluster(**kwargs).job_script()`` (dask-jobqueue builds scripts without calling sbatch),
    with the scheduler's address replaced by :data:`SCHEDULER_PLACEHOLDER`; not starting a scheduler means a
    dry run works on a laptop even when the config names a cluster network interface such as ``ib0``.
    """
    from dask_jobqueue.slurm import SLURMJob

    job_kw = {k: v for k, v in kwargs.items() if _dash(k) not in _SLURM_CLUSTER_ONLY}
    job_kw.setdefault("config_name", "slurm")
    job_kw.setdefault("interface", dask.config.get("jobqueue.slurm.interface", None))
    job_kw["protocol"] = kwargs.get("protocol")
    job_kw["security"] = None
    try:
        job = SLURMJob(SCHEDULER_PLACEHOLDER, name="dummy-name", **job_kw)
    except TypeError as exc:
        raise ClusterError(f"invalid SLURM option: {exc}") from exc
    return job.job_script()


# --- starting clusters ----------------------------------------------------------------------------------------


def _apply_dask_config(extra: dict) -> None:
    if extra:
        dask.config.update(dask.config.config, extra, priority="new")


def start_cluster(
    kind: str | None = "local",
    *,
    cluster_config: str | os.PathLike | None = None,
    scheduler_file: str | os.PathLike | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    dry_run: bool = False,
    model: str | os.PathLike | None = None,
    **overrides,
):
    """Start (or attach to) a Dask cluster; return ``(client, cluster_or_None)``.

    kind
        ``"local"``: a ``distributed.LocalCluster`` sized to the machine (see :func:`local_plan`), or, with
        ``scheduler_file``, a ``Client`` attached to a running scheduler (cluster ``None``).
        ``"slurm"``: a dask-jobqueue ``SLURMCluster`` from the layered config, scaled to ``n-jobs`` jobs
        (or to ``n_workers`` workers when that is given); with ``adapt: true`` held there adaptively, so jobs
        that end (walltime, ``--lifetime``) are replaced.
        ``"serial"``/``None``: no Dask; returns ``(None, None)`` and the caller runs frames itself
        (see :func:`configure_process_threads`).
    dry_run
        Start nothing; return a string: for slurm the job script (``#SBATCH`` header + worker command), for
        local a one-line description of the LocalCluster.
    model
        If given, a :class:`ModelPlugin` with the resolved worker settings is registered, so every worker
        (also ones that join later) loads the model once.
    overrides
        Further settings (``walltime="02:00:00"``, ``torch_threads=4``, ``"slurm.queue"="gpu"``...), see
        :func:`resolve_config`; ``None`` values mean "not given".
    """
    kind = "serial" if kind is None else str(kind).lower()
    if kind not in KINDS:
        raise ClusterError(f"unknown cluster kind {kind!r} (choose from {', '.join(KINDS)})")
    if kind == "serial":
        return (None, None) if not dry_run else "serial: no Dask cluster, frames run in this process"

    cfg = resolve_config(cluster_config, n_workers=n_workers, threads_per_worker=threads_per_worker, **overrides)
    extra = read_cluster_config(cluster_config)[1] if cluster_config is not None else {}

    if scheduler_file is not None:
        if kind != "local":
            raise ClusterError(f"scheduler_file attaches to a running scheduler; it cannot be combined with {kind}")
        if not Path(scheduler_file).is_file():
            raise _MissingFile(f"scheduler file {scheduler_file} does not exist (is the scheduler running?)")
        if dry_run:
            return f"attach Client(scheduler_file={str(scheduler_file)!r})"
        from distributed import Client

        _apply_dask_config(extra)
        client = Client(scheduler_file=str(scheduler_file))
        if model is not None:
            settings = {"device": str(cfg["worker"].get("device") or "auto"),
                        "torch_threads": cfg["worker"].get("torch-threads"),
                        "ovito_threads": cfg["worker"].get("ovito-threads")}
            _register_model(client, model, settings)
        return client, None

    if kind == "local":
        kwargs, settings = local_plan(cfg)
        if dry_run:
            shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "env")
            return (f"LocalCluster({shown}); workers: device={settings['device']} "
                    f"torch-threads={settings['torch_threads']} ovito-threads={settings['ovito_threads']}")
        from distributed import Client, LocalCluster

        _apply_dask_config(extra)
        cluster = LocalCluster(**kwargs)
        try:
            client = Client(cluster)
            if model is not None:
                _register_model(client, model, settings)
        except BaseException:
            cluster.close()
            raise
        return client, cluster

    # slurm
    kwargs, settings, n_jobs, adapt = slurm_plan(cfg)
    if dry_run:
        return slurm_job_script(kwargs)
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    _apply_dask_config(extra)
    try:
        cluster = SLURMCluster(**kwargs)
    except TypeError as exc:
        raise ClusterError(f"invalid SLURM option: {exc}") from exc
    try:
        client = Client(cluster)
        if model is not None:
            _register_model(client, model, settings)
        if adapt:  # keep the jobs topped up: replaces jobs that end (walltime, worker --lifetime)
            if n_workers is not None:
                cluster.adapt(minimum=n_workers, maximum=n_workers)
            else:
                cluster.adapt(minimum_jobs=n_jobs, maximum_jobs=n_jobs)
        elif n_workers is not None:
            cluster.scale(n=n_workers)
        else:
            cluster.scale(jobs=n_jobs)
    except BaseException:
        cluster.close()
        raise
    return client, cluster


def close_cluster(client, cluster) -> None:
    """Close what :func:`start_cluster` returned (either may be ``None``)."""
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def dask_client(kind: str | None = "local", **kwargs) -> Iterator[Client | None]:
    """``with dask_client("local", model=...) as client:`` -- :func:`start_cluster`, closed on exit.

    Yields ``None`` for the serial kind.
    """
    client, cluster = start_cluster(kind, **kwargs)
    try:
        yield client
    finally:
        close_cluster(client, cluster)


# --- worker setup ---------------------------------------------------------------------------------------------


def configure_process_threads(torch_threads: int | None = None, ovito_threads: int | None = None) -> dict:
    """Set this process's torch intra-op threads and ``OVITO_THREAD_COUNT`` (``None`` leaves one unchanged).

    OVITO reads ``OVITO_THREAD_COUNT`` when it starts, so call this before ``import ovito``.
    Returns the values in effect.
    """
    import torch

    if torch_threads is not None:
        torch.set_num_threads(_pos_int(torch_threads, "torch-threads"))
    if ovito_threads is not None:
        os.environ["OVITO_THREAD_COUNT"] = str(_pos_int(ovito_threads, "ovito-threads"))
    return {"torch_threads": torch.get_num_threads(), "ovito_threads": os.environ.get("OVITO_THREAD_COUNT")}


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`tune_malloc` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 128 << 20


@functools.cache  # once per process
def tune_malloc() -> bool:
    """Let glibc's heap serve the evaluator's short-lived MB-sized tensors (a Dask worker's default makes every
    one a fresh ``mmap``).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches off glibc's
    adaptive mmap threshold: every allocation above 128 kB (most of the evaluator's per-block tensors) is then
    mapped, page-faulted and unmapped again, and denoising ran 1.85x slower on a worker than in a plain process
    (32k-atom frame, one thread: 15.3 s vs 8.3 s). Sets the mmap threshold to 32 MB (glibc's adaptive
    maximum) and the trim threshold to 128 MB (at most that much freed memory is kept per process).
    Returns False where it does not apply (not glibc); runs once per process.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    global MALLOC_TUNED
    MALLOC_TUNED = bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
    return MALLOC_TUNED


#: whether :func:`tune_malloc` succeeded in this process
MALLOC_TUNED = False


def pick_device(device: str | None = "auto", index: int | None = None) -> str:
    """``auto`` -> ``cuda`` if available else ``cpu``; ``cuda`` -> ``cuda:{index % number of GPUs}``."""
    dev = str(device or "auto").lower()
    if dev == "cpu":
        return "cpu"
    import torch

    if dev == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        dev = "cuda"
    if dev == "cuda":
        if not torch.cuda.is_available():
            raise ClusterError("device cuda requested but torch sees no CUDA GPU")
        return f"cuda:{(index or 0) % torch.cuda.device_count()}"
    try:
        return str(torch.device(dev))
    except RuntimeError:
        raise ClusterError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None


def worker_index(name) -> int:
    """A worker's index from its name: LocalCluster names are 0, 1, ...; SLURMCluster ones end in -N."""
    if isinstance(name, int):
        return name
    m = re.search(r"(\d+)$", str(name))
    return int(m.group(1)) if m else 0


def _model_key(model: str | os.PathLike) -> str:
    """Shipped names stay names; existing files become absolute paths (workers may run elsewhere)."""
    text = str(model)
    from trajden.model.package import shipped_models

    try:
        if text in shipped_models():  # load_model looks names up first, too
            return text
    except (OSError, ValueError):  # no readable registry
        pass
    path = Path(text)
    return str(path.resolve()) if path.exists() else text


class ModelPlugin(WorkerPlugin):
    """Set threads, pick the device and load the model once per worker.

    The model is a shipped model's name or a file path (made absolute here, so a shared file system path
    works on SLURM nodes); a file's sha256 is recorded here and checked on the workers, so all workers run the
    same model. ``device``: ``auto`` (cuda if available, else cpu), ``cpu``, ``cuda`` (the worker's index
    modulo the GPU count) or ``cuda:N``.
    """

    def __init__(self, model: str | os.PathLike, device: str = "auto", torch_threads: int | None = None,
                 ovito_threads: int | None = None, sha256: str | None = None):
        self.model = _model_key(model)
        self.device = str(device or "auto")
        self.torch_threads = torch_threads
        self.ovito_threads = ovito_threads
        if sha256 is None and Path(self.model).is_file():
            from trajden.model.package import sha256_of

            sha256 = sha256_of(self.model)
        self.sha256 = sha256
        self.name = f"trajden-model:{self.model}"
        self.loaded: LoadedModel | None = None

    def setup(self, worker) -> None:
        configure_process_threads(self.torch_threads, self.ovito_threads)
        tune_malloc()
        device = pick_device(self.device, worker_index(worker.name))
        from trajden.model.package import load_model

        self.loaded = load_model(self.model, device, expected_sha256=self.sha256)
        logger.info("worker %s: model %s on %s, torch threads %s", worker.name, self.loaded.name, device,
                    self.torch_threads)

    def teardown(self, worker) -> None:
        self.loaded = None

    def __getstate__(self):  # never ship a loaded model
        state = dict(self.__dict__)
        state["loaded"] = None
        return state


def _register_model(client, model, settings: dict) -> ModelPlugin:
    plugin = ModelPlugin(model, settings["device"], settings["torch_threads"], settings["ovito_threads"])
    client.register_plugin(plugin)
    return plugin


_CACHE: dict[tuple[str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def _current_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def get_model(model: str | os.PathLike, device: str = "auto") -> LoadedModel:
    """The loaded model for a task.

    Inside a worker with a matching :class:`ModelPlugin` (same model; ``device`` ``auto`` or the plugin's),
    the plugin's model; otherwise (serial runs, tests, workers without the plugin) the model is loaded once
    per process and cached by (model, device).
    """
    key = _model_key(model)
    worker = _current_worker()
    if worker is not None:
        tune_malloc()  # also on workers without the plugin (e.g. a user's own cluster)
        for plugin in list(worker.plugins.values()):
            if (isinstance(plugin, ModelPlugin) and plugin.model == key and plugin.loaded is not None
                    and device in (None, "auto", plugin.device, str(plugin.loaded.device))):
                return plugin.loaded
    dev = pick_device(device, worker_index(worker.name) if worker is not None else None)
    with _CACHE_LOCK:
        entry = (key, dev, _file_stamp(key))
        loaded = _CACHE.get(entry)
        if loaded is None:
            from trajden.model.package import load_model

            loaded = _CACHE[entry] = load_model(key, dev)  # verified against its sha256 here
        return loaded


def _file_stamp(key: str) -> tuple | None:
    """(path, size, mtime) of the model file behind ``key``: a file changed since it was loaded is a cache miss,
    so it is loaded (and its checksum verified) again; None where it cannot be found (load_model says why)."""
    from trajden.errors import ModelError
    from trajden.model.package import resolve_model

    try:
        path = resolve_model(key)[0]
        st = os.stat(path)
    except (OSError, ModelError):
        return None
    return str(path), st.st_size, st.st_mtime_ns


def remember_model(model: str | os.PathLike, loaded: LoadedModel) -> None:
    """Put an already loaded (and verified) model into this process's cache for :func:`get_model`."""
    key = _model_key(model)
    with _CACHE_LOCK:
        _CACHE[(key, str(loaded.device), _file_stamp(key))] = loaded


def clear_model_cache() -> None:
    """Forget this process's cached models (not the workers' plugins)."""
    with _CACHE_LOCK:
        _CACHE.clear()
