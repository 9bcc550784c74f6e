"""The parent side: each stage and end-to-end run in a subprocess with a memory watchdog."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.bench.common import SCRIPT
from pipelines.bench.machine import _busy_jiffies

# ------------------------------------------------------------------------------------------------
# parent: subprocesses with a memory watchdog


def _child_env(threads: int, baseline: bool = False) -> dict:
    env = dict(os.environ)
    if baseline:
        env["DASK_TRAJDEN__EVALUATOR__FUSED"] = "False"  # trajden.evaluator.fused for any call without options
    env.update(
        OVITO_THREAD_COUNT=str(threads),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_watched(cmd: list[str], env: dict, limit_mb: float, capture: bool = False) -> dict:
    """Run ``cmd``; kill it if its RSS goes over ``limit_mb``. Returns rc, wall, ru_maxrss (MB), output."""
    import psutil

    t0 = time.perf_counter()
    jb0, jt0 = _busy_jiffies()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
    )
    killed = False
    peak_seen = 0.0
    chunks: list[str] = []
    if capture:  # read output in a thread so the pipe never blocks the child
        import threading

        def pump():
            for line in proc.stdout:
                chunks.append(line)

        th = threading.Thread(target=pump, daemon=True)
        th.start()
    try:
        ps = psutil.Process(proc.pid)
    except psutil.Error:
        ps = None
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if ps is not None:
                try:
                    rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                    peak_seen = max(peak_seen, rss / 2**20)
                    if rss / 2**20 > limit_mb and not killed:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed = True
                except psutil.Error:
                    pass
            time.sleep(0.1)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): do not leave the stage running
        os.kill(proc.pid, signal.SIGKILL)
        os.wait4(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        raise
    wall = time.perf_counter() - t0
    jb1, jt1 = _busy_jiffies()
    machine_cpu_s = (jb1 - jb0) / max(jt1 - jt0, 1) * (os.cpu_count() or 1) * wall
    child_cpu_s = ru.ru_utime + ru.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)
    if capture:
        th.join(timeout=5)
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "maxrss_mb": ru.ru_maxrss / 1024,
        "killed": killed,
        "output": "".join(chunks),
        # cores other processes kept busy while the stage's process ran (0 on an otherwise idle machine)
        "others_cores": max(machine_cpu_s - child_cpu_s, 0.0) / max(wall, 1e-9),
    }


def run_stage(stage: str, system: str, inputs: dict, args, tmp: Path) -> dict:
    spec = {
        "stage": stage,
        "system": system,
        "npz": inputs["npz"],
        "dump": inputs["dump"],
        "warm_dump": str(tmp / "warm.dump"),
        "model": args.model,
        "threads": args.threads,
        "max_iterations": args.max_iterations,
        "baseline": bool(args.baseline),
        "device": args.device,
        "mem_limit_mb": args.mem_limit_gb * 1024,
        "tmp": str(tmp),
        "result": str(tmp / f"result-{stage}-{system}-{inputs['n_atoms']}.json"),
    }
    spec_path = tmp / f"spec-{stage}-{system}-{inputs['n_atoms']}.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    w = run_watched(
        [sys.executable, str(SCRIPT), "--child", str(spec_path)],
        _child_env(args.threads, args.baseline),
        args.mem_limit_gb * 1024 * 1.05,
    )
    try:
        res = json.loads(Path(spec["result"]).read_text())
    except (OSError, ValueError):
        res = {
            "stage": stage,
            "ok": False,
            "status": "oom" if w["killed"] else "error",
            "error": f"child exited with {w['rc']}" + (" (killed by the RSS watchdog)" if w["killed"] else ""),
        }
        if w["killed"]:
            res["notes"] = f"killed at RSS > {args.mem_limit_gb:.1f} GB"
    res["peak_rss_mb"] = w["maxrss_mb"]
    res["process_wall_s"] = w["wall_s"]
    res["others_cores"] = w["others_cores"]
    return res


def run_e2e(system: str, inputs: dict, args, tmp: Path, cluster: bool = False) -> dict:
    exe = Path(sys.executable).parent / "trajden"
    cmd = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "import sys; from trajden.cli import main; sys.exit(main())"]
    )
    store = tmp / f"e2e-{system}-{inputs['n_atoms']}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cmd += [
        "process",
        inputs["dump_e2e"],
        "--out",
        str(store),
        "--quiet",
        "--overwrite",
        "--model",
        args.model,
        "--device",
        "cpu",
    ]
    if cluster:  # the default LocalCluster: workers and threads from trajden's own defaults
        cmd += ["--workers", str(args.workers)] if args.workers else []
    else:
        cmd += ["--serial", "--torch-threads", str(args.threads), "--ovito-threads", str(args.threads)]
    w = run_watched(cmd, _child_env(args.threads), args.mem_limit_gb * 1024, capture=True)
    per_frame = _store_summary(store)
    shutil.rmtree(store, ignore_errors=True)
    res = {
        "stage": "e2e-cluster" if cluster else "e2e",
        "ok": w["rc"] == 0,
        "wall_s": w["wall_s"],
        "peak_rss_mb": w["maxrss_mb"],
        "frames": args.frames,
        "torch_threads": args.threads,
        "ovito_threads": str(args.threads),
        "command": " ".join(["trajden", *cmd[cmd.index("process") :]]),
        "others_cores": w["others_cores"],
    }
    m = re.search(r"time\s+([\d.]+) s \(([\d.]+) frames/s", w["output"])
    notes = [f"{args.frames} frames; whole command {args.frames / w['wall_s']:.3g} frames/s incl. start-up"]
    if m:
        res["trajden_s"] = float(m.group(1))
        res["trajden_frames_per_s"] = args.frames / max(res["trajden_s"], 1e-9)  # it prints only 2 decimals
        notes.append(f"trajden's own timing {res['trajden_s']:.1f} s = {res['trajden_frames_per_s']:.3g} frames/s")
    st = re.search(r"^status\s+(.*)$", w["output"], re.M)
    if st:
        notes.append("frame status: " + st.group(1).strip())
    if per_frame:
        res.update(per_frame)
        notes.append(
            "iterations "
            + ",".join(map(str, per_frame["e2e_iterations"]))
            + ", scale "
            + ",".join(f"{v:.3f}" for v in per_frame["e2e_scale"])
            + " A"
        )
    if not res["ok"]:
        res["status"] = "oom" if w["killed"] else "error"
        tail = " | ".join(w["output"].strip().splitlines()[-3:])
        res["error"] = f"exit {w['rc']}: {tail[-300:]}"
    res["notes"] = "; ".join(notes)
    return res


def _store_summary(store: Path) -> dict:
    """Iterations, scale and status of every frame of an e2e store (empty if it cannot be read)."""
    try:
        import zarr

        g = zarr.open_group(str(store), mode="r")
        return {
            "e2e_iterations": [int(v) for v in g["iterations"][:]],
            "e2e_scale": [float(v) for v in g["scale"][:]],
            "e2e_status": [int(v) for v in g["status"][:]],
        }
    except Exception:  # noqa: BLE001 - informational only
        return {}
