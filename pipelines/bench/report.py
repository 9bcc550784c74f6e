"""The benchmark's report: rows, the Markdown tables and ratios, and the CSV/Markdown/JSON outputs."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from pathlib import Path

from pipelines.bench.common import E2E_STAGES, SYSTEMS

# ------------------------------------------------------------------------------------------------
# reporting


COLUMNS = [
    "date_utc",
    "time_utc",
    "system",
    "n_atoms",
    "stage",
    "status",
    "wall_s",
    "repeats",
    "cpu_s",
    "rate",
    "rate_unit",
    "iterations",
    "atom_iterations_per_s",
    "atoms_per_s",
    "frames_per_s",
    "frames",
    "trajden_s",
    "rss_increase_mb",
    "peak_rss_mb",
    "worker_peak_rss_mb",
    "graph_s",
    "model_s",
    "edge_vec_s",
    "other_s",
    "edges_per_atom",
    "torch_threads",
    "ovito_threads",
    "training_running",
    "loadavg_1m",
    "others_cores",
    "waited_s",
    "attempts",
    "notes",
    "error",
]


def finish_row(res: dict, system: str, n: int, training: bool) -> dict:
    row = {k: None for k in COLUMNS}
    row.update({k: v for k, v in res.items() if k in row})
    t = dt.datetime.now(dt.timezone.utc)
    row.update(
        date_utc=t.strftime("%Y-%m-%d"),
        time_utc=t.strftime("%H:%M:%S"),
        system=system,
        n_atoms=n,
        training_running=training,
    )
    stage, wall = res["stage"], res.get("wall_s")
    if res.get("ok") and wall:
        row["status"] = res.get("status") or "ok"
        if stage.startswith("denoise"):
            row["atom_iterations_per_s"] = n * res["iterations"] / wall
            row["rate"], row["rate_unit"] = row["atom_iterations_per_s"], "atom-it/s"
            if "model_s" in res:  # the in-process stages split their time (not the cluster one)
                row["other_s"] = wall - res["graph_s"] - res["edge_vec_s"] - res["model_s"]
        elif stage in E2E_STAGES:
            row["frames_per_s"] = res["frames"] / wall
            row["atoms_per_s"] = n * res["frames"] / wall
            row["rate"], row["rate_unit"] = row["frames_per_s"], "frames/s"
        else:
            row["atoms_per_s"] = n / wall
            row["rate"], row["rate_unit"] = row["atoms_per_s"], "atoms/s"
    else:
        row["status"] = res.get("status") or "error"
    return row


def _fmt(v, nd=3):
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.{nd}g}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def _rate(row) -> str:
    r = row["rate"]
    if r is None:
        return "-"
    if row["rate_unit"] == "frames/s":
        return f"{r:.3g} frames/s"
    unit = row["rate_unit"]
    if r >= 1e6:
        return f"{r / 1e6:.3g} M {unit}"
    if r >= 1e3:
        return f"{r / 1e3:.3g} k {unit}"
    return f"{r:.3g} {unit}"


def table_lines(rows: list[dict]) -> list[str]:
    head = [
        "system",
        "atoms",
        "stage",
        "status",
        "wall s",
        "rate",
        "iters",
        "stage dRSS MB",
        "peak RSS MB",
        "CPU/wall",
        "others",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cpu = r["cpu_s"] / r["wall_s"] if r["cpu_s"] and r["wall_s"] else None
        notes = r["notes"] or ""
        if r["error"]:
            notes = (notes + "; " if notes else "") + r["error"]
        if r["stage"].startswith("denoise") and r["status"] != "error" and r["other_s"] is not None:
            notes = (
                f"graph {r['graph_s']:.2f} s, model {r['model_s']:.1f} s, edge vectors {r['edge_vec_s']:.2f} s, "
                f"rest {r['other_s']:.2f} s; "
            ) + notes
        cells = [
            r["system"],
            str(r["n_atoms"]),
            r["stage"],
            r["status"],
            _fmt(r["wall_s"]),
            _rate(r),
            _fmt(r["iterations"]),
            _fmt(r["rss_increase_mb"], 4),
            _fmt(r["peak_rss_mb"], 4),
            _fmt(cpu, 2),
            _fmt(r["others_cores"], 2),
            notes.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratio_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| system | atoms | denoise k=8 s | PTM s | a-CNA s | denoise(k=8) / PTM | denoise(k=8) / a-CNA |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["system"], r["n_atoms"]) for r in rows}, key=lambda k: (SYSTEMS.index(k[0]), k[1]))
    for system, n in keys:
        get = {r["stage"]: r for r in rows if r["system"] == system and r["n_atoms"] == n}
        dn, ptm, acna = (
            get.get(s, {}).get("wall_s") if get.get(s, {}).get("status") not in (None, "error", "oom") else None
            for s in ("denoise-k8", "ptm", "acna")
        )
        lines.append(
            f"| {system} | {n} | {_fmt(dn)} | {_fmt(ptm)} | {_fmt(acna)} | "
            f"{_fmt(dn / ptm if dn and ptm else None)} | {_fmt(dn / acna if dn and acna else None)} |"
        )
    return lines


def overlap_lines(rows: list[dict]) -> list[str]:
    """End-to-end time per frame against the slowest stage of one frame (issue 7's overlap criterion: <= 1.3)."""
    lines = [
        "| system | atoms | read s | denoise (conv) s | 2 x (a-CNA + PTM) s | write s | slowest | "
        "e2e serial s/frame | e2e cluster s/frame | cluster / slowest | serial / sum of stages |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["system"], r["n_atoms"]) for r in rows}, key=lambda k: (SYSTEMS.index(k[0]), k[1]))
    for system, n in keys:
        get = {r["stage"]: r for r in rows if r["system"] == system and r["n_atoms"] == n
               and r.get("status") not in (None, "error", "oom")}
        if not any(s in get for s in E2E_STAGES):
            continue
        wall = {s: get[s]["wall_s"] for s in ("read", "denoise-conv", "acna", "ptm", "write") if s in get}
        stages = {"read": wall.get("read"), "denoise": wall.get("denoise-conv"),
                  "label": 2 * (wall["acna"] + wall["ptm"]) if "acna" in wall and "ptm" in wall else None,
                  "write": wall.get("write")}
        known = {k: v for k, v in stages.items() if v}
        slowest = max(known.items(), key=lambda kv: kv[1]) if known else None
        total = sum(known.values()) if len(known) == len(stages) else None

        ser, clu = ((get[s].get("trajden_s") or get[s]["wall_s"]) / get[s]["frames"] if s in get else None
                    for s in E2E_STAGES)
        lines.append(
            f"| {system} | {n} | {_fmt(stages['read'])} | {_fmt(stages['denoise'])} | {_fmt(stages['label'])} | "
            f"{_fmt(stages['write'])} | {slowest[0] if slowest else '-'} | {_fmt(ser)} | {_fmt(clu)} | "
            f"{_fmt(clu / slowest[1] if clu and slowest else None)} | {_fmt(ser / total if ser and total else None)} |"
        )
    return lines


def write_outputs(out: Path, rows: list[dict], machine: dict, args, systems_info: dict, finished: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    md = [
        "# trajden throughput benchmark" + ("" if finished else " (incomplete: still running or interrupted)"),
        "",
        f"- command: `{' '.join(['python', *sys.argv])}`",
        f"- started {machine['started']} UTC" + (f", finished {machine.get('finished')} UTC" if finished else ""),
        f"- machine: {machine['host']}, {machine['cpu_model']}, {machine['cores']} cores "
        f"({machine['cores_usable']} usable), {machine['mem_total_gb']} GB RAM",
        f"- threads: torch {machine['threads']}, OVITO_THREAD_COUNT={machine['OVITO_THREAD_COUNT']} "
        "(vesin neighbour lists are single-threaded)",
        f"- concurrent `trajden train` processes: at start {machine['training_at_start']}, at end "
        f"{machine.get('training_at_end', '?')}; load average at start {machine['loadavg_start']}",
        f"- software: {', '.join(f'{k} {v}' for k, v in machine['versions'].items())}; git {machine['git']}; "
        f"model {machine.get('model', args.model)}",
        f"- memory limit per stage {args.mem_limit_gb:.1f} GB",
        "",
        "Inputs are SYNTHETIC: ideal fcc Cu (d_nn 2.556 A) plus Gaussian noise of 0.08 d_nn per coordinate as "
        "stand-in thermal noise (not MD). `mixture`: atoms with x >= L/2 get 0.3 d_nn noise and then 20 "
        "sweeps of soft-sphere repulsion within 1.05 d_nn (random-ish liquid, same density, broad first g(r) "
        "peak). Denoising uses the known scale 2.556 A "
        "(the pipeline's `scale='auto'` adds the g(r) estimates noted under denoise-k8). "
        f"Atom order: {machine.get('atom_order', 'lattice')} (ids in that order). Dumps are written in "
        "shuffled line order with 4 decimals and read from the page cache. Fast stages are repeated (best of up "
        "to 5) after a warm-up on a small input; denoising runs once, cold (a warm-up on a smaller frame makes "
        "TorchScript's profiling executor specialise to the wrong shapes and slows the run 4-6x).",
        "",
        "stage dRSS = the stage's RSS high-water mark above the process' RSS just before it; peak RSS = the "
        "process' high-water mark over its life (imports, model, data, warm-up included). CPU/wall = CPU seconds "
        "of the stage over its wall time (about the number of busy threads); others = cores kept busy by OTHER "
        "processes while the stage ran (from /proc/stat; above ~0.2 the timing is contended and not comparable: "
        "oversubscribed OpenMP threads slow torch down several-fold).",
        "",
        *table_lines(rows),
        "",
        "## denoise(k=8) / classification time",
        "",
        *ratio_lines(rows),
        "",
        "## overlap: end-to-end time per frame vs the slowest stage",
        "",
        "Stage times are this run's single-frame stages with all cores (denoise: default tol, known scale; the "
        "pipeline's automatic scale estimate is extra). End-to-end times are trajden's own clock (cluster start "
        "excluded) over the frames of the e2e dump.",
        "",
        *overlap_lines(rows),
        "",
    ]
    for name, info in systems_info.items():
        md.append(f"- {name}: {json.dumps(info)}")
    Path(f"{out}.md").write_text("\n".join(md) + "\n")
    Path(f"{out}.json").write_text(
        json.dumps({"machine": machine, "systems": systems_info, "rows": rows}, indent=1, default=str)
    )
