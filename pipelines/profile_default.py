"""Profile of the default path: ``trajden process`` with defaults, end to end, against OVITO PTM, per stage.

For each input it runs, in fresh subprocesses of the same run,

* ``trajden process INPUT --out S.zarr --quiet --overwrite --profile P.json`` (the defaults, plus only the
  case's own options): wall time of the whole command, and where it went (``--profile``: start-up until the
  frames could start, store preparation, and per stage summed over tasks -- start-up inside tasks (model
  load, evaluator set-up and compilation), read, scale, graph, model, classify, write, other -- plus workers'
  idle time; the stages are :func:`trajden.spans.span` ranges placed in the code, also visible as
  ``trajden.<stage>`` in a ``torch.profiler`` trace);
* ``python -m pipelines.bench.ovito_ptm INPUT``: OVITO reading the same frames and labelling them with PTM
  (:mod:`pipelines.bench.ovito_ptm`),

and writes ``OUT/profile.json``, ``OUT/profile.png`` and the report ``docs/performance.md`` (tables and the
plot) from what it measured.

Each input runs with trajden in two machine states (``--states``):

* ``fresh``: an empty ahead-of-time cache (``trajden.evaluator.aot-cache`` pointed at a new empty folder): a
  machine where trajden never compiled anything; large runs then compile the layers during the run;
* ``compiled``: after ``trajden models --compile`` (the default model's layers compiled for this CPU once, as
  ``make demo`` does; its time is reported separately, it is not part of any run).

OVITO runs once per input; both ratios use its time.

Inputs (``--quick``: tiny versions, to check that the script works; their report goes to ``OUT/`` only):

* ``hot-fcc-20``: 20 frames of 13,500 atoms, fcc Cu plus Gaussian noise of 0.08 d_nn per coordinate (new
  noise each frame; ids shuffled); PTM fcc fraction after denoising reported;
* ``hot-fcc-256k``: one frame of 256,000 atoms, ``--iterations 8``;
* ``demo``: the bundled LAMMPS Cu solidification dump ``trajden/data/cu_solidification.dump`` (25 x 5,324).

Usage::

    .venv/bin/python pipelines/profile_default.py [--quick] [--out pipelines/out/profile] [--doc docs/performance.md]
        [--cases hot-fcc-20 demo] [--threads N] [--states fresh compiled]

Timings depend on what else runs on the machine: the report records the machine, the load average before
and after each command and how many cores other processes kept busy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.bench.common import D_NN, SIGMA_HOT  # noqa: E402
from pipelines.bench.machine import busy_cores  # noqa: E402

DEMO = ROOT / "trajden" / "data" / "cu_solidification.dump"
#: trajden's stages in report order (``--profile``'s keys); "startup" and "prepare" come from the driver
STAGE_ORDER = ("startup", "prepare", "start-up", "read", "scale", "graph", "model", "classify", "write", "other",
               "idle")
STAGE_LABELS = {
    "startup": "start-up (imports, input, cluster)", "prepare": "store preparation",
    "start-up": "task set-up (model, evaluator, compile)", "read": "read", "scale": "scale estimate",
    "graph": "graph (order, neighbour lists)", "model": "model", "classify": "classify (a-CNA + PTM, raw + denoised)",
    "write": "write", "other": "other (in tasks)", "idle": "idle (workers)",
}


def cases(quick: bool) -> dict[str, dict]:
    """name -> {"cells": fcc cells per edge, "frames": n, "args": [...]} or {"dump": path, "frames_arg": ..}."""
    if quick:
        return {
            "hot-fcc-20": {"cells": 5, "frames": 3, "args": []},
            "hot-fcc-256k": {"cells": 10, "frames": 1, "args": ["--iterations", "2"]},
            "demo": {"dump": str(DEMO), "slice": "0:2", "args": ["--iterations", "2"]},
        }
    return {
        "hot-fcc-20": {"cells": 15, "frames": 20, "args": []},
        "hot-fcc-256k": {"cells": 40, "frames": 1, "args": ["--iterations", "8"]},
        "demo": {"dump": str(DEMO), "slice": None, "args": []},
    }


def make_input(case: dict, path: Path, seed: int) -> tuple[str, int, int]:
    """Write a hot-fcc case's dump (if not there yet); returns (dump, frames, atoms)."""
    if "dump" in case:
        from trajden.io.readers import Trajectory

        traj = Trajectory([case["dump"]])
        n = len(traj)
        if case.get("slice"):
            a, _, b = case["slice"].partition(":")
            n = len(range(n)[int(a or 0): int(b) if b else None])
        return case["dump"], n, traj.n_atoms
    import numpy as np

    from pipelines.bench.inputs import write_dump
    from trajden.lattices import add_noise, make_crystal

    c = make_crystal("fcc", reps=(case["cells"],) * 3, d_nn=D_NN)
    if not path.exists():
        rng = np.random.default_rng(seed)
        frames = [add_noise(c.positions, SIGMA_HOT * D_NN, rng)[0] for _ in range(case["frames"])]
        write_dump(path, frames, c.cell, seed)
    return str(path), case["frames"], len(c.positions)


def _env(threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), OVITO_THREAD_COUNT=str(threads))
    return env


def timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd``; wall time, exit status, load average around it, the children's peak RSS (MB)."""
    import resource

    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rc": rc, "wall_s": wall, "loadavg_before": load0, "loadavg_after": os.getloadavg()[0],
            "children_peak_rss_mb_so_far": peak}


def ptm_fcc(store: Path) -> float | None:
    """Mean PTM fcc fraction after denoising over the store's complete frames."""
    import numpy as np
    import xarray as xr

    from trajden import names

    ds = xr.open_zarr(store, consolidated=False)
    var = names.structure_var(names.PTM)
    if var not in ds:
        return None
    done = ds[names.VAR_COMPLETE].values
    return float(np.mean(ds[var].values[done] == names.FCC)) if done.any() else None


#: machine states (see the module docstring): the label in the report
STATES = {"fresh": "fresh machine", "compiled": "layers compiled"}


def aot_dir(out: Path, state: str, name: str) -> Path:
    """The ahead-of-time cache folder of a state: a new empty one per input for ``fresh``, the shared one
    that :func:`compile_models` filled for ``compiled``."""
    import shutil

    if state == "fresh":
        d = out / "aot-fresh" / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d
    return out / "aot-compiled"


def compile_models(out: Path, threads: int | None) -> dict:
    """``trajden models --compile`` into the ``compiled`` state's folder, from scratch; its wall time."""
    import shutil

    d = out / "aot-compiled"
    shutil.rmtree(d, ignore_errors=True)
    cmd = [sys.executable, "-m", "trajden.cli", "models", "--compile", "--aot-cache", str(d)]
    print(f"[compile] {' '.join(cmd[2:])}", flush=True)
    res = timed(cmd, _env(threads), out / "compile.log")
    res["command"] = " ".join(["trajden", *cmd[3:]])
    return res


def run_case(name: str, case: dict, out: Path, threads: int | None, states=("fresh", "compiled")) -> list[dict]:
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    dump, n_frames, n_atoms = make_input(case, inputs / f"{name}.dump", seed=hash(name) % 1000)
    env = _env(threads)
    ov_json = out / f"{name}.ovito.json"
    a, _, b = (case.get("slice") or ":").partition(":")
    ov_cmd = [sys.executable, "-m", "pipelines.bench.ovito_ptm", dump, "--frames", f"{a}:{b}", "--json", str(ov_json)]
    ovito = timed(ov_cmd, env, out / f"{name}.ovito.log")
    if ovito["rc"] == 0:
        ovito.update(json.loads(ov_json.read_text()))
    results = []
    for state in states:
        tag = f"{name}.{state}"
        store, prof = out / f"{tag}.zarr", out / f"{tag}.profile.json"
        frames_arg = ["--frames", case["slice"]] if case.get("slice") else []
        cmd = [sys.executable, "-m", "trajden.cli", "process", dump, "--out", str(store), "--quiet", "--overwrite",
               "--profile", str(prof), *frames_arg, *case["args"]]
        print(f"[{tag}] {n_frames} frames x {n_atoms} atoms: {' '.join(cmd[2:])}", flush=True)
        busy = busy_cores(1.0)
        res = {"case": f"{name} ({STATES[state]})", "input": name, "state": state, "frames": n_frames,
               "atoms": n_atoms, "command": " ".join(["trajden", *cmd[3:]]), "busy_cores_before": busy}
        run_env = dict(env, DASK_TRAJDEN__EVALUATOR__AOT_CACHE=str(aot_dir(out, state, name)))
        res["trajden"] = timed(cmd, run_env, out / f"{tag}.trajden.log")
        if res["trajden"]["rc"] == 0 and prof.exists():
            res["profile"] = json.loads(prof.read_text())
            res["ptm_fcc_denoised"] = ptm_fcc(store) if name.startswith("hot-fcc") else None
            res["evaluator"] = evaluator_used(store)
        res["ovito"] = ovito
        if res["trajden"]["rc"] == 0 and ovito["rc"] == 0:
            res["ratio"] = res["trajden"]["wall_s"] / ovito["wall_s"]
        print(f"[{tag}] trajden {res['trajden']['wall_s']:.1f} s (rc {res['trajden']['rc']}), OVITO PTM "
              f"{ovito['wall_s']:.1f} s (rc {ovito['rc']})", flush=True)
        results.append(res)
    return results


def evaluator_used(store: Path) -> str:
    """"compiled" / "eager" / "mixed": which code denoised the store's frames."""
    import numpy as np
    import xarray as xr

    from trajden import names

    ds = xr.open_zarr(store, consolidated=False)
    if names.VAR_EVALUATOR not in ds:
        return "-"
    codes = set(np.unique(ds[names.VAR_EVALUATOR].values).tolist())
    return {frozenset({names.EVALUATOR_COMPILED}): "compiled",
            frozenset({names.EVALUATOR_EAGER}): "eager"}.get(frozenset(codes), "mixed")


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import dask.system

    return {"host": platform.node(), "cpu": cpu, "usable_cores": dask.system.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _stage_seconds(res: dict) -> dict[str, float]:
    p = res.get("profile") or {}
    out = {"startup": p.get("startup_s", 0.0), "prepare": p.get("prepare_s", 0.0)}
    out.update(p.get("stages_s", {}))
    out["idle"] = p.get("idle_s", 0.0)
    return out


def plot(results: list[dict], path: Path) -> None:
    """Stacked bars: each case's trajden stages (worker-seconds, idle included) beside OVITO PTM's wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 1.5 + 1.1 * len(results)))
    colors = plt.get_cmap("tab20").colors
    labels_done = set()
    for row, res in enumerate(results):
        y = 2 * row
        left = 0.0
        for k, stage in enumerate(STAGE_ORDER):
            v = _stage_seconds(res).get(stage, 0.0)
            if v <= 0:
                continue
            lab = STAGE_LABELS[stage] if stage not in labels_done else None
            labels_done.add(stage)
            ax.barh(y, v, left=left, color=colors[k % len(colors)], label=lab)
            left += v
        ov = res.get("ovito", {}).get("wall_s")
        if ov:
            lab = "OVITO PTM (read + label)" if "ovito" not in labels_done else None
            labels_done.add("ovito")
            ax.barh(y + 0.8, ov, color="black", label=lab)
    ax.set_yticks([2 * r + 0.4 for r in range(len(results))], [r["case"] for r in results])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (trajden: stages summed over workers, plus driver start-up; OVITO: wall)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: list[dict], info: dict, args, png: Path, doc: Path, generated: str | None = None) -> str:
    def f(v, nd=1):
        return "-" if v is None else f"{v:.{nd}f}"

    lines = [
        "# Performance of the default path",
        "",
        f"Generated by `python pipelines/profile_default.py{' --quick' if args.quick else ''}` on "
        f"{generated or 'an earlier run'}; do not edit by hand, rerun it.",
        f"Machine: {info['cpu']}, {info['usable_cores']} usable cores, torch {info['torch']}, Python "
        f"{info['python']}{', GPU ' + info['gpu'] if info['gpu'] else ''} (host {info['host']}).",
        "",
        "Each command runs in a fresh process with trajden's defaults (plus the case's own options); OVITO reads "
        "the same frames with its own reader and labels them with PTM (fcc, hcp, bcc, sc, cubic and hexagonal "
        "diamond), also in a fresh process, in the same run.",
        "",
        "| input | frames x atoms | trajden defaults (s) | OVITO PTM (s) | ratio | atoms/s (trajden) | execution "
        "| model evaluated | PTM fcc after denoising | busy cores before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, o, p = r["trajden"], r["ovito"], r.get("profile") or {}
        rate = r["frames"] * r["atoms"] / t["wall_s"] if t["rc"] == 0 else None
        fcc = r.get("ptm_fcc_denoised")
        lines.append(
            f"| {r['case']} | {r['frames']} x {r['atoms']} | {f(t['wall_s'])}{'' if t['rc'] == 0 else ' (failed)'} "
            f"| {f(o['wall_s'])} | {f(r.get('ratio'))}x | {f(rate, 0)} | {p.get('execution', '-')} "
            f"({p.get('n_workers', '-')} worker(s), {p.get('frames_per_chunk', '-')} frames/task) | "
            f"{r.get('evaluator', '-')} | {'-' if fcc is None else f'{100 * fcc:.2f} %'} | "
            f"{f(r['busy_cores_before'], 2)} |")
    comp = info.get("compile")
    if comp:
        lines += ["", f"'layers compiled': after `{comp['command']}` (the default model's layers compiled ahead of "
                  f"time for this CPU, once per machine; `make demo` runs it first): {f(comp['wall_s'])} s "
                  f"(exit {comp['rc']}), not counted in any run. 'fresh machine': an empty cache; runs large "
                  "enough to repay a compilation compile the layers in-process with torch.compile (nothing is "
                  "left for later runs; a run never builds the cached packages unless asked)."]
    lines += ["", "## Where the time went (seconds)", "",
              "Start-up and store preparation are the driver's; the stages are summed over tasks (worker-seconds: "
              "on a cluster they overlap in wall time); idle is worker time outside tasks. OVITO: import, then "
              "reading + PTM per frame.", ""]
    lines.append("| stage | " + " | ".join(r["case"] for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for stage in STAGE_ORDER:
        lines.append(f"| {STAGE_LABELS[stage]} | " + " | ".join(f(_stage_seconds(r).get(stage), 2) for r in results)
                     + " |")
    lines.append("| **trajden wall (whole command)** | " + " | ".join(f(r["trajden"]["wall_s"], 2) for r in results)
                 + " |")
    lines.append("| OVITO import | " + " | ".join(f(r["ovito"].get("import_s"), 2) for r in results) + " |")
    lines.append("| OVITO read + PTM, all frames | "
                 + " | ".join(f(sum(r["ovito"].get("frame_s", [])) if r["ovito"].get("frame_s") else None, 2)
                              for r in results) + " |")
    lines.append("| **OVITO wall (whole command)** | " + " | ".join(f(r["ovito"]["wall_s"], 2) for r in results)
                 + " |")
    lines += ["", f"![stages]({os.path.relpath(png, doc.parent)})", "",
              "Commands:", ""] + [f"- `{r['command']}`" for r in results] + [""]
    mod = info.get("modifier")
    if mod:
        demos = [r for r in results if r["case"].startswith("demo") and r["trajden"]["rc"] == 0]
        lines += [
            "## OVITO modifier", "",
            f"`trajden.ovito.DenoiseModifier` in a plain `ovito` pipeline (`import_file`, the modifier appended, "
            f"`pipeline.compute(frame)`), {mod['atoms']} atoms of `{mod['input']}`, model {mod['model']}, k <= "
            f"{mod['iterations']}, {len(mod['frames'])} frames, {mod['torch_threads']} torch thread(s), evaluator "
            f"as configured on this machine ({mod.get('evaluator', 'see trajden.evaluator')}), model loaded "
            f"before the timed frames, next to the bare `trajden.denoise.denoise` call on the same frames "
            f"(`{mod['command']}`):", "",
            "| per frame (median) | wall (s) |", "|---|---|",
            f"| modifier (read + denoise + per-atom outputs) | {mod['median_modifier_s']:.3f} |",
            f"| bare denoise call | {mod['median_denoise_s']:.3f} |",
        ]
        for demo in demos:
            lines.append(f"| `trajden process` on the demo, whole command / frames (raw and denoised labels, "
                         f"store), {demo['case'][5:].strip('()') or 'as run'} | "
                         f"{demo['trajden']['wall_s'] / demo['frames']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def time_modifier(out: Path) -> dict:
    """pipelines/bench_ovito_modifier.py on the bundled demo, in a fresh process (its JSON, plus the command)."""
    path = out / "modifier.json"
    cmd = [sys.executable, str(ROOT / "pipelines" / "bench_ovito_modifier.py"), "--frames", "0:25:3",
           "--json", str(path)]
    env = {**os.environ, "OVITO_THREAD_COUNT": "1"}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    res = json.loads(path.read_text())
    res["command"] = "OVITO_THREAD_COUNT=1 python pipelines/bench_ovito_modifier.py --frames 0:25:3"
    return res


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny inputs: check that the script works (seconds)")
    p.add_argument("--out", type=Path, help="working folder (default pipelines/out/profile[-quick])")
    p.add_argument("--doc", type=Path,
                   help="report to write (default docs/performance.md; with --quick OUT/performance.md)")
    p.add_argument("--cases", nargs="+", help="only these cases (hot-fcc-20, hot-fcc-256k, demo)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS / OVITO_THREAD_COUNT for both (default: unset)")
    p.add_argument("--states", nargs="+", choices=tuple(STATES), default=list(STATES),
                   help="machine states to run trajden in (default both)")
    p.add_argument("--modifier-only", action="store_true",
                   help="time the OVITO modifier on the demo (pipelines/bench_ovito_modifier.py), keep it in "
                   "OUT/profile.json beside what an earlier run measured, and rewrite the report")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the report and plot from OUT/profile.json (what an earlier run measured)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "pipelines" / "out" / ("profile-quick" if args.quick else "profile")
    out.mkdir(parents=True, exist_ok=True)
    doc = args.doc or (out / "performance.md" if args.quick else ROOT / "docs" / "performance.md")
    todo = cases(args.quick)
    if args.cases:
        unknown = set(args.cases) - set(todo)
        if unknown:
            raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {sorted(todo)}")
        todo = {k: v for k, v in todo.items() if k in args.cases}
    if args.report_only or args.modifier_only:
        data = json.loads((out / "profile.json").read_text())
        if args.modifier_only:
            data["machine"]["modifier"] = time_modifier(out)
            (out / "profile.json").write_text(json.dumps(data, indent=1))
        info, results = data["machine"], data["results"]
        png = doc.parent / "performance.png" if not args.quick else out / "profile.png"
        plot(results, png)
        doc.write_text(report(results, info, args, png, doc, data.get("generated")))
        print(f"wrote {doc}, {png} from {out / 'profile.json'}")
        return 0
    info = machine()
    if "compiled" in args.states:
        info["compile"] = compile_models(out, args.threads)
    if not args.quick:
        info["modifier"] = time_modifier(out)
    results = [r for name, case in todo.items() for r in run_case(name, case, out, args.threads, args.states)]
    generated = dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    (out / "profile.json").write_text(json.dumps({"machine": info, "results": results, "generated": generated},
                                                 indent=1))
    png = doc.parent / "performance.png" if not args.quick else out / "profile.png"
    doc.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    doc.write_text(report(results, info, args, png, doc, generated))
    print(f"wrote {doc}, {png}, {out / 'profile.json'}")
    return 0 if all(r["trajden"]["rc"] == 0 and r["ovito"]["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
