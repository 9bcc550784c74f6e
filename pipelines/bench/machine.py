"""The machine under the benchmark: memory high-water marks, busy cores, waiting for quiet, machine info."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import time

from pipelines.bench.common import ROOT, log

# ------------------------------------------------------------------------------------------------
# /proc helpers


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    """Reset this process' RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        info = {ln.split(":")[0]: int(ln.split()[1]) for ln in fh}
    return info.get("MemAvailable", info["MemTotal"]) / 1024.0


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def busy_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by all processes over the next ``seconds``."""
    b0, t0 = _busy_jiffies()
    time.sleep(seconds)
    b1, t1 = _busy_jiffies()
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


def wait_idle(max_s: float, threshold: float = 0.3) -> tuple[float, float]:
    """Wait (at most ``max_s``) until other processes keep fewer than ``threshold`` cores busy.

    Returns (seconds waited, busy cores in the last check).
    """
    t0 = time.perf_counter()
    busy = busy_cores(1.0)
    said = False
    while busy > threshold and time.perf_counter() - t0 < max_s:
        if not said:
            log(f"waiting up to {max_s:.0f} s for other processes to go idle ({busy:.1f} cores busy)")
            said = True
        busy = busy_cores(5.0)
    return time.perf_counter() - t0, busy


def training_processes() -> list[int]:
    """Pids of running ``trajden train`` processes (the benchmark shares the machine with them)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"trajden") for a in argv) and b"train" in argv:
            out.append(int(d))
    return out


def machine_info(threads: int) -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as fh:
        total_gb = int(fh.readline().split()[1]) / 1024**2
    versions = {}
    for mod in ("torch", "e3nn", "ovito", "MDAnalysis", "vesin", "numpy", "zarr", "trajden"):
        try:
            m = __import__(mod)
            versions[mod] = str(getattr(m, "__version__", None) or ".".join(map(str, getattr(m, "version", ()))))
        except Exception:  # noqa: BLE001 - informational only
            versions[mod] = "?"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        commit = commit + ("+dirty" if dirty else "")
    except OSError:
        commit = "?"
    digest = hashlib.sha256()
    for f in sorted((ROOT / "trajden").rglob("*.py")):
        digest.update(f.read_bytes())
    return {
        "trajden_src_sha256": digest.hexdigest()[:12],
        "host": socket.gethostname(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "mem_total_gb": round(total_gb, 1),
        "python": platform.python_version(),
        "versions": versions,
        "git": commit,
        "threads": threads,
        "OVITO_THREAD_COUNT": str(threads),
        "loadavg_start": os.getloadavg(),
    }
