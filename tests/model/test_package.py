"""Model files: self-describing, safe to load, checksummed; shipped models are listed with their sha256."""

import pickle
import zipfile

import pytest
import torch
from e3nn.util.jit import script

from trajden.model.network import ScoreNet
from trajden.model.package import ModelFileError, export_model, load_model, sha256_of, shipped_models

META = dict(name="t", cutoff=1.5, nn_distance=1.0, species=["X"], structures=["fcc"], sigma_max=0.13,
            trajden_version="0", n_layers=1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.pt"
    export_model(script(ScoreNet(hidden="4x0e+2x1o", n_layers=1)), META, path)
    return path


def test_roundtrip(model_file):
    m = load_model(model_file)
    assert m.metadata["structures"] == ["fcc"] and m.cutoff == 1.5 and m.num_types == 1
    assert m.sha256 == sha256_of(model_file)


def test_checksum_mismatch(model_file):
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(model_file, expected_sha256="0" * 64)


def test_not_a_model(tmp_path):
    p = tmp_path / "x.pt"
    p.write_text("hello")
    with pytest.raises(ModelFileError, match="not a trajden model"):
        load_model(p)


def test_pickle_is_refused(tmp_path):
    """A plain torch.save pickle (which could run arbitrary code on load) is not accepted."""
    p = tmp_path / "pickled.pt"
    torch.save({"weights": torch.zeros(3)}, p)
    with pytest.raises(ModelFileError):
        load_model(p)
    q = tmp_path / "raw.pt"
    q.write_bytes(pickle.dumps(object()))
    with pytest.raises(ModelFileError):
        load_model(q)


def test_torchscript_without_metadata(tmp_path):
    p = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(p))
    assert zipfile.is_zipfile(p)
    with pytest.raises(ModelFileError, match="no trajden_metadata"):
        load_model(p)


def test_missing_file():
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model("/nonexistent/model.pt")


def test_shipped_models_load_and_match_registry():
    reg = shipped_models()
    assert set(reg) >= {"fcc-bcc-hcp", "dc3"}
    for name, entry in reg.items():
        m = load_model(name)  # verifies the recorded sha256
        assert m.name == name and m.sha256 == entry["sha256"]
        # every shipped model knows fcc/bcc/hcp, except one made for named elements (silica: its polymorphs)
        expected = set(m.metadata["training_config"]["structures"]) if m.named_species else {"fcc", "bcc", "hcp"}
        assert set(m.metadata["structures"]) >= expected and expected
