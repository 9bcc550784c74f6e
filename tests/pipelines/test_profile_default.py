"""pipelines/profile_default.py --quick: the profile of the default path runs end to end on tiny inputs and
writes its report from what it measured (one case, to stay short; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_profile_writes_its_report(tmp_path):
    out = tmp_path / "prof"
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "profile_default.py"), "--quick", "--cases",
                        "hot-fcc-20", "--out", str(out), "--threads", "1", "--states", "fresh"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads((out / "profile.json").read_text())
    (res,) = data["results"]
    assert res["case"] == "hot-fcc-20 (fresh machine)" and res["frames"] == 3 and res["atoms"] == 500
    assert res["evaluator"] == "eager"  # an empty ahead-of-time cache and a tiny run: nothing compiled
    prof = res["profile"]
    assert prof["execution"] == "serial" and prof["frames"] == 3  # a small input runs in its own process
    stages = prof["stages_s"]
    assert {"start-up", "read", "scale", "graph", "model", "classify", "write"} <= set(stages)
    assert all(v >= 0 for v in stages.values()) and stages["model"] > 0
    # the spans cover the tasks: what is left outside them is small next to the tasks' own time
    assert stages["other"] <= 0.2 * prof["tasks_s"]
    assert res["ovito"]["frames"] == 3 and res["ptm_fcc_denoised"] > 0.99
    doc = (out / "performance.md").read_text()
    assert "| hot-fcc-20 (fresh machine) | 3 x 500 |" in doc and "![stages](profile.png)" in doc
    assert (out / "profile.png").stat().st_size > 10_000


def test_modifier_only_adds_the_ovito_modifier_times_to_an_earlier_report(tmp_path):
    """--modifier-only times the OVITO modifier on the demo (a fresh process) and rewrites the report from the
    earlier measurements plus that one."""
    out = tmp_path / "prof"
    out.mkdir()
    results = [{"case": "demo (layers compiled)", "frames": 25, "atoms": 5324, "trajden": {"rc": 0, "wall_s": 50.0},
                "ovito": {"rc": 0, "wall_s": 5.0}, "busy_cores_before": 0.0, "command": "trajden process ..."}]
    machine = {"cpu": "x", "usable_cores": 2, "torch": "t", "python": "p", "gpu": None, "host": "h"}
    (out / "profile.json").write_text(json.dumps({"machine": machine, "results": results, "generated": "then"}))
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "profile_default.py"), "--modifier-only",
                        "--out", str(out), "--doc", str(out / "performance.md")],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    mod = json.loads((out / "profile.json").read_text())["machine"]["modifier"]
    assert mod["atoms"] == 5324 and len(mod["modifier_wall_s"]) == len(mod["frames"]) == 9
    assert all(t > 0 for t in mod["modifier_wall_s"] + mod["denoise_wall_s"])
    doc = (out / "performance.md").read_text()
    assert "## OVITO modifier" in doc and f"| {mod['median_modifier_s']:.3f} |" in doc
    assert "| `trajden process` on the demo, whole command / frames" in doc and "layers compiled | 2.000 |" in doc
