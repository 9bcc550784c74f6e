"""Study: trajden denoising vs vibration averaging vs steepest-descent minimisation, same frames (issue 6, study 4).

    python pipelines/study_alternatives.py [--quick] [--out pipelines/out/alternatives]

Two frames:

* the hot fcc fixture (tests/data/md/cu_fcc_hot.dump, Cu at 1.1 Tm, 4 frames 2 ps apart): frame --fixture-frame;
* a frame of the solidification run: the final state of study_solidification.py (its final.data) is continued
  (NPT, same T) for a burst of --burst frames 20 fs apart; the burst's centre frame is compared. Without that
  file a smaller solidification run is made here first (said so in the report).

Methods, all from the same raw frame:

* ``trajden process --frames F`` (denoising, fcc-bcc-hcp, k <= 8, automatic scale);
* ``trajden process --method average --window N --frames F`` (vibration averaging over N frames, centred);
* steepest descent (LAMMPS ``min_style sd``, fixed box) from the raw frame: a short one (--sd-short iterations)
  and a long one (ftol 1e-6 eV/A or --sd-long iterations).

Reported: phase fractions (a-CNA, PTM), crystalline atoms and the largest crystalline cluster (the nucleus),
atoms of each method's nucleus outside the denoised one (growth) and the labels the denoised nucleus' atoms get
(transformation), the liquid far from the nucleus, and mean / max displacement from the raw frame. The CLI runs
with --serial (one frame each). Writes alternatives.md, alternatives.csv.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.md import solidification as sol  # noqa: E402
from pipelines.md import study_common as sc  # noqa: E402
from pipelines.study_solidification import cli  # noqa: E402

SEED = 640_000
FAR_MARGIN_A = 8.0


def store_frame(path: Path, i: int = 0) -> tuple[np.ndarray, dict]:
    import xarray as xr

    ds = xr.open_zarr(path, consolidated=False)
    pos = np.asarray(ds["positions"][i].values, dtype=np.float64)
    labs = {c: np.asarray(ds[f"structure_{c}"][i].values) for c in ("acna", "ptm")}
    if "scale" in ds:
        labs["scale"] = float(ds["scale"][i].values)
    return pos, labs


def compare(name: str, raw: sc.Snapshot, dump: Path, frame: int, windows, args, log, out: Path,
            host: int | None, nucleus: bool) -> list[dict]:
    """All methods on one frame of ``dump``; one row per method."""
    work = out / name.replace(" ", "_")
    work.mkdir(parents=True, exist_ok=True)
    results = {}  # method -> (positions, labels, info)
    results["raw"] = (raw.positions, sc.labels(raw), {})
    t0 = time.time()
    st = work / "denoised.zarr"
    cli(["process", str(dump), "--frames", str(frame), "--out", str(st), "--serial", "--overwrite", "--quiet"],
        log, out)
    pos, labs = store_frame(st)
    results["trajden denoise"] = (pos, labs, {"seconds": round(time.time() - t0, 1)})
    for w in windows:
        t0 = time.time()
        st = work / f"average{w}.zarr"
        cli(["process", str(dump), "--frames", str(frame), "--method", "average", "--window", str(w), "--out", str(st),
             "--serial", "--overwrite", "--quiet"], log, out)
        pos, labs = store_frame(st)
        results[f"average {w} x {args.frame_dt[name]:g} ps"] = (pos, labs, {"seconds": round(time.time() - t0, 1)})
    for label, kw in ((f"SD {args.sd_short} steps", {"ftol": 0.0, "maxiter": args.sd_short}),
                      (f"SD <= {args.sd_long} steps", {"ftol": 1e-6, "maxiter": args.sd_long})):
        t0 = time.time()
        m = sc.minimise(raw, sc.CU, style="sd", threads=args.md_threads, **kw)
        results[label] = (m.positions, sc.labels(m), {"seconds": round(time.time() - t0, 1),
                                                      "iterations": m.info["min_iterations"],
                                                      "fnorm": m.info["min_fnorm"], "pe": m.info["min_pe"]})
        print(f"  {label}: {m.info['min_iterations']} iterations, fnorm {m.info['min_fnorm']:.2e}", flush=True)
    # nucleus of the denoised frame defines the reference region
    den_pos, den_labs, _ = results["trajden denoise"]
    nn = den_labs.get("scale", 2.55)  # the nearest-neighbour distance the denoiser found
    cr = np.isin(den_labs["acna"], sc.CRYSTAL_CODES)
    size_den, den_nuc, centre = sol.largest_cluster(den_pos, raw.cell, raw.origin, cr, 1.2 * nn)
    far = None
    if nucleus and centre is not None:
        radius = (3 * size_den * np.prod(np.diag(raw.cell)) / raw.n / (4 * np.pi)) ** (1 / 3)
        far = sol.distance_from(raw.positions, raw.cell, centre) > radius + FAR_MARGIN_A
    rows = []
    for meth, (pos, labs, info) in results.items():
        la, lp = labs["acna"], labs["ptm"]
        crm = np.isin(la, sc.CRYSTAL_CODES)
        d = sc.displacement(raw.positions, pos, raw.cell)
        row = {"frame_of": name, "method": meth, "atoms": raw.n, **sc.composition(la, "acna_"),
               **sc.composition(lp, "ptm_"), "acna_crystalline": int(crm.sum()),
               "ptm_crystalline": int(np.isin(lp, sc.CRYSTAL_CODES).sum()),
               "mean_disp_A": float(d.mean()), "max_disp_A": float(d.max()),
               "rms_disp_A": float(np.sqrt((d * d).mean())), **info}
        if host is not None:
            row["acna_accuracy"] = sc.fraction(la, host)
            row["ptm_accuracy"] = sc.fraction(lp, host)
        if nucleus:
            size, members, _ = sol.largest_cluster(pos, raw.cell, raw.origin, crm, 1.2 * nn)
            row["nucleus"] = size
            row["nucleus_not_in_denoised"] = int((members & ~den_nuc).sum())
            row["denoised_nucleus_lost"] = int((den_nuc & ~members).sum())
            # what the atoms of the denoised nucleus are called (transformation)
            for c in ("fcc", "hcp", "bcc", "ico", "other"):
                row[f"in_den_nucleus_{c}"] = float(np.mean(la[den_nuc] == sc.NAME_CODES[c])) if den_nuc.any() else 0
            if far is not None and far.any():
                row["far_atoms"] = int(far.sum())
                row["far_other"] = float(np.mean(la[far] == 0))
                row["far_crystalline"] = int(crm[far].sum())
        rows.append(row)
    return rows


COMMON = [("method", "method", None), ("acna_other", "a-CNA other", ".3f"), ("acna_fcc", "fcc", ".3f"),
          ("acna_hcp", "hcp", ".3f"), ("acna_bcc", "bcc", ".3f"), ("acna_ico", "ico", ".3f"),
          ("ptm_other", "PTM other", ".3f"), ("ptm_fcc", "fcc", ".3f"), ("ptm_hcp", "hcp", ".3f"),
          ("mean_disp_A", "mean |dr| (A)", ".3f"), ("max_disp_A", "max |dr| (A)", ".3f"),
          ("iterations", "its", "d"), ("seconds", "s", ".1f")]
NUCLEUS = [("method", "method", None), ("acna_crystalline", "cryst. atoms", "d"), ("nucleus", "nucleus", "d"),
           ("nucleus_not_in_denoised", "nucleus atoms not in den. nucleus", "d"),
           ("denoised_nucleus_lost", "den. nucleus atoms not in nucleus", "d"),
           ("in_den_nucleus_fcc", "den. nucleus as fcc", ".3f"), ("in_den_nucleus_hcp", "hcp", ".3f"),
           ("in_den_nucleus_other", "other", ".3f"), ("far_other", "far liquid other", ".4f"),
           ("far_crystalline", "far cryst. atoms", "d")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--fixture", type=Path, default=ROOT / "tests/data/md/cu_fcc_hot.dump")
    ap.add_argument("--fixture-frame", type=int, default=1)
    ap.add_argument("--source", type=Path, default=sc.OUT_ROOT / "solidification" / "final.data",
                    help="LAMMPS data file of the solidification run to continue")
    ap.add_argument("--burst", type=int, help="frames 20 fs apart around the compared frame (default 41, quick 11)")
    ap.add_argument("--sd-short", type=int, default=100)
    ap.add_argument("--sd-long", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=None, help="OVITO threads (default: cores)")
    ap.add_argument("--md-threads", type=int, default=1, help="LAMMPS OpenMP threads")
    ap.add_argument("--out", type=Path, default=sc.OUT_ROOT / "alternatives")
    args = ap.parse_args(argv)
    q = args.quick
    args.threads = args.threads or (1 if q else sc.default_workers())
    sc.set_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    log: list[str] = []
    notes = []
    args.frame_dt = {}

    # hot fcc fixture
    fixture = args.fixture.resolve()
    snaps = sc.read_snapshots(fixture)
    fdt = snaps[1].time_ps - snaps[0].time_ps if len(snaps) > 1 else 0.0
    args.frame_dt["hot fcc"] = fdt
    print(f"hot fcc fixture: {fixture.name} frame {args.fixture_frame}", flush=True)
    rows = compare("hot fcc", snaps[args.fixture_frame], fixture, args.fixture_frame, (3, len(snaps)), args, log,
                   out, sc.FCC, nucleus=False)

    # solidification frame
    burst_n = args.burst or (11 if q else 41)
    src = args.source.resolve()
    T = round(0.77 * sc.CU.Tm, 1)
    summ = src.parent / "summary.json"
    if summ.exists():
        T = json.loads(summ.read_text())["md"]["T_K"]
    if q or not src.exists():
        cells, r_seed = (7, 7.0) if q else (12, 12.0)
        why = "--quick" if q else f"{src} not found"
        print(f"making a solidification run here ({why}): {4 * cells ** 3} atoms", flush=True)
        run = sol.run(cells, r_seed, frames=4 if q else 8, every_ps=1.0 if q else 2.0, threads=args.md_threads,
                      seed=SEED, melt_ps=1.0 if q else 2.0, cool_ps=0.5 if q else 2.0, hold_ps=0.5 if q else 1.0,
                      data_file=out / "solidification_source.data")
        src = out / "solidification_source.data"
        notes.append(f"Solidification frame: {why}, so a run was made here: {run.info['protocol']}.")
    else:
        notes.append(f"Solidification frame: continued from `{src.relative_to(ROOT)}` (final state of "
                     "study_solidification.py).")
    burst = sol.continue_burst(src, T, burst_n, spacing_fs=20.0, threads=args.md_threads)
    dump = sc.write_dump(out / "solidification_burst.dump", burst)
    c = burst_n // 2
    args.frame_dt["solidification"] = 0.02
    windows = sorted({w for w in (5, 11, 21, burst_n) if w <= burst_n})
    print(f"solidification burst: {burst_n} frames, {burst[0].n} atoms, frame {c}", flush=True)
    rows += compare("solidification", burst[c], dump, c, windows, args, log, out, None, nucleus=True)
    elapsed = time.time() - t_all
    sc.write_csv(out / "alternatives.csv", rows)
    hot = [r for r in rows if r["frame_of"] == "hot fcc"]
    nuc = [r for r in rows if r["frame_of"] == "solidification"]
    head = (f"{sc.model_line()}; k <= 8, default tol, automatic scale. {sc.environment_line()}, {elapsed:.0f} s"
            f"{' (--quick)' if q else ''}.")
    hot_cols = COMMON[:1] + [("acna_accuracy", "a-CNA fcc", ".4f"), ("ptm_accuracy", "PTM fcc", ".4f")] + COMMON[1:]
    md = ["# Denoising vs vibration averaging vs energy minimisation (study 4)", "", head, "", *notes, "",
          f"## Hot fcc Cu (fixture `{fixture.name}`, frame {args.fixture_frame}, {snaps[0].n} atoms, 1.1 Tm; "
          f"fixture frames are {fdt:g} ps apart, so the averages span {fdt:g} ps per frame)", "",
          sc.md_table(hot, hot_cols), "",
          f"## Nucleus in undercooled melt ({burst[0].n} atoms, {T:.0f} K, centre of a {burst_n}-frame burst 20 fs "
          "apart)", "", sc.md_table(nuc, COMMON), "",
          "Nucleus (largest a-CNA crystalline cluster, neighbours within 1.2 nn) and the liquid far from it "
          f"(> R + {FAR_MARGIN_A:.0f} A from the denoised nucleus' centre):", "", sc.md_table(nuc, NUCLEUS), "",
          "Commands:", "", "```", *log, "```", ""]
    (out / "alternatives.md").write_text("\n".join(md) + "\n")
    print(sc.text_table(hot, hot_cols))
    print()
    print(sc.text_table(nuc, COMMON))
    print()
    print(sc.text_table(nuc, NUCLEUS))
    print(f"wrote {out}/alternatives.md, alternatives.csv ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
