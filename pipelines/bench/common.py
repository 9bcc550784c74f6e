"""Shared constants of the throughput benchmark (systems, stages, sizes) and its log line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

D_NN = 2.556  # Cu nearest-neighbour distance, angstrom
SIGMA_HOT = 0.08  # crystal noise per coordinate, in d_nn
SIGMA_LIQ = 0.3  # liquid-half noise per coordinate, in d_nn
LIQ_R0, LIQ_ALPHA, LIQ_SWEEPS = 1.05, 0.2, 20  # liquid soft-sphere relaxation (see _soft_relax)
SYSTEMS = ("hot-fcc", "mixture")
BASELINE_BLOCK_EDGES = 262144  # the evaluator's block size before the fused fast path
STAGES = ("read", "read-mda", "denoise-k8", "denoise-conv", "denoise-k8-blocks", "denoise-k8-blocks-cluster", "acna",
          "ptm", "write", "e2e", "e2e-cluster")
E2E_STAGES = ("e2e", "e2e-cluster")
DEFAULT_SIZES = (30000, 250000, 1000000)
FAST_STAGES = ("read", "read-mda", "acna", "ptm", "write")  # repeated (min taken) while short
REPEAT_BUDGET_S = 3.0
CONTENDED_CORES = 0.25  # a stage during which other processes kept more cores busy counts as contended
MAX_REPEATS = 5
ROOT = Path(__file__).resolve().parents[2]
#: the benchmark's command line (children run it with --child SPEC)
SCRIPT = ROOT / "pipelines" / "benchmark_throughput.py"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")


def log(msg: str) -> None:
    print(f"[{now()}] {msg}", flush=True)
