"""Study: defects survive denoising at high temperature while the bulk becomes perfect (issue 6, study 2).

    python pipelines/study_defects.py [--quick] [--T-over-Tm X] [--workers 2] [--out pipelines/out/defects]

Systems (periodic, built in pipelines/md/structures.py):

* vacancy in fcc Cu and a <100> split interstitial in fcc Cu (the two halves of a Frenkel pair, in separate
  boxes so each defect's atoms are counted on their own), Mishin EAM, Tm = 1327 K;
* a 1/2[111] prismatic vacancy loop in bcc Fe (Mendelev 2003 EAM, Tm = 1772 K): a disc (r = 10 A) of three
  (222) planes removed and the gap closed; after relaxation OVITO's DXA finds a 1/2<111> loop;
* a periodic Cu bicrystal with two symmetric Sigma5 (310)[001] tilt grain boundaries.

Each is relaxed at 0 K (CG, fixed box) -> reference defect atoms R0 (a-CNA not the host structure), then
heated (velocities at 2T, NPT P = 0 at 0.8 Tm for Cu, 0.7 Tm for the Fe loop, dt 1 fs) for 1 ps and snapshots are
taken. Every snapshot is denoised (fcc-bcc-hcp, automatic scale, k <= 8) and also quenched (CG at fixed box):
the quench's defect atoms Q are the reference for the same instant (defects migrate at these temperatures).

Reported per snapshot: defect-atom counts (R0, quench, raw, denoised); recall = |denoised and Q| / |Q|
(defect atoms still non-crystalline after denoising), precision = |denoised and Q| / |denoised|,
agreement = fraction of all atoms labelled alike (trajden.validation.defect_agreement); recall vs R0; and
the bulk: fraction of the host structure among atoms that are not defect atoms in the quench, raw vs denoised;
for the loop, the dislocation line length found by DXA in the raw, denoised and quenched snapshots.
Writes defects_frames.csv, defects.csv and defects.md.
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

from pipelines.md import structures  # noqa: E402
from pipelines.md import study_common as sc  # noqa: E402
from trajden.validation import defect_agreement  # noqa: E402

SEED = 620_000
SYSTEMS = ("Fe 1/2<111> loop", "Cu Sigma5 GB", "Cu vacancy", "Cu interstitial")
#: T / Tm per system: the small loop shrinks within a few ps at 0.8 Tm (DXA of quenched snapshots)
DEFAULT_T_OVER_TM = {"Fe 1/2<111> loop": 0.7, "Cu Sigma5 GB": 0.8, "Cu vacancy": 0.8, "Cu interstitial": 0.8}


def build(name: str, quick: bool):
    """(snapshot, potential, host code, description)."""
    if name == "Cu vacancy":
        s, info = structures.vacancy(sc.CU.a0, 5 if quick else 8)
        return s, sc.CU, sc.FCC, info
    if name == "Cu interstitial":
        s, info = structures.split_interstitial(sc.CU.a0, 5 if quick else 8)
        return s, sc.CU, sc.FCC, info
    if name == "Fe 1/2<111> loop":
        s, info = structures.prismatic_loop_bcc(sc.FE.a0, 8 if quick else 14, 5.0 if quick else 10.0)
        return s, sc.FE, sc.BCC, info
    if name == "Cu Sigma5 GB":
        s, info = structures.sigma5_bicrystal(sc.CU.a0, 2 if quick else 3, 1 if quick else 2, 3 if quick else 6)
        return s, sc.CU, sc.FCC, info
    raise ValueError(name)


def run_system(task: dict) -> dict:
    name = task["system"]
    s0, pot, host, info = build(name, task["quick"])
    t0 = time.time()
    relaxed = sc.minimise(s0, pot, ftol=1e-6, maxiter=5000)
    ref = sc.labels(relaxed)
    r0 = ref["acna"] != host
    dxa = "bcc" if name == "Fe 1/2<111> loop" else None
    if dxa:
        info["dxa_relaxed"] = sc.dislocations(relaxed, lattice=dxa)
    frac = task["T_over_Tm"] or DEFAULT_T_OVER_TM[name]
    T = round(frac * pot.Tm, 1)
    dt = 0.001
    lmp = sc.lammps(1)
    sc.setup_atoms(lmp, pot, relaxed)
    lmp.commands_string(
        f"""timestep {dt}
velocity all create {2 * T} {task['seed']} mom yes rot yes dist gaussian
fix md all npt temp {T} {T} 0.1 aniso 0 0 0.5
run {round(task['heat_ps'] / dt)}
"""
    )
    snaps, thermo = [], []
    for _ in range(task["frames"]):
        lmp.commands_string(f"run {round(task['every_ps'] / dt)}")
        step = int(lmp.get_thermo("step"))
        snaps.append(sc.snapshot(lmp, step=step, time_ps=step * dt))
        thermo.append(sc.thermo(lmp))
    lmp.close()
    md_s = time.time() - t0
    rows = []
    for i, (s, th) in enumerate(zip(snaps, thermo)):
        q = sc.minimise(s, pot, ftol=1e-6, maxiter=5000)
        lq = sc.labels(q)
        raw = sc.labels(s)
        d = sc.denoise_snapshot(s, task["model"])
        den = sc.labels(d)
        qd = lq["acna"] != host
        rd, dd = raw["acna"] != host, den["acna"] != host
        agree = defect_agreement(den["acna"], lq["acna"], crystal_code=host)
        bulk = ~qd
        qd_p, dd_p = lq["ptm"] != host, den["ptm"] != host
        disp = sc.displacement(s, d)
        if dxa:
            dl = {k: sc.dislocations(s, p, dxa)["length_A"] for k, p in
                  (("raw", None), ("denoised", d.positions), ("quench", q.positions))}
        rows.append({
            "system": name, "frame": i, "time_ps": round(s.time_ps, 3), "atoms": s.n, "T_K": T,
            "T_inst_K": round(th["T_K"], 1), "P_inst_GPa": round(th["P_GPa"], 3),
            "defect_R0": int(r0.sum()), "defect_quench": int(qd.sum()), "defect_raw": int(rd.sum()),
            "defect_denoised": int(dd.sum()), "both_den_quench": agree["both"],
            "recall_quench": float((dd & qd).sum() / max(qd.sum(), 1)),
            "precision_quench": float((dd & qd).sum() / max(dd.sum(), 1)),
            "agreement_quench": agree["agreement"],
            "recall_R0": float((dd & r0).sum() / max(r0.sum(), 1)),
            "quench_recall_R0": float((qd & r0).sum() / max(r0.sum(), 1)),
            "bulk_raw": sc.fraction(raw["acna"][bulk], host), "bulk_denoised": sc.fraction(den["acna"][bulk], host),
            "ptm_defect_quench": int(qd_p.sum()), "ptm_defect_denoised": int(dd_p.sum()),
            "ptm_recall_quench": float((dd_p & qd_p).sum() / max(qd_p.sum(), 1)),
            "ptm_bulk_raw": sc.fraction(raw["ptm"][~qd_p], host),
            "ptm_bulk_denoised": sc.fraction(den["ptm"][~qd_p], host),
            "iterations": d.info["iterations"], "status": d.info["status"],
            "mean_displacement_A": float(disp.mean()), "max_displacement_A": float(disp.max()),
            "denoise_s": d.info["denoise_seconds"],
            **({f"dxa_length_{k}_A": v for k, v in dl.items()} if dxa else {}),
        })
    return {"system": name, "element": pot.element, "host": sc.CODE_NAMES[host], "T_K": T, "T_over_Tm": frac,
            "info": info,
            "relaxed_defect_atoms_acna": int(r0.sum()), "relaxed_defect_atoms_ptm": int((ref["ptm"] != host).sum()),
            "md_s": round(md_s, 1), "rows": rows}


FRAME_COLUMNS = [
    ("system", "system", None), ("frame", "fr", "d"), ("T_inst_K", "T (K)", ".0f"), ("atoms", "atoms", "d"),
    ("defect_R0", "R0", "d"), ("defect_quench", "quench", "d"), ("defect_raw", "raw", "d"),
    ("defect_denoised", "denoised", "d"), ("both_den_quench", "den.&quench", "d"),
    ("recall_quench", "recall", ".3f"), ("precision_quench", "precision", ".3f"),
    ("agreement_quench", "agreement", ".4f"), ("recall_R0", "recall R0", ".3f"),
    ("bulk_raw", "bulk raw", ".3f"), ("bulk_denoised", "bulk den.", ".4f"),
]
DXA_COLUMNS = [("frame", "fr", "d"), ("dxa_length_raw_A", "DXA line length raw (A)", ".1f"),
               ("dxa_length_denoised_A", "denoised", ".1f"), ("dxa_length_quench_A", "quench", ".1f")]
SUMMARY_COLUMNS = [
    ("system", "system", None), ("host", "host", None), ("T_over_Tm", "T/Tm", ".2f"), ("T_K", "T (K)", ".0f"),
    ("atoms", "atoms", "d"), ("defect_R0", "defect atoms 0 K", "d"), ("defect_quench", "quench", ".1f"),
    ("defect_raw", "raw", ".1f"),
    ("defect_denoised", "denoised", ".1f"), ("recall_quench", "recall", ".3f"),
    ("precision_quench", "precision", ".3f"), ("agreement_quench", "agreement", ".4f"),
    ("recall_R0", "recall R0", ".3f"), ("bulk_raw", "bulk a-CNA raw", ".3f"),
    ("bulk_denoised", "bulk a-CNA den.", ".4f"), ("ptm_recall_quench", "PTM recall", ".3f"),
    ("ptm_bulk_raw", "bulk PTM raw", ".3f"), ("ptm_bulk_denoised", "bulk PTM den.", ".4f"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (~500-1000 atoms, 2 frames)")
    ap.add_argument("--model", default="fcc-bcc-hcp")
    ap.add_argument("--T-over-Tm", type=float, default=None, dest="T_over_Tm",
                    help="T / Tm for every system (default: Fe loop 0.7, Cu systems 0.8)")
    ap.add_argument("--frames", type=int, help="snapshots per system (default 3; quick 2)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: cores; quick: 1)")
    ap.add_argument("--only", nargs="+", choices=SYSTEMS)
    ap.add_argument("--out", type=Path, default=sc.OUT_ROOT / "defects")
    args = ap.parse_args(argv)
    q = args.quick
    workers = args.workers or (1 if q else sc.default_workers())
    frames = args.frames or (2 if q else 3)
    tasks = [{"system": n, "quick": q, "model": args.model, "T_over_Tm": args.T_over_Tm, "frames": frames,
              "heat_ps": 1.0, "every_ps": 0.5, "seed": SEED + 101 * k}
             for k, n in enumerate(SYSTEMS) if not args.only or n in args.only]
    t0 = time.time()
    results = sc.pmap(run_system, tasks, workers)
    elapsed = time.time() - t0
    frames_rows = [r for res in results for r in res["rows"]]
    summary = []
    for res in results:
        rs = res["rows"]
        m = {k: float(np.mean([r[k] for r in rs])) for k in (
            "defect_quench", "defect_raw", "defect_denoised", "recall_quench", "precision_quench", "agreement_quench",
            "recall_R0", "bulk_raw", "bulk_denoised", "ptm_recall_quench", "ptm_bulk_raw", "ptm_bulk_denoised",
            "T_inst_K", "mean_displacement_A")}
        if "dxa_length_raw_A" in rs[0]:
            m.update({k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k.startswith("dxa_length_")})
        summary.append({"system": res["system"], "host": res["host"], "T_over_Tm": res["T_over_Tm"],
                        "T_K": res["T_K"], "atoms": rs[0]["atoms"],
                        "frames": len(rs), "defect_R0": res["relaxed_defect_atoms_acna"], **m,
                        "ptm_defect_R0": res["relaxed_defect_atoms_ptm"], "md_s": res["md_s"],
                        "description": res["info"]["defect"]})
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    sc.write_csv(out / "defects_frames.csv", frames_rows)
    sc.write_csv(out / "defects.csv", summary)
    head = (f"{sc.model_line(args.model)}; k <= 8, default tol, automatic scale. {sc.environment_line()}, "
            f"{workers} worker(s), {elapsed:.0f} s{' (--quick)' if q else ''}.")
    md = ["# Defects at high temperature (study 2)", "", head, "",
          f"T/Tm as listed (Cu: {sc.CU.citation}; Fe: {sc.FE.citation}). "
          f"Relaxed at 0 K, velocities at 2T, NPT P = 0 (aniso) 1 ps, then {frames} snapshots 0.5 ps apart. "
          "Defect atoms: a-CNA not the host structure. 'quench': the same "
          "snapshot CG-minimised at fixed box (reference for that instant); recall/precision/agreement of the "
          "denoised defect atoms vs the quench; 'recall R0': fraction of the 0 K reference's defect atoms "
          "still defect atoms after denoising (defects migrate, so < 1 is expected for mobile defects); bulk: "
          "fraction of the host structure among atoms that are not defect atoms in the quench.", "",
          "Means over snapshots:", "", sc.md_table(summary, SUMMARY_COLUMNS), "",
          "Systems:", ""]
    for res in results:
        desc = "; ".join(f"{k} {v}" for k, v in res["info"].items() if k != "defect")
        md.append(f"* **{res['system']}**: {res['info']['defect']}; {desc}; relaxed (0 K) defect atoms a-CNA "
                  f"{res['relaxed_defect_atoms_acna']}, PTM {res['relaxed_defect_atoms_ptm']} (MD {res['md_s']} s)")
    loop = [r for r in frames_rows if "dxa_length_raw_A" in r]
    if loop:
        rel = next(res["info"]["dxa_relaxed"] for res in results if "dxa_relaxed" in res["info"])
        md += ["", f"Dislocation loop, OVITO DXA (bcc): relaxed at 0 K: total line length {rel['length_A']:.1f} A, "
               f"{rel['segments']} segment(s), Burgers vector(s) {', '.join(rel['burgers'])}. Per snapshot:", "",
               sc.md_table(loop, DXA_COLUMNS)]
    md += ["", "Every snapshot:", "", sc.md_table(frames_rows, FRAME_COLUMNS), ""]
    (out / "defects.md").write_text("\n".join(md) + "\n")
    print(sc.text_table(summary, SUMMARY_COLUMNS))
    print()
    print(sc.text_table(frames_rows, FRAME_COLUMNS))
    if loop:
        print()
        print(f"loop, DXA at 0 K: {rel['length_A']:.1f} A {rel['burgers']}")
        print(sc.text_table(loop, DXA_COLUMNS))
    print(f"wrote {out}/defects.md, defects.csv, defects_frames.csv ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
