"""Study: a crystal nucleus growing in an undercooled Cu melt, through the real CLI (issue 6, study 3).

    python pipelines/study_solidification.py [--quick] [--cells 18] [--frames 12] [--out pipelines/out/solidification]

1. MD (pipelines/md/solidification.py, Mishin Cu EAM, Tm = 1327 K): an fcc seed of radius --seed-radius in a melt
   of 4 x cells^3 atoms at 0.77 Tm, NPT P = 0, a frame every --every ps; around every frame a burst of
   configurations 20 fs apart is kept for vibration averaging. Frames -> solidification.dump; the final state
   -> final.data (continued by study_alternatives.py).
2. ``trajden process solidification.dump --out store.zarr`` (LocalCluster, default model fcc-bcc-hcp, k <= 8,
   automatic scale), ``trajden fractions`` (raw and denoised, CSV) and ``trajden plot`` (a-CNA and PTM).
3. Does the denoiser grow the nucleus? Per frame, the crystalline atoms (a-CNA fcc + hcp + bcc) and the largest
   crystalline cluster (neighbours closer than 1.2 nearest-neighbour distances) of: the raw frame; the denoised
   frame (from the store); the frame after a short energy minimisation at fixed box (CG, ftol 1e-4 eV/A, at most
   --min-steps iterations); the vibration average over the burst (trajden.analysis.vibration_average).
   The liquid far from the nucleus (farther than R + 8 A from the centre of the denoised nucleus, R its
   equivalent-sphere radius) should stay "other": its fraction "other" is reported for every method.

Writes solidification.md, solidification.csv (per frame), fractions_{raw,denoised}.csv (from the CLI),
fractions_{acna,ptm}.png (from the CLI), nucleus.png, store.zarr, solidification.dump, final.data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.md import solidification as sol  # noqa: E402
from pipelines.md import study_common as sc  # noqa: E402

SEED = 630_000
FAR_MARGIN_A = 8.0
METHODS = ("raw", "denoised", "minimised", "averaged")


def trajden_cli() -> list[str]:
    """The installed ``trajden`` command (console script beside this Python), else ``python -m trajden.cli``."""
    exe = Path(sys.executable).parent / "trajden"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "trajden.cli"]


def cli(args: list[str], log: list[str], cwd: Path) -> float:
    cmd = trajden_cli() + args
    shown = "trajden " + " ".join(shlex.quote(a) for a in args)
    print(f"$ {shown}", flush=True)
    t0 = time.time()
    env = {k: v for k, v in os.environ.items() if k not in ("OVITO_THREAD_COUNT", "OMP_NUM_THREADS")}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)  # as a user would run it
    dt = time.time() - t0
    log.append(f"$ {shown}    # {dt:.0f} s\n" + res.stdout.strip())
    if res.returncode != 0:
        print(res.stdout, res.stderr, file=sys.stderr)
        raise SystemExit(f"{shown} failed with exit code {res.returncode}")
    return dt


def crystalline(lab: np.ndarray) -> np.ndarray:
    return np.isin(lab, sc.CRYSTAL_CODES)


def analyse_frame(i: int, raw: sc.Snapshot, den_pos: np.ndarray, labs: dict, burst: list, args, nn: float) -> dict:
    """Counts for the four methods on frame ``i``; ``labs``: store labels {(method, clf): labels}."""
    from trajden.analysis import unwrap, vibration_average

    t0 = time.time()
    m = sc.minimise(raw, sc.CU, style="cg", ftol=1e-4, maxiter=args.min_steps, threads=args.md_threads)
    lm = sc.labels(m)
    pos = {"raw": raw.positions, "denoised": den_pos, "minimised": m.positions}
    labs = dict(labs)
    labs[("minimised", "acna")], labs[("minimised", "ptm")] = lm["acna"], lm["ptm"]
    if burst:
        stack = np.stack([b.positions for b in burst])
        un = unwrap(stack, raw.cell)
        c = len(burst) // 2
        avg = vibration_average(un, len(burst))[c] - (un[c] - raw.positions)
        la = sc.labels(raw, avg)
        pos["averaged"] = avg
        labs[("averaged", "acna")], labs[("averaged", "ptm")] = la["acna"], la["ptm"]
    row = {"frame": i, "time_ps": round(raw.time_ps, 3), "atoms": raw.n,
           "min_iterations": m.info["min_iterations"], "min_fnorm": m.info["min_fnorm"]}
    cutoff = 1.2 * nn
    centre = None
    clusters = {}
    for meth in METHODS:
        if (meth, "acna") not in labs:
            continue
        la, lp = labs[(meth, "acna")], labs[(meth, "ptm")]
        cr = crystalline(la)
        size, members, cen = sol.largest_cluster(pos[meth], raw.cell, raw.origin, cr, cutoff)
        clusters[meth] = (size, members)
        if meth == "denoised":
            centre = cen
        row[f"acna_cryst_{meth}"] = int(cr.sum())
        row[f"ptm_cryst_{meth}"] = int(crystalline(lp).sum())
        row[f"cluster_{meth}"] = size
        for k, v in sc.composition(la, f"acna_{meth}_").items():
            row[k] = v
        if meth != "raw":
            d = sc.displacement(raw.positions, pos[meth], raw.cell)
            row[f"mean_disp_{meth}"] = float(d.mean())
            row[f"max_disp_{meth}"] = float(d.max())
    # the denoising-free reference: ten Wolde-Frenkel solid-like nucleus (q6 bond order) of the raw frame
    from trajden.analysis import solid_like

    row["cluster_twf"] = int(solid_like(raw.positions, raw.cell)[1].sum())
    # the liquid far from the (denoised) nucleus
    vol_atom = float(np.prod(np.diag(raw.cell))) / raw.n
    size_den = clusters["denoised"][0]
    radius = (3 * size_den * vol_atom / (4 * np.pi)) ** (1 / 3)
    row["nucleus_radius_A"] = radius
    if centre is not None:
        far = sol.distance_from(raw.positions, raw.cell, centre) > radius + FAR_MARGIN_A
        row["far_atoms"] = int(far.sum())
        for meth in METHODS:
            if (meth, "acna") in labs and far.any():
                row[f"far_other_{meth}"] = float(np.mean(labs[(meth, "acna")][far] == 0))
                row[f"far_other_ptm_{meth}"] = float(np.mean(labs[(meth, "ptm")][far] == 0))
        # atoms of the minimised / averaged nucleus that the denoised one lacks, and vice versa
        dm = clusters["denoised"][1]
        for meth in ("minimised", "averaged"):
            if meth in clusters:
                mm = clusters[meth][1]
                row[f"cluster_{meth}_not_denoised"] = int((mm & ~dm).sum())
                row[f"cluster_denoised_not_{meth}"] = int((dm & ~mm).sum())
    row["analysis_s"] = round(time.time() - t0, 1)
    return row


def plot_nucleus(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["time_ps"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    style = {"raw": ("0.4", "--"), "denoised": ("tab:blue", "-"), "minimised": ("tab:red", "-."),
             "averaged": ("tab:green", ":")}
    for meth, (c, ls) in style.items():
        if f"cluster_{meth}" not in rows[0]:
            continue
        axes[0].plot(t, [r[f"acna_cryst_{meth}"] for r in rows], ls=ls, color=c, marker="o", ms=3, label=meth)
        axes[1].plot(t, [r[f"cluster_{meth}"] for r in rows], ls=ls, color=c, marker="o", ms=3, label=meth)
    axes[0].set_ylabel("crystalline atoms (a-CNA fcc+hcp+bcc)")
    if "cluster_twf" in rows[0]:
        axes[1].plot(t, [r["cluster_twf"] for r in rows], ls="-", color="k", lw=0.8, label="TWF solid-like (raw)")
        axes[1].legend(fontsize=8)
    axes[1].set_ylabel("largest crystalline cluster (atoms)")
    for ax in axes:
        ax.set_xlabel("time (ps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


FRAME_COLUMNS = [
    ("frame", "fr", "d"), ("time_ps", "t (ps)", ".1f"),
    ("acna_cryst_raw", "cryst. raw", "d"), ("acna_cryst_denoised", "den.", "d"),
    ("acna_cryst_minimised", "min.", "d"), ("acna_cryst_averaged", "avg.", "d"),
    ("cluster_raw", "nucleus raw", "d"), ("cluster_denoised", "den.", "d"), ("cluster_minimised", "min.", "d"),
    ("cluster_averaged", "avg.", "d"), ("cluster_twf", "TWF raw", "d"), ("ptm_cryst_raw", "PTM cryst. raw", "d"),
    ("ptm_cryst_denoised", "den.", "d"),
    ("nucleus_radius_A", "R den. (A)", ".1f"), ("far_atoms", "far atoms", "d"),
    ("far_other_raw", "far other raw", ".3f"), ("far_other_denoised", "den.", ".3f"),
    ("far_other_minimised", "min.", ".3f"), ("far_other_averaged", "avg.", ".3f"),
]
COMP_COLUMNS = [("frame", "fr", "d"), ("time_ps", "t (ps)", ".1f")] + [
    (f"acna_{m}_{s}", f"{m[:3]}. {s}", ".3f") for m in ("raw", "denoised", "minimised", "averaged")
    for s in ("fcc", "hcp", "bcc", "ico")
]
DISP_COLUMNS = [("frame", "fr", "d")] + [
    (f"{k}_disp_{m}", f"{k} |dr| {m[:3]}. (A)", ".3f") for m in ("denoised", "minimised", "averaged")
    for k in ("mean", "max")
] + [("cluster_minimised_not_denoised", "min. nucleus not in den.", "d"),
     ("cluster_denoised_not_minimised", "den. not in min.", "d"),
     ("cluster_averaged_not_denoised", "avg. not in den.", "d"),
     ("cluster_denoised_not_averaged", "den. not in avg.", "d"), ("min_iterations", "min. its", "d")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (2048 atoms, 2 frames)")
    ap.add_argument("--cells", type=int, help="fcc cells per axis (atoms = 4 cells^3; default 18: 23,328 atoms; "
                    "quick 8)")
    ap.add_argument("--seed-radius", type=float, help="initial nucleus radius, A (default 15, quick 8)")
    ap.add_argument("--frames", type=int, help="frames (default 12, quick 2)")
    ap.add_argument("--every", type=float, help="ps between frames (default 2, quick 1)")
    ap.add_argument("--burst-half", type=int, help="vibration average over 2 h + 1 configurations 20 fs apart "
                    "(default h = 10: 0.4 ps; quick 2)")
    ap.add_argument("--min-steps", type=int, default=500, help="CG iterations of the short minimisation")
    ap.add_argument("--threads", type=int, default=None, help="OVITO threads in this process (default: cores)")
    ap.add_argument("--md-threads", type=int, default=1, help="LAMMPS OpenMP threads (default 1: with another "
                    "busy process on the machine, OpenMP threads slow LAMMPS down several-fold)")
    ap.add_argument("--out", type=Path, default=sc.OUT_ROOT / "solidification")
    args = ap.parse_args(argv)
    q = args.quick
    args.threads = args.threads or (1 if q else sc.default_workers())
    sc.set_threads(args.threads)
    cells = args.cells or (8 if q else 18)
    r_seed = args.seed_radius or (8.0 if q else 15.0)
    frames = args.frames or (2 if q else 12)
    every = args.every or (1.0 if q else 2.0)
    half = args.burst_half if args.burst_half is not None else (2 if q else 10)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()

    # 1. MD
    print(f"MD: {4 * cells ** 3} atoms, {frames} frames ...", flush=True)
    run = sol.run(cells, r_seed, frames=frames, every_ps=every, half=half, threads=args.md_threads, seed=SEED,
                  melt_ps=1.0 if q else 1.5, cool_ps=0.5 if q else 1.5, hold_ps=0.5 if q else 1.0,
                  data_file=out / "final.data")
    dump = sc.write_dump(out / "solidification.dump", run.frames)
    print(f"MD done in {run.info['md_seconds']} s", flush=True)

    # 2. the real CLI
    log: list[str] = []
    store = out / "store.zarr"
    t_process = cli(["process", dump.name, "--out", store.name, "--overwrite", "--quiet"], log, out)
    cli(["fractions", store.name, "--csv", "fractions_denoised.csv"], log, out)
    cli(["fractions", store.name, "--raw", "--csv", "fractions_raw.csv"], log, out)
    cli(["plot", store.name, "--out", "fractions_ptm.png", "--method", "ptm"], log, out)
    cli(["plot", store.name, "--out", "fractions_acna.png", "--method", "acna"], log, out)

    # 3. nucleus size by method
    import xarray as xr

    ds = xr.open_zarr(store, consolidated=False)
    rows = []
    for i, raw in enumerate(run.frames):
        labs = {(meth, clf): np.asarray(ds[f"structure_{clf}{'_raw' if meth == 'raw' else ''}"][i].values)
                for meth in ("raw", "denoised") for clf in ("acna", "ptm")}
        den = np.asarray(ds["positions"][i].values, dtype=np.float64)
        nn = float(ds["scale"][i].values)
        row = analyse_frame(i, raw, den, labs, run.bursts[i], args, nn)
        row["iterations"] = int(ds["iterations"][i].values)
        row["scale_A"] = nn
        rows.append(row)
        print(sc.text_table([row], FRAME_COLUMNS[:12]).splitlines()[-1], flush=True)
    elapsed = time.time() - t_all
    sc.write_csv(out / "solidification.csv", rows)
    title = (f"Cu nucleus in undercooled melt, {run.info['atoms']} atoms, {run.info['T_K']:.0f} K "
             f"({run.info['T_over_Tm']} Tm): crystalline atoms by method")
    plot_nucleus(rows, out / "nucleus.png", title)

    # fractions over time from the CLI's CSV files
    import csv

    def read(name):
        with open(out / name) as fh:
            return list(csv.DictReader(fh))

    fr_raw, fr_den = read("fractions_raw.csv"), read("fractions_denoised.csv")
    frac_rows = []
    for a, b in zip(fr_raw, fr_den):
        r = {"frame": int(a["frame"]), "time_ps": float(a["time_ps"])}
        for clf in ("acna", "ptm"):
            for s in ("other", "fcc", "hcp", "bcc", "ico"):
                k = f"{clf}_{s}"
                if k in a:
                    r[f"{k}_raw"], r[f"{k}_den"] = float(a[k]), float(b[k])
        frac_rows.append(r)
    frac_cols = [("frame", "fr", "d"), ("time_ps", "t (ps)", ".1f")] + [
        (f"{clf}_{s}_{w}", f"{clf} {s} {w}", ".3f") for clf in ("acna", "ptm") for s in ("other", "fcc", "hcp")
        for w in ("raw", "den")]

    ratios = {m: [r["acna_cryst_denoised"] / max(r[f"acna_cryst_{m}"], 1) for r in rows]
              for m in ("raw", "minimised", "averaged") if f"acna_cryst_{m}" in rows[0]}
    cratios = {m: [r["cluster_denoised"] / max(r[f"cluster_{m}"], 1) for r in rows]
               for m in ("raw", "minimised", "averaged", "twf") if f"cluster_{m}" in rows[0]}
    summary = {
        "atoms": run.info["atoms"], "frames": frames, "md": run.info, "process_seconds": round(t_process, 1),
        "total_seconds": round(elapsed, 1),
        "crystalline_ratio_denoised_over": {m: [round(float(np.min(v)), 3), round(float(np.max(v)), 3)]
                                            for m, v in ratios.items()},
        "nucleus_ratio_denoised_over": {m: [round(float(np.min(v)), 3), round(float(np.max(v)), 3)]
                                        for m, v in cratios.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    head = (f"{sc.model_line()}; k <= 8, default tol, automatic scale. {sc.environment_line()}, "
            f"{elapsed:.0f} s in all ({'--quick' if q else 'default size'}); `trajden process` {t_process:.0f} s "
            f"for {frames} frames x {run.info['atoms']} atoms (LocalCluster default).")
    ratio_lines = [f"* denoised / {m} crystalline atoms (a-CNA): {min(v):.3f} - {max(v):.3f} over frames; "
                   f"largest cluster: {min(cratios[m]):.3f} - {max(cratios[m]):.3f}" for m, v in ratios.items()]
    ratio_lines.append(f"* denoised nucleus / ten Wolde-Frenkel solid-like nucleus of the raw frame (q6 bonds > 0.7, "
                       f">= 7 solid bonds; no denoising): {min(cratios['twf']):.3f} - {max(cratios['twf']):.3f}")
    md = ["# Nucleus growing in an undercooled Cu melt (study 3)", "", head, "",
          f"MD: {run.info['protocol']}. Burst for the vibration average: {run.info['burst']}.", "",
          "Commands (run in this directory):", "", "```", *log, "```", "",
          "## Phase fractions over time (from `trajden fractions`), raw vs denoised", "",
          sc.md_table(frac_rows, frac_cols), "",
          "![PTM fractions](fractions_ptm.png) ![a-CNA fractions](fractions_acna.png)", "",
          "## Nucleus size: raw, denoised, short minimisation, vibration average", "",
          "Crystalline = a-CNA fcc + hcp + bcc; nucleus = largest crystalline cluster (neighbours within 1.2 nn). "
          f"'far' = atoms farther than R + {FAR_MARGIN_A:.0f} A from the centre of the denoised nucleus (R: its "
          f"equivalent-sphere radius); 'far other' = their fraction labelled other (a-CNA). Minimisation: CG at "
          f"fixed box, ftol 1e-4 eV/A, <= {args.min_steps} iterations.", "",
          *ratio_lines, "",
          sc.md_table(rows, FRAME_COLUMNS), "",
          "![nucleus size](nucleus.png)", "",
          "a-CNA composition by method:", "", sc.md_table(rows, COMP_COLUMNS), "",
          "Displacements from the raw frame and nucleus differences (atoms):", "", sc.md_table(rows, DISP_COLUMNS), ""]
    (out / "solidification.md").write_text("\n".join(md) + "\n")
    print()
    print(sc.text_table(frac_rows, frac_cols[:8]))
    print()
    print(sc.text_table(rows, FRAME_COLUMNS))
    print()
    print("\n".join(ratio_lines))
    print(f"wrote {out}/solidification.md, solidification.csv, nucleus.png, fractions_*.csv/png ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
