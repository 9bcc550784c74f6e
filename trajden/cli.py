"""The ``trajden`` command line: ``process``, ``train``, ``fractions``, ``plot``, ``export``, ``models``."""

from __future__ import annotations

import argparse
import sys

from trajden import __version__


class UserError(Exception):
    """An error caused by the input, reported as one line (no traceback unless --debug)."""


def _cmd_train(args) -> int:
    from trajden.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    result = train(cfg, args.out, max_steps_this_run=args.max_steps_this_run)
    return 0 if result["done"] else 3


def _cmd_process(args) -> int:
    from trajden import names
    from trajden.cluster import close_cluster, configure_process_threads, start_cluster
    from trajden.io.readers import Trajectory, parse_frames
    from trajden.pipeline import ProcessSettings, run, summary_text

    scale = args.scale if args.scale == "auto" else float(args.scale)
    classifiers = tuple(names.CLASSIFIERS) if args.classifier == "both" else (args.classifier,)
    settings = ProcessSettings(
        model=args.model, device=args.device, method=args.method, iterations=args.iterations, tol=args.tol,
        scale=scale, classifiers=classifiers, ptm_rmsd_cutoff=args.ptm_rmsd_cutoff, keep_raw=args.keep_raw,
        window=args.window, torch_threads=args.torch_threads, ovito_threads=args.ovito_threads,
    )
    kind = "serial" if args.serial else args.cluster
    if args.dry_run:
        text = start_cluster(kind, cluster_config=args.cluster_config, scheduler_file=args.scheduler_file,
                             n_workers=args.workers, dry_run=True, device=args.device,
                             torch_threads=args.torch_threads, ovito_threads=args.ovito_threads)
        print(text)
        return 0
    traj = Trajectory(args.trajectory, format=args.format, topology=args.topology, timestep_ps=args.timestep)
    for w in traj.warnings:
        print(f"trajden: warning: {w}", file=sys.stderr)
    frames = parse_frames(args.frames, len(traj))
    if not frames:
        raise UserError(f"{args.trajectory[0]}: no frames selected by --frames {args.frames}")
    client = cluster = None
    if kind == "serial":
        configure_process_threads(args.torch_threads or 1, args.ovito_threads or args.torch_threads or 1)
    else:
        model = None if settings.method == "average" else settings.model
        client, cluster = start_cluster(
            kind, cluster_config=args.cluster_config, scheduler_file=args.scheduler_file, n_workers=args.workers,
            model=model, device=args.device, torch_threads=args.torch_threads, ovito_threads=args.ovito_threads,
        )
    try:
        summary = run(traj, frames, args.out, settings, client=client, overwrite=args.overwrite,
                      frames_per_chunk=args.frames_per_chunk, progress=not args.quiet)
    finally:
        if client is not None:
            close_cluster(client, cluster)
    print(summary_text(summary))
    if summary.failures:
        print(f"trajden: error: {len(summary.failures)} frame(s) failed; re-run the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def _cmd_models(args) -> int:
    from trajden.model.package import load_model, shipped_models

    for name, entry in shipped_models().items():
        m = load_model(name)
        md = m.metadata
        print(f"{name:14s} sha256 {m.sha256[:12]}  structures {','.join(md['structures'])}  "
              f"cutoff {md['cutoff']} nn  params {md.get('n_parameters')}  {entry.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    pr.add_argument("--format", help="input format override (lammpsdump, XYZ, XTC, DCD, ...)")
    pr.add_argument("--topology", help="topology file for formats without one (XTC, DCD)")
    pr.add_argument("--timestep", type=float, help="MD timestep in ps, for dumps without ITEM: TIME (default 0.001)")
    pr.add_argument("--frames", help="START:STOP:STEP (python slice over all frames)")
    pr.add_argument("--model", default="fcc-bcc-hcp", help="shipped model name (fcc-bcc-hcp, dc3) or a model file")
    pr.add_argument("--method", choices=("denoise", "average"), default="denoise",
                    help="denoise (default) or the vibration-averaging baseline")
    pr.add_argument("--window", type=int, default=5, help="frames averaged by --method average")
    pr.add_argument("--iterations", "-k", type=int, default=8, help="maximum denoising iterations (default 8)")
    pr.add_argument("--tol", type=float, help="stop when the RMS update falls below TOL angstrom "
                    "(default: 0.002 nearest-neighbour distances; 0: always run k iterations)")
    pr.add_argument("--scale", default="auto", help="auto, or the input's nearest-neighbour distance in angstrom")
    pr.add_argument("--classifier", choices=("acna", "ptm", "both"), default="both")
    pr.add_argument("--ptm-rmsd-cutoff", type=float, default=0.1, help="PTM RMSD cutoff (OVITO default 0.1)")
    pr.add_argument("--keep-raw", action="store_true", help="also store the raw positions")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing store instead of resuming it")
    pr.add_argument("--frames-per-chunk", type=int, default=1, help="frames per store chunk and per task")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda")
    pr.add_argument("--serial", action="store_true", help="no Dask: process frames in this process")
    pr.add_argument("--cluster", choices=("local", "slurm"), default="local",
                    help="local (distributed.LocalCluster, default) or slurm (dask-jobqueue)")
    pr.add_argument("--cluster-config", help="YAML with trajden:/jobqueue: settings (see cluster_configs/)")
    pr.add_argument("--scheduler-file", help="attach to a running Dask scheduler")
    pr.add_argument("--workers", type=int, help="number of Dask workers (local) or workers to request (slurm)")
    pr.add_argument("--torch-threads", type=int, help="torch threads per worker")
    pr.add_argument("--ovito-threads", type=int, help="OVITO threads per worker")
    pr.add_argument("--dry-run", action="store_true", help="print the cluster set-up (SLURM job script) and exit")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_process)

    m = sub.add_parser("models", help="list the shipped models")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("trajden: interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, OSError) as exc:
        if args.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"trajden: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
