"""Training: loss decreases, an interrupted run resumes to the same weights, the export is self-describing."""

import json

import pytest
import torch

from trajden.model.package import load_model
from trajden.train import TrainConfig, train


def _cfg(steps):
    return TrainConfig(
        name="tiny", structures=["fcc", "bcc"], hidden="4x0e+2x1o", n_layers=1, atoms_per_cell=54, steps=steps,
        val_every=4, checkpoint_every=2, lr=5e-3, val_sigmas=[0.1],
    )


def test_resume_gives_identical_model(tmp_path):
    assert train(_cfg(8), tmp_path / "full.pt", log=lambda *_: None)["done"]
    part = train(_cfg(8), tmp_path / "part.pt", log=lambda *_: None, max_steps_this_run=3)
    assert not part["done"] and (tmp_path / "part.pt.ckpt").exists()
    resumed = train(_cfg(8), tmp_path / "part.pt", log=lambda *_: None)
    assert resumed["done"]
    a = load_model(tmp_path / "full.pt").module.state_dict()
    b = load_model(tmp_path / "part.pt").module.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_export_metadata(tmp_path):
    train(_cfg(4), tmp_path / "m.pt", log=lambda *_: None)
    m = load_model(tmp_path / "m.pt")
    md = m.metadata
    assert md["name"] == "tiny" and md["structures"] == ["fcc", "bcc"]
    assert md["sigma_max"] == pytest.approx(0.13) and md["nn_distance"] == 1.0
    assert md["training_config"]["steps"] == 4
    assert json.loads((tmp_path / "m.history.json").read_text())[-1]["step"] == 4


def test_checkpoint_of_other_config_is_refused(tmp_path):
    train(_cfg(8), tmp_path / "m.pt", log=lambda *_: None, max_steps_this_run=2)
    other = _cfg(8)
    other.lr = 1e-3
    with pytest.raises(ValueError, match="another configuration"):
        train(other, tmp_path / "m.pt", log=lambda *_: None)


def test_unknown_yaml_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nsigmamax: 0.1\n")
    with pytest.raises(ValueError, match="unknown training keys"):
        TrainConfig.from_yaml(p)
