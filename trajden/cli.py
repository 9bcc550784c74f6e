"""The ``trajden`` command line: ``process``, ``train``, ``fractions``, ``plot``, ``export``, ``models``."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from trajden import __version__
from trajden.errors import InputError, ModelError, StoreError, TrajdenError

#: when this module was imported (``trajden process --profile`` reports the start-up before the frames from it)
_T_MAIN = time.perf_counter()


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``trajden: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"trajden: error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _say(args):
    """Where informational lines go: stderr, or nowhere with ``--quiet`` (warnings and errors always print)."""
    if getattr(args, "quiet", False):
        return lambda msg: None
    return lambda msg: print(f"trajden: {msg}", file=sys.stderr)


def _log_aot_builds(args) -> None:
    """Say on stderr (unless ``--quiet``) when this process compiles a model's layers ahead of time (once per
    machine: a minute or two that later runs do not pay)."""
    import logging

    log = logging.getLogger("trajden.model.aot")
    if getattr(args, "quiet", False) or any(getattr(h, "_trajden", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trajden: %(message)s"))
    handler._trajden = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _check_options(args) -> None:
    """Options argparse cannot check by type alone: one-line InputError naming the flag."""
    positive = {"--iterations": args.iterations, "--window": args.window, "--workers": args.workers,
                "--torch-threads": args.torch_threads, "--ovito-threads": args.ovito_threads}
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise InputError(f"{flag} {value}: expected a positive integer")
    finite = {"--tol": (args.tol, 0.0), "--ptm-rmsd-cutoff": (args.ptm_rmsd_cutoff, 0.0),
              "--timestep": (args.timestep, None)}
    for flag, (value, lowest) in finite.items():
        if value is None:
            continue
        ok = value == value and abs(value) != float("inf") and (value >= lowest if lowest is not None else value > 0)
        if not ok:
            what = "a number >= 0" if lowest is not None else "a positive number"
            raise InputError(f"{flag} {value}: expected {what}")


def _cmd_train(args) -> int:
    from trajden.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    result = train(cfg, args.out, max_steps_this_run=args.max_steps_this_run)
    return 0 if result["done"] else 3


def _blocks_arg(values):
    """``--blocks``: nothing, ``auto``, or three positive integers."""
    if not values:
        return None
    if values == ["auto"]:
        return "auto"
    try:
        counts = tuple(int(v) for v in values)
    except ValueError:
        counts = ()
    if len(counts) != 3 or min(counts) < 1:
        raise InputError(f"--blocks {' '.join(values)}: expected 'auto' or three positive integers NX NY NZ")
    return counts


def _cmd_process(args) -> int:
    from trajden import execution, names
    from trajden.cluster import close_cluster, configure_process_threads, evaluator_options, start_cluster
    from trajden.io.readers import Trajectory, parse_frames
    from trajden.pipeline import ProcessSettings, run, summary_text

    _check_options(args)
    try:
        scale = args.scale if args.scale == "auto" else float(args.scale)
    except ValueError:
        scale = None
    if scale is None or (scale != "auto" and not 0 < scale < float("inf")):
        raise InputError(f"--scale {args.scale}: expected 'auto' or a positive nearest-neighbour distance (angstrom)")
    classifiers = tuple(names.CLASSIFIERS) if args.classifier == "both" else (args.classifier,)
    settings = ProcessSettings(
        model=args.model, device=args.device, method=args.method, iterations=args.iterations, tol=args.tol,
        scale=scale, classifiers=classifiers, ptm_rmsd_cutoff=args.ptm_rmsd_cutoff, keep_raw=args.keep_raw,
        window=args.window, torch_threads=args.torch_threads, ovito_threads=args.ovito_threads,
        blocks=_blocks_arg(args.blocks), sublattice=args.sublattice,
        evaluator=evaluator_options(args.cluster_config, compile=args.compile, fused=args.fused,
                                    aggregate=args.aggregate, aot_cache=args.aot_cache),
    )
    _log_aot_builds(args)
    requested = "serial" if args.serial else args.cluster
    kind = "local" if requested == execution.AUTO else requested  # a dry run does not read the input
    if args.dry_run:
        text = start_cluster(kind, cluster_config=args.cluster_config, scheduler_file=args.scheduler_file,
                             n_workers=args.workers, dry_run=True, device=args.device,
                             torch_threads=args.torch_threads, ovito_threads=args.ovito_threads)
        if requested == execution.AUTO:
            text += (f"\n(--cluster auto: a single frame or fewer than {execution.SERIAL_MAX_ATOM_FRAMES} atom-frames "
                     "run in this process instead)")
        print(text)
        return 0
    traj = Trajectory(args.trajectory, format=args.format, topology=args.topology, timestep_ps=args.timestep,
                      species=args.species, atom_style=args.atom_style)
    for w in traj.warnings:
        print(f"trajden: warning: {w}", file=sys.stderr)
    frames = parse_frames(args.frames, len(traj))
    if not frames:
        raise InputError(f"{args.trajectory[0]}: no frames selected by --frames {args.frames}")
    from trajden.io.species import require_elements
    from trajden.pipeline import check_frame, resolve_model

    first = check_frame(traj.frame(frames[0]))
    if settings.method == "denoise" and settings.model != "auto":
        from trajden.cluster import get_model
        from trajden.pipeline import _check_types

        # a given model that cannot take the types is named first (loaded once: get_model caches it for the run)
        _check_types(first, get_model(settings.model, "cpu"))
    require_elements(first)  # several types and no element names: one line naming --species, nothing written
    settings = resolve_model(first, settings, log=_say(args))
    _hint_compile(settings, args)
    kind, reason = execution.choose_execution(requested, len(frames), traj.n_atoms,
                                              explicit_dask=args.workers is not None or args.scheduler_file is not None)
    try:
        frames_per_chunk = execution.frames_per_chunk(args.frames_per_chunk, len(frames), traj.n_atoms)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    mode = "scheduler" if args.scheduler_file is not None and kind == "local" else kind
    if requested == execution.AUTO and kind == "serial":
        _say(args)(f"running in this process, no Dask cluster ({reason}; --cluster local to start one)")
    elif requested == execution.AUTO:
        _say(args)(f"starting a Dask LocalCluster ({reason})")
    client = cluster = None
    if kind == "serial":
        # chosen for a small input (--cluster auto): the cluster's cores go to torch/OVITO threads instead
        default = 1 if requested == "serial" else execution.usable_cores()
        torch_threads = args.torch_threads or default
        configure_process_threads(torch_threads, args.ovito_threads or torch_threads)
    else:
        model = None if settings.method == "average" or settings.model == "none" else settings.model
        client, cluster = start_cluster(
            kind, cluster_config=args.cluster_config, scheduler_file=args.scheduler_file, n_workers=args.workers,
            model=model, device=args.device, torch_threads=args.torch_threads, ovito_threads=args.ovito_threads,
        )
    t_run = time.perf_counter()
    try:
        summary = run(traj, frames, args.out, settings, client=client, overwrite=args.overwrite,
                      frames_per_chunk=frames_per_chunk, progress=not args.quiet, execution=(mode, reason))
    finally:
        t_close = time.perf_counter()
        if client is not None:
            close_cluster(client, cluster)
    if args.profile:
        _write_profile(args.profile, summary, mode, reason, startup=t_run - _T_MAIN,
                       close=time.perf_counter() - t_close, frames_per_chunk=frames_per_chunk)
    print(summary_text(summary))
    if summary.failures:
        first, why = min(summary.failures.items())
        more = f"; {len(summary.failures) - 1} more in the summary" if len(summary.failures) > 1 else ""
        if set(summary.failures) <= summary.retryable:
            todo = "re-run the same command to retry them"
        elif all(summary.statuses.get(j) == names.FRAME_STATUS_BAD_INPUT for j in summary.failures):
            todo = "fix the input, or leave those frames out with --frames"
        else:
            todo = "an unexpected error (a bug? please report it with the summary above)"
        print(f"trajden: error: {len(summary.failures)} of {summary.frames_total} frame(s) failed (frame {first}: "
              f"{why}{more}); {todo}", file=sys.stderr)
        return 1
    return 0


def _write_profile(path, summary, mode: str, reason: str, startup: float, close: float, frames_per_chunk: int):
    """``--profile``: where the command's time went, as JSON (stages summed over tasks, :mod:`trajden.spans`).

    ``startup_s``: from importing the command line until the frames could start (input opened, cluster started);
    ``prepare_s``: store preparation; ``frames_s``: the frames' wall time; ``idle_s``: worker time in no task
    (``n_workers * frames_s`` minus the tasks' own time); ``other`` in ``stages``: task time in no span.
    """
    import json

    stages = dict(summary.stages)
    tasks = stages.pop("tasks", 0.0)
    stages["other"] = max(tasks - sum(stages.values()), 0.0)
    data = {
        "execution": mode, "execution_reason": reason, "n_workers": summary.n_workers,
        "frames": summary.frames_done, "atoms": summary.n_atoms, "frames_per_chunk": frames_per_chunk,
        "startup_s": startup, "prepare_s": summary.prepare_seconds, "frames_s": summary.seconds,
        "close_s": close, "tasks_s": tasks, "idle_s": max(summary.n_workers * summary.seconds - tasks, 0.0),
        "stages_s": stages, "statuses": {str(k): v for k, v in sorted(summary.statuses.items())},
    }
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)


def _open_store(path):
    from trajden.store import Store

    return Store.open(path, mode="r").to_xarray()


@contextlib.contextmanager
def _about_store(path):
    """Name the store in store errors raised by the analysis and export functions (which see a Dataset)."""
    try:
        yield
    except StoreError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint, retryable=exc.retryable) from None


def _cmd_fractions(args) -> int:
    import numpy as np

    from trajden import names
    from trajden.analysis import phase_fractions

    ds = _open_store(args.store)
    methods = names.CLASSIFIERS if args.method == "both" else (args.method,)
    tables = {}
    for m in methods:
        if names.structure_var(m, raw=args.raw) not in ds:
            raise InputError(f"{args.store}: no {names.structure_var(m, raw=args.raw)} in this store")
        tables[m] = phase_fractions(ds, method=m, raw=args.raw).compute()
    status = _frame_status(ds)
    if names.PTM in methods and names.sublattice_var(args.raw) in ds:
        key = f"ptm-{ds.attrs.get(names.ATTR_SUBLATTICE, 'sublattice')}-sublattice"
        tables[key] = phase_fractions(ds, raw=args.raw, sublattice=True).compute()
    if names.PTM in methods and names.ordering_var(args.raw) in ds:
        from trajden.analysis import ordering_fractions

        tables["ptm-ordering"] = ordering_fractions(ds, raw=args.raw).rename(ordering="structure").compute()
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            # every label code is a column for every method (0 where the classifier never gives it, e.g. ico
            # for PTM), so files from different methods and stores line up column for column
            every = list(names.STRUCTURE_NAMES.values())
            header = ["frame", "step", "time_ps"]
            for m in tables:
                header += [f"{m}_{s}" for s in every]
            w.writerow([*header, "status"])
            for i in range(ds.sizes[names.DIM_FRAME]):
                row = [i, int(ds[names.COORD_STEP].values[i]), float(ds[names.COORD_TIME].values[i])]
                for t in tables.values():
                    have = dict(zip((str(s) for s in t["structure"].values), t.values[i]))
                    written = bool(np.isfinite(t.values[i]).all())
                    row += [f"{have.get(s, 0.0 if written else np.nan):.6f}" for s in every]
                w.writerow([*row, status[i]])
        print(f"wrote {args.csv}")
    kind = "raw" if args.raw else "denoised"
    for m, t in tables.items():
        structures = [str(s) for s in t["structure"].values]
        vals = t.values  # (frame, structure)
        keep = [k for k in range(len(structures)) if np.nanmax(np.nan_to_num(vals[:, k])) >= 0.0005]
        print(f"{m} ({kind}) phase fractions, %")
        if args.all:
            print("  frame      step    time/ps " + "".join(f"{structures[k]:>8s}" for k in keep))
            for i in range(vals.shape[0]):
                step, time_ps = int(ds[names.COORD_STEP].values[i]), float(ds[names.COORD_TIME].values[i])
                if not np.isfinite(vals[i]).all():  # no result: say why instead of printing NaN
                    print(f"  {i:5d} {step:9d} {time_ps:10.3f}   ({status[i]})")
                    continue
                print(f"  {i:5d} {step:9d} {time_ps:10.3f} " + "".join(f"{100 * vals[i, k]:8.2f}" for k in keep))
        else:
            print("  " + " " * 8 + "".join(f"{structures[k]:>8s}" for k in keep))
            written = np.flatnonzero(np.isfinite(vals).all(axis=1))
            if not len(written):
                print("  (no complete frames)")
                continue
            if len(written) < len(vals):
                missing = sorted(set(range(len(vals))) - set(written.tolist()))
                shown = ", ".join(f"{i} ({status[i]})" for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
                print(f"  ({len(missing)} frame(s) without a result skipped: {shown})")
            rows = {"first": vals[written[0]], "last": vals[written[-1]],
                    "min": np.nanmin(vals, axis=0), "max": np.nanmax(vals, axis=0)}
            for label, row in rows.items():
                print(f"  {label:8s}" + "".join(f"{100 * row[k]:8.2f}" for k in keep))
    return 0


def _frame_status(ds) -> list[str]:
    """Per frame: the status name, or "not written" (also for frames not marked complete)."""
    import numpy as np

    from trajden import names

    n = ds.sizes[names.DIM_FRAME]
    codes = np.asarray(ds[names.VAR_STATUS].values) if names.VAR_STATUS in ds else np.zeros(n, dtype=int)
    done = np.asarray(ds[names.VAR_COMPLETE].values, dtype=bool) if names.VAR_COMPLETE in ds else np.ones(n, bool)
    out = []
    for code, ok in zip(codes.tolist(), done.tolist()):
        name = names.FRAME_STATUS_NAMES.get(int(code), "not written")
        out.append(name if ok or int(code) in names.FRAME_STATUS_NO_RESULT else "not written")
    return out


def _cmd_plot(args) -> int:
    from trajden.plotting import plot_convergence, plot_fractions

    ds = _open_store(args.store)
    if args.convergence:
        print(plot_convergence(ds, args.out))
    else:
        print(plot_fractions(ds, args.out, method=args.method))
    return 0


def _cmd_export(args) -> int:
    from trajden.io.export import export_dump, export_extxyz, render_frame
    from trajden.io.readers import parse_frames

    ds = _open_store(args.store)
    frames = None if args.frames is None else parse_frames(args.frames, ds.sizes["frame"])
    if args.render:
        frame = frames[-1] if frames else ds.sizes["frame"] - 1
        print(render_frame(ds, frame, args.out, method=args.method))
    elif args.out.endswith((".xyz", ".extxyz", ".xyz.gz", ".extxyz.gz")):
        print(export_extxyz(ds, args.out, frames=frames, raw=args.raw))
    else:
        print(export_dump(ds, args.out, frames=frames, raw=args.raw))
    return 0


def _cmd_diagnostics(args) -> int:
    import numpy as np

    from trajden import names
    from trajden.analysis import positions_var, rdf, steinhardt
    from trajden.io.export import select_frames
    from trajden.io.readers import parse_frames

    ds = _open_store(args.store)
    n = ds.sizes[names.DIM_FRAME]
    frames = select_frames(ds, None if args.frames is None else parse_frames(args.frames, n))
    variants = [False]
    if positions_var(ds, raw=True, required=False) == names.VAR_POSITIONS_RAW:
        variants = [True, False]
    else:
        print("(raw positions not stored: process with --keep-raw to compare raw and denoised)")
    header = "frame      step" + "".join(
        f"  {'raw' if r else 'den'}:q4  {'raw' if r else 'den'}:q6 {'raw' if r else 'den'}:g1max" for r in variants)
    print("Lechner-Dellago averaged q4/q6 (12 neighbours) and the first-peak height of g(r)")
    print(header)
    rows = []
    for i in frames:
        row = [i, int(ds[names.COORD_STEP].values[i])]
        for raw in variants:
            q = steinhardt(ds, i, raw=raw)
            g = rdf(ds, i, raw=raw)
            row += [float(q["q4_mean"]), float(q["q6_mean"]), float(np.max(g.values))]
        rows.append(row)
        print(f"{row[0]:5d} {row[1]:9d}" + "".join(f"  {v:7.4f}" if k % 3 != 2 else f"  {v:8.3f}"
                                                  for k, v in enumerate(row[2:])))
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            cols = ["frame", "step"]
            for raw in variants:
                tag = "raw" if raw else "denoised"
                cols += [f"q4_{tag}", f"q6_{tag}", f"g_peak_{tag}"]
            w.writerow(cols)
            w.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


def _cmd_models(args) -> int:
    from trajden.model.package import load_model, shipped_models

    if args.compile is not None:
        return _compile_models(args)
    models = shipped_models()
    width = max(map(len, models), default=0)
    for name, entry in models.items():
        m = load_model(name)
        md = m.metadata
        print(f"{name:{width}s} sha256 {m.sha256[:12]}  structures {','.join(md['structures'])}  "
              f"cutoff {md['cutoff']} nn  params {md.get('n_parameters')}  {entry.get('description', '')}")
    return 0


def _hint_compile(settings, args) -> None:
    """One informational line when a CPU run will evaluate a model whose layers were never compiled ahead of
    time on this machine (``trajden models --compile`` once makes later runs start compiled)."""
    from trajden.cluster import get_model, pick_device
    from trajden.errors import ClusterError
    from trajden.model import aot

    opts = settings.evaluator
    directory = aot.cache_dir(opts.aot_cache)
    try:
        on_gpu = pick_device(settings.device) != "cpu"
    except ClusterError:  # a device that is not there: the run itself says so
        return
    if (getattr(args, "quiet", False) or directory is None or on_gpu or opts.compile != "auto" or not opts.fused
            or settings.method == "average" or settings.model in (None, "none", "auto")):
        return
    model = get_model(settings.model, "cpu")
    if not aot.has_packages(directory, model.sha256):
        _say(args)(f"model {model.name}: layers not compiled for this machine; `trajden models --compile "
                   f"{model.name}` once (about a minute) makes later runs start compiled (3-5x faster denoising)")


def _compile_models(args) -> int:
    """``trajden models --compile [NAME ...]``: build the models' ahead-of-time compiled layers for this machine."""
    import time

    from trajden.cluster import evaluator_options
    from trajden.decompose import evaluator
    from trajden.denoise import CPU_BLOCK_EDGES
    from trajden.model import aot
    from trajden.model.coverage import ONE_ELEMENT_MODEL
    from trajden.model.package import load_model

    _log_aot_builds(args)
    options = evaluator_options(compile="on", aot_cache=args.aot_cache)
    directory = aot.cache_dir(options.aot_cache)
    if directory is None:
        raise InputError("--aot-cache off: nowhere to keep compiled layers", hint="leave out --aot-cache or name a "
                         "directory")
    for name in args.compile or [ONE_ELEMENT_MODEL]:
        m = load_model(name, device="cpu")
        t0 = time.perf_counter()
        ev = evaluator(m, CPU_BLOCK_EDGES, True, options)
        if not ev.aot_used:
            raise ModelError(f"model {m.name}: its layers could not be compiled ahead of time (see the warning "
                             "above); runs use torch.compile or the eager path")
        from trajden.model.evaluate import compiled_is_faster

        # timed here once, so that no run pays for the comparison (a run with another thread count times its own)
        faster, times = aot.probe_times(directory, m.sha256, lambda ev=ev: compiled_is_faster(ev))
        print(f"{m.name}: compiled layers ready in {directory} ({time.perf_counter() - t0:.1f} s); one evaluation "
              f"of an 8,000-atom crystal {times['compiled']:.3f} s compiled, {times['eager']:.3f} s eager"
              + ("" if faster else ": not faster here, runs stay eager"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="trajden",
        description="Score-based denoising of MD trajectories for structure identification (a-CNA, PTM).",
    )
    p.add_argument("--version", action="version", version=f"trajden {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a denoiser on ideal lattices plus noise, export TorchScript")
    t.add_argument("config", help="training YAML (see pipelines/train/)")
    t.add_argument("--out", required=True, help="model file to write (a checkpoint OUT.ckpt is kept beside it)")
    t.add_argument("--steps", type=int, help="override the number of optimisation steps")
    t.add_argument("--threads", type=int, help="torch threads")
    t.add_argument("--max-steps-this-run", type=int, help="stop after this many steps (resume later)")
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser("process", help="denoise and label a trajectory into a Zarr/xarray store",
                        description="Read frames (any MDAnalysis format; fast LAMMPS dump reader), denoise each "
                        "frame with a shipped or given model, label raw and denoised positions with a-CNA and PTM, "
                        "and write a chunked Zarr store. Re-running continues an interrupted run.")
    pr.add_argument("trajectory", nargs="+", help="trajectory file(s); several files form one trajectory in order")
    pr.add_argument("--out", required=True, help="output store (directory, e.g. run.zarr)")
    pr.add_argument("--format", help="input format override (lammpsdump, XYZ, XTC, DCD, ..., ase: anything ASE "
                    "reads; ase:FORMAT names ASE's format; .traj, POSCAR, .cif ... go through ASE by default)")
    pr.add_argument("--topology", help="topology file for formats without one (XTC, DCD)")
    pr.add_argument("--species", metavar="EL1,EL2,...",
                    help="elements of atom types 1, 2, ... (e.g. Ni,Al), for inputs without element names "
                    "(a LAMMPS dump without an element column); must agree with the file where it has them")
    pr.add_argument("--atom-style", help="LAMMPS data file (as trajectory or --topology): atomic, charge, molecular, "
                    "full, or the Atoms columns, e.g. 'id type x y z' (MDAnalysis' atom_style)")
    pr.add_argument("--timestep", type=float, help="MD timestep in ps, for dumps without ITEM: TIME (default 0.001)")
    pr.add_argument("--frames", help="START:STOP:STEP (python slice over all frames)")
    pr.add_argument("--model", default="auto",
                    help="auto (default: fcc-bcc-hcp for one element, binary for two; more elements are left raw, "
                    "flagged), a shipped model name (`trajden models`) or a model file")
    pr.add_argument("--sublattice", metavar="ELEMENT",
                    help="also label this element's atoms alone with PTM (e.g. Si: cristobalite's Si form cubic "
                    "diamond), stored as structure_ptm_sublattice")
    pr.add_argument("--method", choices=("denoise", "average"), default="denoise",
                    help="denoise (default) or the vibration-averaging baseline")
    pr.add_argument("--window", type=int, default=5, help="frames averaged by --method average")
    pr.add_argument("--iterations", "-k", type=int, default=8, help="maximum denoising iterations (default 8)")
    pr.add_argument("--tol", type=float, help="stop when the RMS update falls below TOL angstrom "
                    "(default: 0.005 nearest-neighbour distances; 0: always run k iterations)")
    pr.add_argument("--scale", default="auto", help="auto, or the input's nearest-neighbour distance in angstrom")
    pr.add_argument("--classifier", choices=("acna", "ptm", "both"), default="both")
    pr.add_argument("--ptm-rmsd-cutoff", type=float, default=0.1, help="PTM RMSD cutoff (OVITO default 0.1)")
    pr.add_argument("--keep-raw", action="store_true", help="also store the raw positions")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing store instead of resuming it")
    pr.add_argument("--frames-per-chunk", default="auto",
                    help="frames per store chunk and per task (default auto: about 100k atoms per chunk, "
                    "at least 8 chunks where there are frames for them)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda")
    pr.add_argument("--blocks", nargs="+", metavar="N",
                    help="split each frame into NX NY NZ spatial blocks with halos (or 'auto': about 250k atoms "
                    "per block), evaluated as separate Dask tasks; same result, bounded memory per task")
    pr.add_argument("--serial", action="store_true", help="no Dask: process frames in this process")
    pr.add_argument("--cluster", choices=("auto", "local", "slurm"), default="auto",
                    help="auto (default: in this process for small inputs -- one frame, or under 300k "
                    "atom-frames -- else a LocalCluster), local (distributed.LocalCluster) or slurm (dask-jobqueue)")
    pr.add_argument("--cluster-config", help="YAML with trajden:/jobqueue: settings (see cluster_configs/)")
    pr.add_argument("--scheduler-file", help="attach to a running Dask scheduler")
    pr.add_argument("--workers", type=int, help="number of Dask workers (local) or workers to request (slurm)")
    pr.add_argument("--torch-threads", type=int, help="torch threads per worker")
    pr.add_argument("--ovito-threads", type=int, help="OVITO threads per worker")
    pr.add_argument("--compile", choices=("auto", "on", "off"),
                    help="compile the model (trajden.evaluator.compile; default auto: on CUDA, on CPUs for any frame "
                    "once its layers are compiled ahead of time on this machine (--aot-cache), else for large "
                    "frames or long runs, where it measures faster; off: bit-exact eager)")
    pr.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                    help="fused tensor products with tabulated radial networks (trajden.evaluator.fused; "
                    "default on); --no-fused: e3nn's own modules")
    pr.add_argument("--aggregate", choices=("auto", "layer", "atomic", "padded"),
                    help="which compiled function runs (trajden.evaluator.aggregate; default auto)")
    pr.add_argument("--aot-cache", metavar="DIR",
                    help="where a CPU's layers compiled ahead of time are kept (trajden.evaluator.aot-cache; default "
                    "auto: ~/.cache/trajden/aot, built once per machine and model); off: torch.compile per process")
    pr.add_argument("--dry-run", action="store_true", help="print the cluster set-up (SLURM job script) and exit")
    pr.add_argument("--quiet", action="store_true",
                    help="no progress bar, no informational lines (model, execution); warnings and errors print")
    pr.add_argument("--profile", metavar="JSON", help="write where the time went (start-up, store preparation, "
                    "per-stage seconds summed over tasks: read, scale, graph, model, classify, write; idle) "
                    "to this JSON file")
    pr.set_defaults(func=_cmd_process)

    f = sub.add_parser("fractions", help="phase fractions over time from a store")
    f.add_argument("store")
    f.add_argument("--method", choices=("acna", "ptm", "both"), default="both")
    f.add_argument("--raw", action="store_true", help="labels of the raw (not denoised) positions")
    f.add_argument("--all", action="store_true", help="every frame instead of first/last/min/max")
    f.add_argument("--csv", help="also write every frame to this CSV file")
    f.set_defaults(func=_cmd_fractions)

    pl = sub.add_parser("plot", help="plot phase fractions (raw dashed, denoised solid) or convergence")
    pl.add_argument("store")
    pl.add_argument("--out", required=True, help="image file (png, pdf, svg)")
    pl.add_argument("--method", choices=("acna", "ptm", "ordering", "sublattice"), default="acna",
                    help="labels to plot (default acna, as in the README's figure); ordering: PTM's chemical "
                    "ordering (two or more elements); sublattice: PTM of the --sublattice element's atoms")
    pl.add_argument("--convergence", action="store_true", help="RMS update per iteration instead")
    pl.set_defaults(func=_cmd_plot)

    ex = sub.add_parser("export", help="export frames as a LAMMPS dump / extxyz with labels, or render a picture")
    ex.add_argument("store")
    ex.add_argument("--out", required=True, help=".dump/.lammpstrj[.gz] or .xyz/.extxyz[.gz] or, with --render, .png")
    ex.add_argument("--frames", help="START:STOP:STEP (default: all complete frames)")
    ex.add_argument("--raw", action="store_true", help="export the raw positions (needs --keep-raw at process)")
    ex.add_argument("--render", action="store_true", help="render one frame (the last selected) raw vs denoised")
    ex.add_argument("--method", choices=("acna", "ptm"), default="acna", help="labels used to colour --render")
    ex.set_defaults(func=_cmd_export)

    dg = sub.add_parser("diagnostics", help="Steinhardt q4/q6 and g(r) per frame, raw vs denoised (freud)")
    dg.add_argument("store")
    dg.add_argument("--frames", help="START:STOP:STEP (default: all complete frames)")
    dg.add_argument("--csv", help="also write the table to this CSV file")
    dg.set_defaults(func=_cmd_diagnostics)

    m = sub.add_parser("models", help="list the shipped models, or compile their layers for this machine")
    m.add_argument("--compile", nargs="*", metavar="MODEL",
                   help="compile these models' layers ahead of time for this machine's CPU (default: the "
                   "one-element default model); later runs load them in milliseconds (trajden.evaluator.aot-cache)")
    m.add_argument("--aot-cache", metavar="DIR", help="where to keep them (default auto: ~/.cache/trajden/aot)")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        store = getattr(args, "store", None)
        with _about_store(store) if store else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("trajden: interrupted", file=sys.stderr)
        return 130
    except TrajdenError as exc:  # known problems: one line; anything else is a bug and keeps its traceback
        if args.debug:
            raise
        print(f"trajden: error: {exc.one_line()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
