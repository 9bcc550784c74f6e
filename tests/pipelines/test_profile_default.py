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
