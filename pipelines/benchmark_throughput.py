"""Throughput benchmark: wall time and peak memory of every stage of ``trajden process``, per frame size.

For frames of about 3e4, 2.5e5 and 1e6 atoms of two synthetic Cu systems (lengths in angstrom, d_nn = 2.556):

The atoms are numbered in random order (``--atom-order shuffled``, as in MD whose ids melting or diffusion
scrambled) or in the lattice's order (``--atom-order lattice``: neighbours mostly close in memory).

* ``hot-fcc``: ideal fcc plus Gaussian noise of 0.08 d_nn per coordinate (synthetic thermal noise, not MD);
* ``mixture``: the same lattice, atoms with x < L/2 "crystal" (noise 0.08 d_nn), the others "liquid" (noise
  0.3 d_nn, then a short soft-sphere relaxation so the liquid has no unphysical overlaps); same density.

it times, each stage in a fresh subprocess (imports, model and data loading happen before the clock starts;
I/O and classification stages also get a warm-up on a small input; denoising is timed cold, from its first
call on the frame, because a warm-up on a smaller frame makes TorchScript's profiling executor specialise to
the wrong shapes and slows the run 4-6x):

* ``read``: ``Trajectory(dump).frame(0)`` on a one-frame LAMMPS text dump (written once, file in page cache);
  ``read-mda``: MDAnalysis' own ``LAMMPSDUMP`` reader on the same file (smallest size only);
* ``denoise-k8``: :func:`trajden.denoise.denoise` with k = 8, tol = 0 (fixed number of iterations);
  ``denoise-conv``: default tol, at most ``--max-iterations``; both with the known scale (2.556 A), reporting
  iterations, atom-iterations/s and the split into neighbour list / edge vectors / model forward / rest;
* ``denoise-k8-blocks``: k = 8 with ``blocks="auto"`` (spatial blocks of <= 250k atoms with halos, evaluated one
  after another): the peak memory of one block task;
* ``denoise-k8-blocks-cluster``: the same with the blocks as Dask tasks on trajden's default LocalCluster (one
  worker per core): wall time and the largest worker's peak RSS (the issue's per-worker memory bound);
* ``acna``, ``ptm``: OVITO a-CNA and PTM (six structures, as :mod:`trajden.classify`) on the raw frame;
* ``write``: ``Store.create`` + ``write_frames`` of one frame (both classifiers, raw and denoised labels);
* ``e2e``: ``trajden process DUMP --serial --quiet`` on a ``--frames``-frame dump (smallest size, or every
  size with ``--e2e-all``), frames/s over the whole command and as trajden reports it;
  ``e2e-cluster``: the same with trajden's default LocalCluster (``--workers`` workers, default one per core
  group), where frames overlap: one worker reads, labels or writes while another denoises. The report
  compares its time per frame (trajden's own clock, cluster start excluded) with the slowest stage of one
  frame (read, denoise "until converged", the four labellings, write) measured in this run.

Peak memory: each stage's subprocess resets its RSS high-water mark (``/proc/self/clear_refs``) just before
the stage, so "stage dRSS" is the stage's own peak above what the process held before (data, model, libs);
"peak RSS" is the process' high-water mark over its whole life (``wait4`` ru_maxrss). A stage is stopped
(reported ``oom``) when the process would exceed ``--mem-limit-gb`` (RLIMIT_DATA plus an RSS watchdog).

Usage::

    .venv/bin/python pipelines/benchmark_throughput.py [--sizes 30000 250000 1000000] [--systems hot-fcc mixture]
        [--out pipelines/out/benchmark] [--threads N] [--frames 3] [--e2e-all] [--stages read denoise-k8 ...]
        [--baseline] [--device cuda] [--atom-order shuffled|lattice]

``--baseline`` times the evaluator as it was before the CPU fast path (e3nn tensor products, exact radial MLPs,
262144-edge blocks) for before/after tables; ``--device cuda`` runs the denoise stages on a GPU (peak GPU memory
in ``gpu_peak_mb``), e.g. ``--sizes 1000000 --systems hot-fcc --stages denoise-k8 ptm --device cuda``.

Writes ``OUT.csv`` (one row per system, size and stage), ``OUT.md`` (machine, tables) and ``OUT.json``.

The code is split by stage under ``pipelines/bench/``: ``common`` (constants), ``machine`` (memory, busy cores),
``inputs`` (synthetic frames, dumps), ``stages`` (what each child process times), ``runner`` (subprocesses with
a memory watchdog), ``report`` (tables and outputs); this file keeps the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes pipelines.bench importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.bench.common import CONTENDED_CORES, DEFAULT_SIZES, E2E_STAGES, ROOT, STAGES, SYSTEMS, log
from pipelines.bench.inputs import prepare_inputs, write_dump
from pipelines.bench.machine import _mem_available_mb, machine_info, training_processes, wait_idle
from pipelines.bench.report import _fmt, _rate, finish_row, ratio_lines, table_lines, write_outputs
from pipelines.bench.runner import run_e2e, run_stage
from pipelines.bench.stages import _warm_frame, child_main

# ------------------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="target atoms per frame")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument(
        "--out",
        default=str(ROOT / "pipelines" / "out" / "benchmark"),
        help="output path stem: writes OUT.csv, OUT.md, OUT.json",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and OVITO threads (default all cores)")
    p.add_argument("--frames", type=int, default=3, help="frames in the end-to-end dump")
    p.add_argument("--e2e-all", action="store_true", help="end-to-end at every size (default: smallest only)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers of e2e-cluster (default: "
                   "trajden's)")
    p.add_argument("--mda-all", action="store_true", help="MDAnalysis reader at every size (default: smallest)")
    p.add_argument("--max-iterations", type=int, default=8,
                   help="cap of the 'until converged' run (default 8: the pipeline's own cap)")
    p.add_argument("--model", default="fcc-bcc-hcp")
    p.add_argument("--atom-order", choices=("shuffled", "lattice"), default="shuffled",
                   help="order of the atoms in the frames: random as in MD whose ids were scrambled by melting "
                   "(default), or the lattice's own")
    p.add_argument("--device", default="cpu", help="device of the denoise stages (cpu, cuda, cuda:N)")
    p.add_argument("--baseline", action="store_true",
                   help="denoise with the evaluator before the CPU optimisations (e3nn tensor products, exact radial "
                   "MLPs, 262144-edge blocks: trajden.evaluator.fused false) for before/after tables")
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=None,
        help="per-stage memory limit (default 80%% of the memory available at start)",
    )
    p.add_argument("--tmpdir", default=None, help="where the dumps go (default: system temp)")
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each stage wait up to S seconds until other processes keep < 0.3 cores busy",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        help="run a contended stage (other processes kept > 0.25 cores busy) again up to this many times, "
        "keeping the least contended run (default 2 with --wait-idle, else 0)",
    )
    args = p.parse_args(argv)
    if args.threads < 1 or args.frames < 1 or args.max_iterations < 1:
        p.error("--threads, --frames and --max-iterations must be >= 1")
    if args.retries is None:
        args.retries = 2 if args.wait_idle > 0 else 0
    if args.mem_limit_gb is None:
        args.mem_limit_gb = 0.8 * _mem_available_mb() / 1024
    return args


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # clean up the running stage and the temporary files
    out = Path(args.out)
    if out.suffix in (".csv", ".md", ".json"):
        out = out.with_suffix("")
    os.environ["OVITO_THREAD_COUNT"] = str(args.threads)
    from trajden.model.package import load_model

    machine = machine_info(args.threads)
    machine["started"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    machine["training_at_start"] = len(training_processes())
    m = load_model(args.model)
    machine["model"] = f"{m.name} sha256 {m.sha256[:12]} ({m.metadata.get('description', '')})"
    machine["evaluator"] = ("baseline: e3nn tensor products, exact radial MLPs, 262144-edge blocks" if args.baseline
                            else "fast: fused tensor products, tabulated radial MLPs, 4096-edge blocks")
    machine["atom_order"] = args.atom_order
    del m
    log(
        f"trajden throughput benchmark: {machine['cpu_model']}, {machine['cores']} cores, threads {args.threads}, "
        f"memory limit {args.mem_limit_gb:.1f} GB, model {machine['model']}"
    )
    if machine["training_at_start"]:
        log(f"note: {machine['training_at_start']} 'trajden train' process(es) running: timings are contended")
    log("inputs are synthetic: ideal fcc + Gaussian 'thermal' noise (0.08 d_nn), mixture with a 0.3 d_nn liquid half")
    tmp = Path(tempfile.mkdtemp(prefix="trajden-bench-", dir=args.tmpdir))
    rows: list[dict] = []
    systems_info: dict = {}
    sizes = sorted(set(args.sizes))
    try:
        wpos, wcell = _warm_frame(500)
        write_dump(tmp / "warm.dump", [wpos], wcell, 0)
        for size in sizes:
            for system in args.systems:
                smallest = size == sizes[0]
                want_e2e = bool(set(E2E_STAGES) & set(args.stages)) and (smallest or args.e2e_all)
                t0 = time.perf_counter()
                inputs = prepare_inputs(tmp, system, size, args.frames, want_e2e, args.atom_order)
                n = inputs["n_atoms"]
                info = {k: v for k, v in inputs.items() if k not in ("npz", "dump", "dump_e2e", "cell")}
                info["box_A"] = [round(inputs["cell"][i][i], 3) for i in range(3)]
                systems_info[f"{system}-{n}"] = info
                log(
                    f"{system} {n} atoms: inputs ready in {time.perf_counter() - t0:.1f} s "
                    f"(dump {inputs['dump_mb']:.0f} MB)"
                )
                for stage in args.stages:
                    if stage == "read-mda" and not (smallest or args.mda_all):
                        continue
                    if stage in E2E_STAGES and not want_e2e:
                        continue
                    log(f"{system} {n} {stage} ...")
                    row = None
                    for attempt in range(1 + args.retries):
                        waited, _ = wait_idle(args.wait_idle) if args.wait_idle > 0 else (0.0, 0.0)
                        training = bool(training_processes())
                        load = os.getloadavg()[0]
                        res = (
                            run_e2e(system, inputs, args, tmp, cluster=stage == "e2e-cluster")
                            if stage in E2E_STAGES
                            else run_stage(stage, system, inputs, args, tmp)
                        )
                        new = finish_row(res, system, n, training)
                        new.update(loadavg_1m=load, waited_s=waited, attempts=attempt + 1)
                        if row is None or (new["others_cores"] or 0) < (row["others_cores"] or 0):
                            row = new  # keep the least contended attempt
                        if (new["others_cores"] or 0) <= CONTENDED_CORES:
                            break
                        more = attempt < args.retries
                        log(
                            f"WARNING: other processes kept {new['others_cores']:.1f} cores busy during this stage"
                            + (f" ({_fmt(new['wall_s'])} s); running it again" if more else "")
                        )
                    rows.append(row)
                    log(
                        f"{system} {n} {stage}: {row['status']}, {_fmt(row['wall_s'])} s, {_rate(row)}, "
                        f"stage dRSS {_fmt(row['rss_increase_mb'], 4)} MB, peak RSS {_fmt(row['peak_rss_mb'], 4)} MB"
                        + (f", {row['iterations']} it" if row["iterations"] else "")
                        + (f" -- {row['error']}" if row["error"] else "")
                    )
                    write_outputs(out, rows, machine, args, systems_info, finished=False)
                for p in tmp.glob(f"{system}-{size}*"):
                    p.unlink(missing_ok=True)
                for p in tmp.glob(f"{system}-{n}*"):
                    p.unlink(missing_ok=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    machine["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    machine["training_at_end"] = len(training_processes())
    machine["loadavg_end"] = os.getloadavg()
    write_outputs(out, rows, machine, args, systems_info, finished=True)
    print()
    print("\n".join(table_lines(rows)))
    print()
    print("\n".join(ratio_lines(rows)))
    print(f"\nwrote {out}.csv, {out}.md, {out}.json")
    return 0 if all(r["status"] != "error" for r in rows) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2]))
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); partial results are in the output files", file=sys.stderr)
        sys.exit(130)
