"""Study: labelling accuracy vs temperature, raw vs denoised (DC3-style; issue 6, study 1).

    python pipelines/study_temperature.py [--quick] [--workers 2] [--out pipelines/out/temperature]

Perfect periodic crystals are heated (NPT, P = 0) from 0.2 Tm to 1.2 Tm (superheated: no free surface to
nucleate melting) and liquids are run at 1.25 - 1.6 Tm; a few snapshots per temperature are labelled with
a-CNA and PTM (OVITO) before and after denoising (model fcc-bcc-hcp, automatic scale, k <= 8, default tol).

* fcc Cu and hcp Cu: Mishin et al. (2001) EAM, Tm = 1327 K (hcp is metastable for this potential);
* bcc Fe: Mendelev et al. (2003) EAM ("Fe_mm.eam.fs" shipped with LAMMPS), bcc up to melting, Tm = 1772 K
  (bcc Cu is only metastable at 60 GPa in a cubic box with the Mishin potential, see tests/data/md);
* liquid Cu and liquid Fe, melted at 2 Tm first.

Accuracy (as in trajden.validation): the fraction of atoms labelled with the structure the crystal was prepared
in ("other" counts as wrong); for a liquid, the fraction labelled "other". Each snapshot is also quenched (CG
minimisation at fixed box): a crystal whose quench is not >= 90 % the prepared structure has melted or
transformed on the way and its temperature is flagged (and left out of the plot's lines).

Writes temperature_frames.csv (every snapshot), temperature.csv and temperature.md (means per temperature),
temperature.png (accuracy vs T/Tm: raw dashed, denoised solid).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OVITO_THREAD_COUNT", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.md import study_common as sc  # noqa: E402

#: name -> (potential, lattice, 0 K lattice constant, cells (default), cells (--quick), target code)
SYSTEMS = {
    "fcc Cu": (sc.CU, "fcc", 3.615, (7, 7, 7), (5, 5, 5), sc.FCC),
    "hcp Cu": (sc.CU, "hcp", 3.615 / np.sqrt(2.0), (10, 6, 6), (7, 4, 4), sc.HCP),
    "bcc Fe": (sc.FE, "bcc", 2.8553, (9, 9, 9), (6, 6, 6), sc.BCC),
    "liquid Cu": (sc.CU, "fcc", 3.615, (7, 7, 7), (5, 5, 5), 0),
    "liquid Fe": (sc.FE, "bcc", 2.8553, (9, 9, 9), (6, 6, 6), 0),
}
CRYSTAL_T = (0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2)
LIQUID_T = (1.25, 1.4, 1.6)
QUICK_CRYSTAL_T = (0.6, 1.1)
QUICK_LIQUID_T = (1.25,)
#: a crystal's quenched snapshot must be at least this fraction of the prepared structure (a-CNA)
SURVIVED = 0.9
SEED = 610_000


def run_case(task: dict) -> list[dict]:
    """MD at one temperature, then per snapshot: quench, labels raw / denoised. Returns one row per snapshot."""
    name, frac = task["system"], task["T_over_Tm"]
    pot, lattice, a, cells, qcells, target = SYSTEMS[name]
    cells = qcells if task["quick"] else cells
    liquid = target == 0
    T = round(frac * pot.Tm, 1)
    dt = 0.001
    t0 = time.time()
    lmp = sc.lammps(1)
    sc.setup_lattice(lmp, pot, lattice, a, cells)
    seed = task["seed"]
    if liquid:
        Tmelt = 2.0 * pot.Tm
        lmp.commands_string(
            f"""timestep {dt}
velocity all create {Tmelt} {seed} mom yes rot yes dist gaussian
fix md all npt temp {Tmelt} {Tmelt} 0.1 iso 0 0 1.0
run {round(task["melt_ps"] / dt)}
unfix md
fix md all npt temp {T} {T} 0.1 iso 0 0 1.0
"""
        )
    else:
        lmp.commands_string(
            f"""timestep {dt}
velocity all create {2 * T} {seed} mom yes rot yes dist gaussian
fix md all npt temp {T} {T} 0.1 aniso 0 0 1.0
"""
        )
    lmp.commands_string(f"run {round(task['equil_ps'] / dt)}")
    snaps, thermo = [], []
    every = round(task["every_ps"] / dt)
    for _ in range(task["frames"]):
        lmp.commands_string(f"run {every}")
        step = int(lmp.get_thermo("step"))
        snaps.append(sc.snapshot(lmp, step=step, time_ps=step * dt))
        thermo.append(sc.thermo(lmp))
    lmp.close()
    md_s = time.time() - t0
    rows = []
    for i, (s, th) in enumerate(zip(snaps, thermo)):
        q = sc.minimise(s, pot, ftol=1e-4, maxiter=2000)
        lq = sc.labels(q)["acna"]
        raw = sc.labels(s)
        d = sc.denoise_snapshot(s, task["model"])
        den = sc.labels(d)
        disp = sc.displacement(s, d)
        row = {
            "system": name, "element": pot.element, "target": sc.CODE_NAMES[target], "T_over_Tm": frac, "T_K": T,
            "frame": i, "time_ps": round(s.time_ps, 3), "atoms": s.n, "T_inst_K": round(th["T_K"], 1),
            "P_inst_GPa": round(th["P_GPa"], 3),
            "quench_acna_target": sc.fraction(lq, target),
            "acna_raw": sc.fraction(raw["acna"], target), "acna_denoised": sc.fraction(den["acna"], target),
            "ptm_raw": sc.fraction(raw["ptm"], target), "ptm_denoised": sc.fraction(den["ptm"], target),
            "iterations": d.info["iterations"], "scale_A": round(d.info["scale"], 4), "status": d.info["status"],
            "mean_displacement_A": float(disp.mean()), "max_displacement_A": float(disp.max()),
            "md_s": round(md_s / len(snaps), 1), "denoise_s": d.info["denoise_seconds"],
        }
        row.update(sc.composition(den["acna"], "acna_den_"))
        row.update(sc.composition(den["ptm"], "ptm_den_"))
        rows.append(row)
    return rows


def summarise(frames: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["system"], r["T_over_Tm"]) for r in frames}, key=lambda k: (list(SYSTEMS).index(k[0]), k[1]))
    for name, frac in keys:
        rs = [r for r in frames if r["system"] == name and r["T_over_Tm"] == frac]
        m = {k: float(np.mean([r[k] for r in rs])) for k in (
            "quench_acna_target", "acna_raw", "acna_denoised", "ptm_raw", "ptm_denoised", "iterations",
            "mean_displacement_A", "T_inst_K", "P_inst_GPa", "scale_A")}
        liquid = rs[0]["target"] == "other"
        ok = liquid or min(r["quench_acna_target"] for r in rs) >= SURVIVED
        row = {"system": name, "T_over_Tm": frac, "T_K": rs[0]["T_K"], "frames": len(rs), "atoms": rs[0]["atoms"],
               "target": rs[0]["target"], **m,
               "note": "" if ok else "melted/transformed (quench < 90 % target)",
               "statuses": ",".join(sorted({r["status"] for r in rs}))}
        if liquid:  # what the denoiser makes of a liquid
            for c in ("fcc", "hcp", "bcc", "ico"):
                row[f"acna_den_{c}"] = float(np.mean([r[f"acna_den_{c}"] for r in rs]))
                row[f"ptm_den_{c}"] = float(np.mean([r[f"ptm_den_{c}"] for r in rs]))
        out.append(row)
    return out


def plot(summary: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fcc Cu": "tab:blue", "hcp Cu": "tab:orange", "bcc Fe": "tab:green",
              "liquid Cu": "tab:purple", "liquid Fe": "tab:brown"}
    markers = {"fcc Cu": "o", "hcp Cu": "^", "bcc Fe": "D", "liquid Cu": "s", "liquid Fe": "v"}
    widths = {"fcc Cu": 5.0, "hcp Cu": 3.5, "bcc Fe": 2.0, "liquid Cu": 5.0, "liquid Fe": 2.0}  # coinciding lines
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, clf, label in zip(axes, ("acna", "ptm"), ("a-CNA", "PTM")):
        for name in SYSTEMS:
            rs = [r for r in summary if r["system"] == name]
            if not rs:
                continue
            good = [r for r in rs if not r["note"]]
            bad = [r for r in rs if r["note"]]
            x = [r["T_over_Tm"] for r in good]
            c = colors[name]
            marker = markers[name]
            ax.plot(x, [r[f"{clf}_raw"] for r in good], ls="--", marker=marker, mfc="white", color=c, lw=1.3)
            ax.plot(x, [r[f"{clf}_denoised"] for r in good], ls="-", marker=marker, color=c, lw=widths[name],
                    ms=3 + widths[name], label=name, zorder=3)
            if bad:
                ax.plot([r["T_over_Tm"] for r in bad], [r[f"{clf}_denoised"] for r in bad], "x", color=c, ms=8)
        ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("T / Tm")
        ax.set_title(f"{label}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (crystal: prepared structure; liquid: 'other')")
    h, lab = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    h += [Line2D([], [], color="k", ls="-", lw=2), Line2D([], [], color="k", ls="--", mfc="white", marker="o"),
          Line2D([], [], color="k", ls="", marker="x")]
    lab += ["denoised", "raw", "denoised, crystal melted in the run"]
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(h, lab, loc="lower center", fontsize=8, ncol=4, frameon=False)
    fig.savefig(path, dpi=130)
    plt.close(fig)


COLUMNS = [
    ("system", "system", None), ("T_over_Tm", "T/Tm", ".2f"), ("T_K", "T (K)", ".0f"), ("atoms", "atoms", "d"),
    ("frames", "fr", "d"), ("target", "target", None), ("quench_acna_target", "quench", ".3f"),
    ("acna_raw", "a-CNA raw", ".3f"), ("acna_denoised", "a-CNA den.", ".3f"), ("ptm_raw", "PTM raw", ".3f"),
    ("ptm_denoised", "PTM den.", ".3f"), ("iterations", "k", ".1f"), ("note", "note", None),
]
LIQUID_COLUMNS = [
    ("system", "system", None), ("T_over_Tm", "T/Tm", ".2f"), ("acna_denoised", "a-CNA den. other", ".3f"),
    ("acna_den_fcc", "fcc", ".3f"), ("acna_den_hcp", "hcp", ".3f"), ("acna_den_bcc", "bcc", ".3f"),
    ("acna_den_ico", "ico", ".3f"), ("ptm_denoised", "PTM den. other", ".3f"), ("ptm_den_fcc", "fcc", ".3f"),
    ("ptm_den_hcp", "hcp", ".3f"), ("ptm_den_bcc", "bcc", ".3f"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (~500 atoms, 2 temperatures, 2 frames)")
    ap.add_argument("--model", default="fcc-bcc-hcp")
    ap.add_argument("--frames", type=int, help="snapshots per temperature (default 3; quick 2)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: cores; quick: 1)")
    ap.add_argument("--out", type=Path, default=sc.OUT_ROOT / "temperature")
    ap.add_argument("--plot-only", action="store_true", help="redraw temperature.png from temperature.csv")
    args = ap.parse_args(argv)
    if args.plot_only:
        import csv

        with open(args.out / "temperature.csv") as fh:
            rows = [{k: (float(v) if v and k.startswith(("acna", "ptm", "T_over")) else v) for k, v in r.items()}
                    for r in csv.DictReader(fh)]
        plot(rows, args.out / "temperature.png", f"trajden {args.model}: accuracy vs temperature "
             "(raw dashed, denoised solid)")
        return 0
    q = args.quick
    workers = args.workers or (1 if q else sc.default_workers())
    frames = args.frames or (2 if q else 3)
    tasks = []
    for name in SYSTEMS:
        temps = (QUICK_LIQUID_T if q else LIQUID_T) if name.startswith("liquid") else (
            QUICK_CRYSTAL_T if q else CRYSTAL_T)
        if q and name == "liquid Fe":
            continue
        for frac in temps:
            tasks.append({"system": name, "T_over_Tm": frac, "quick": q, "model": args.model, "frames": frames,
                          "equil_ps": 1.0 if q else 2.0, "every_ps": 0.5, "melt_ps": 1.0 if q else 2.0,
                          "seed": SEED + 97 * len(tasks)})
    # hottest (slowest to denoise) first keeps the workers busy to the end
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i]["T_over_Tm"])
    t0 = time.time()
    print(f"{len(tasks)} MD runs on {workers} worker(s)", flush=True)
    results = sc.pmap(run_case, [tasks[i] for i in order], workers)
    frames_rows = [r for rs in results for r in rs]
    summary = summarise(frames_rows)
    elapsed = time.time() - t0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    sc.write_csv(out / "temperature_frames.csv", frames_rows)
    sc.write_csv(out / "temperature.csv", summary)
    liquids = [r for r in summary if r["target"] == "other"]
    head = (f"{sc.model_line(args.model)}; k <= 8, default tol, automatic scale. {sc.environment_line()}, "
            f"{workers} worker(s), {elapsed:.0f} s{' (--quick)' if q else ''}.")
    title = f"trajden {args.model}: accuracy vs temperature (raw dashed, denoised solid)"
    plot(summary, out / "temperature.png", title)
    md = [
        "# Accuracy vs temperature (study 1)", "", head, "",
        "Potentials: Cu " + sc.CU.citation + "; Fe " + sc.FE.citation + ".", "",
        "NPT (P = 0, Nose-Hoover, dt 1 fs), perfect periodic crystals started at the 0 K lattice constant with "
        f"velocities at 2T; {'1' if q else '2'} ps equilibration then {frames} snapshots 0.5 ps apart. "
        "Liquids melted at 2 Tm first. Accuracy: fraction of atoms labelled "
        "with the prepared structure (liquid: 'other'); 'quench' is the a-CNA fraction of the prepared "
        "structure after CG minimisation of the same snapshot at fixed box (the crystal is still there).", "",
        sc.md_table(summary, COLUMNS), "",
        "What the denoiser makes of the liquids (fractions of atoms after denoising):", "",
        sc.md_table(liquids, LIQUID_COLUMNS), "",
        "![accuracy vs temperature](temperature.png)", "",
    ]
    (out / "temperature.md").write_text("\n".join(md) + "\n")
    print(sc.text_table(summary, COLUMNS))
    print()
    print(sc.text_table(liquids, LIQUID_COLUMNS))
    print(f"wrote {out}/temperature.md, temperature.csv, temperature_frames.csv, temperature.png ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
